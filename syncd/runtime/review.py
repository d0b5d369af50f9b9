"""The access review (`syncd review`): the ledger's record of who has what, with the live rules of the roles it binds,
each role read once per review. Reads only: the ledger, and each cluster's ClusterRoles and Roles."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import structlog

from syncd.adapters.ledger import ReadModel
from syncd.core.review import AccessReview, Role, RoleRules, review
from syncd.errors import ClusterRejected, ClusterUnavailable
from syncd.ports import Cluster

log = structlog.get_logger("syncd.review")


def read_roles(clusters: Mapping[str, Cluster], wanted: Mapping[str, set[Role]]) -> dict[str, dict[Role, RoleRules]]:
    """What each cluster says of each role wanted there. A role it refuses to show is unknown; once a cluster stops
    answering, its remaining roles are unknown too (it is not asked again)."""
    said: dict[str, dict[Role, RoleRules]] = {}
    for name, roles in sorted(wanted.items()):
        found = said.setdefault(name, {})
        cluster = clusters.get(name)
        down = None if cluster is not None else f"cluster {name} is not in the configuration"
        for role in sorted(roles, key=lambda r: (r.kind, r.namespace or "", r.name)):
            if down is not None:
                found[role] = RoleRules(problem=down)
                continue
            assert cluster is not None
            try:
                found[role] = RoleRules(cluster.role_rules(role))
            except ClusterUnavailable as error:
                down = str(error)
                found[role] = RoleRules(problem=down)
            except ClusterRejected as error:
                found[role] = RoleRules(problem=str(error))
            if found[role].problem is not None:
                log.warning("read the rules of a role", cluster=name, role=f"{role.kind}/{role.name}",
                            namespace=role.namespace, error=found[role].problem)
    return said


def access_review(ledger: ReadModel, clusters: Mapping[str, Cluster], now: datetime, *,
                  idle_after: timedelta | None, cluster: str | None = None) -> list[AccessReview]:
    """Every person's access per cluster (or on `cluster`), judged against the roles' live rules."""
    people = ledger.known_people()
    wanted: dict[str, set[Role]] = {}
    for person in people.values():
        for name, access in person.access.items():
            if cluster in (None, name):
                wanted.setdefault(name, set()).update(Role.of(scope) for scope in access.scopes)
    return review(people.values(), read_roles(clusters, wanted), ledger.last_used(), now, idle_after, cluster)
