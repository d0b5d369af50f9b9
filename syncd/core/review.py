"""The access review: who has what, why, until when, whether they use it, and which scopes are privileged. Which RBAC
rules make a role privileged is decided here, as the API server's authorizer matches them. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from syncd.core.lifecycle import Lifecycle
from syncd.core.model import KnownPerson, RoleKind, Scope, person_key, rules_granting

ALL = "*"
CORE = ""  # the core API group (pods, secrets, nodes, serviceaccounts)
RBAC = "rbac.authorization.k8s.io"
READ = ("get", "list", "watch")
STREAM = ("create", "get")  # exec and attach: POST, or GET for a websocket
IMPERSONATED = ("users", "groups", "serviceaccounts", "uids", "userextras/*")
REASONS = ("cluster-wide", "all verbs", "all resources", "secrets read", "pods/exec", "pods/attach", "escalate",
           "bind", "impersonate", "nodes/proxy")  # why a scope is privileged, in the order shown


@dataclass(frozen=True)
class RbacRule:
    """One rule of a ClusterRole or Role, as the API server holds it."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    def allows(self, verbs: Iterable[str], groups: Iterable[str], resource: str) -> bool:
        """Whether the rule allows one of `verbs` on `resource` ("pods/exec": a subresource) in one of `groups`."""
        return (any(self._verb(verb) for verb in verbs) and (ALL in self.api_groups
                                                              or any(g in self.api_groups for g in groups))
                and self._resource(resource))

    def _verb(self, verb: str) -> bool:
        return ALL in self.verbs or verb in self.verbs

    def _resource(self, resource: str) -> bool:
        # As RBAC's ResourceMatches: "*", the exact resource, or "*/subresource".
        _, _, subresource = resource.partition("/")
        return any(given in (ALL, resource) or (subresource and given == f"*/{subresource}")
                   for given in self.resources)


def privileges(rules: Iterable[RbacRule]) -> tuple[str, ...]:
    """Why a role with these rules is privileged, each reason once, in a fixed order; () when it is not."""
    found: set[str] = set()
    for rule in rules:
        if ALL in rule.verbs:
            found.add("all verbs")
        if ALL in rule.resources or ALL in rule.non_resource_urls:
            found.add("all resources")
        if rule.allows(READ, (CORE,), "secrets"):
            found.add("secrets read")
        for subresource in ("pods/exec", "pods/attach"):
            if rule.allows(STREAM, (CORE,), subresource):
                found.add(subresource)
        for verb in ("escalate", "bind"):
            if verb in rule.verbs and any(rule.allows((verb,), (RBAC,), kind) for kind in ("roles", "clusterroles")):
                found.add(verb)
        if "impersonate" in rule.verbs and any(rule.allows(("impersonate",), (CORE, "authentication.k8s.io"), kind)
                                               for kind in IMPERSONATED):
            found.add("impersonate")
        if rule.verbs and rule.allows(rule.verbs, (CORE,), "nodes/proxy"):
            found.add("nodes/proxy")
    return tuple(reason for reason in REASONS if reason in found)


@dataclass(frozen=True)
class Role:
    """A role a scope binds: a ClusterRole by name, a Role by namespace and name."""

    kind: RoleKind
    name: str
    namespace: str | None = None

    @staticmethod
    def of(scope: Scope) -> Role:
        return Role(scope.role_kind, scope.role_name, scope.namespace if scope.role_kind is RoleKind.ROLE else None)


@dataclass(frozen=True)
class RoleRules:
    """What a cluster said of a role: its rules, or that it does not exist (`rules` None), or why it could not say
    (`problem`)."""

    rules: tuple[RbacRule, ...] | None = None
    problem: str | None = None


UNREAD = RoleRules(problem="the cluster was not read")


@dataclass(frozen=True)
class Privilege:
    """Whether a scope is privileged: True, False, or None when its role's rules could not be read (`note` says
    why, or that the role does not exist)."""

    privileged: bool | None
    why: tuple[str, ...] = ()
    note: str = ""


def judge(scope: Scope, role: RoleRules) -> Privilege:
    """A scope's privilege from its role's rules; bound cluster-wide it is privileged whatever they are."""
    wide = ("cluster-wide",) if scope.namespace is None else ()
    if role.problem is not None:
        return Privilege(True if wide else None, wide, f"rules unknown: {role.problem}")
    if role.rules is None:
        return Privilege(bool(wide), wide, f"{scope.role_kind} {scope.role_name} does not exist")
    why = wide + privileges(role.rules)
    return Privilege(bool(why), why)


@dataclass(frozen=True)
class ScopeReview:
    scope: Scope
    rules: tuple[str, ...] | None  # the policy rules granting it; None when the purpose was never recorded
    privilege: Privilege


@dataclass(frozen=True)
class AccessReview:
    """One person's access on one cluster."""

    person_id: str
    username: str
    cluster: str
    scopes: tuple[ScopeReview, ...]
    fingerprint: str | None  # the active credential's; None when none is active
    expires_at: datetime | None
    last_used: datetime | None
    idle: bool | None  # None: not judged (no idle_after given)

    @property
    def privileged(self) -> bool | None:
        """True when any scope is, None when any is unknown and none is, else False."""
        found = [s.privilege.privileged for s in self.scopes]
        return True if True in found else None if None in found else False

    @property
    def purpose(self) -> tuple[str, ...] | None:
        if any(s.rules is None for s in self.scopes):
            return None
        return tuple(sorted({rule for s in self.scopes for rule in s.rules or ()}))


def review(people: Iterable[KnownPerson], roles: Mapping[str, Mapping[Role, RoleRules]],
           last_used: Mapping[tuple[str, str], datetime], now: datetime, idle_after: timedelta | None,
           cluster: str | None = None) -> list[AccessReview]:
    """Every person's access per cluster (or on `cluster`), by username, id and cluster. `roles`: per cluster what
    it said of each role; a cluster missing there could not be read. `last_used` is by person key and cluster. Idle
    as the lifecycle judges it (None: not judged, no `idle_after`)."""
    lifecycle = Lifecycle(idle_after=idle_after)
    found = []
    for person in people:
        for name, access in sorted(person.access.items()):
            if cluster is not None and name != cluster:
                continue
            credential = access.credential
            purpose = credential.purpose if credential is not None else None
            said = roles.get(name)
            scopes = tuple(
                ScopeReview(scope, None if purpose is None else rules_granting(purpose, scope),
                            judge(scope, said.get(Role.of(scope), UNREAD) if said is not None else UNREAD))
                for scope in sorted(access.scopes))
            used = last_used.get((person_key(person.id), name))
            found.append(AccessReview(
                person.id, person.username, name, scopes, credential.fingerprint if credential else None,
                credential.expires_at if credential else None, used,
                None if idle_after is None else lifecycle.idle_since(access, used, now) is not None))
    return sorted(found, key=lambda a: (a.username, a.person_id, a.cluster))
