"""The policy: rules that turn a person's groups and attributes into Kubernetes access, one `Access` per cluster."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import timedelta
from functools import cached_property, lru_cache
from typing import Literal

from pydantic import Field, model_validator

from syncd.core.model import Access, Identity, RoleKind, Scope
from syncd.core.settings import Duration, Strict


class Match(Strict):
    """A rule matches when every condition given holds."""

    groups: list[str] = Field(default_factory=list, description="The person is in at least one of these groups.")
    attributes: dict[str, str | list[str]] = Field(
        default_factory=dict, description="Each attribute equals the value (or one of the values) given."
    )
    everyone: bool = Field(False, description="Match every active person (use with care).")

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if not (self.groups or self.attributes or self.everyone):
            raise ValueError("give groups, attributes, or everyone: true")
        return self

    def matches(self, identity: Identity, groups: frozenset[str], fold: Callable[[str], str]) -> bool:
        """`groups` are the person's groups as `fold` compares them."""
        if self.groups and groups.isdisjoint(fold(group) for group in self.groups):
            return False
        for name, wanted in self.attributes.items():
            allowed = [wanted] if isinstance(wanted, str) else wanted
            if identity.attributes.get(name) not in allowed:
                return False
        return True


class Grant(Strict):
    cluster: str = Field(description="A cluster name from syncd.yaml.")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces in which to bind the role.")
    cluster_wide: bool = Field(False, description="Bind cluster-wide; the cluster must allow it.")
    role: str = Field(description="Name of the ClusterRole or Role to bind.")
    role_kind: RoleKind = Field(RoleKind.CLUSTER_ROLE, description="ClusterRole (default) or Role.")
    token_ttl: Duration | None = Field(None, description="Token lifetime (default: policy defaults).")
    rotation_period: Duration | None = Field(None, description="Rotation period (default: policy defaults).")

    @model_validator(mode="after")
    def _where(self) -> Grant:
        if self.cluster_wide == bool(self.namespaces):
            raise ValueError("give either namespaces or cluster_wide: true, not both or neither")
        if self.cluster_wide and self.role_kind is RoleKind.ROLE:
            raise ValueError("a Role is namespaced; bind a ClusterRole cluster-wide")
        return self

    def scopes(self) -> list[Scope]:
        if self.cluster_wide:
            return [Scope(None, self.role_kind, self.role)]
        return [Scope(ns, self.role_kind, self.role) for ns in self.namespaces]


class Rule(Strict):
    name: str = Field(description="Shown in plans and the ledger.")
    match: Match
    grant: list[Grant] = Field(min_length=1)


class Defaults(Strict):
    token_ttl: Duration = Field(timedelta(hours=8), description="Token lifetime; at least 10m (Kubernetes minimum).")
    rotation_period: Duration = Field(timedelta(days=90), description="How often the token is replaced.")


@lru_cache(maxsize=4096)
def _casefolded(groups: frozenset[str]) -> frozenset[str]:
    # People share group sets (sources hand out one set per distinct membership): fold each set once.
    return frozenset(group.casefold() for group in groups)


class Policy(Strict):
    defaults: Defaults = Defaults()
    match_groups: Literal["case-insensitive", "case-sensitive"] = Field(
        "case-insensitive", description="How rules compare group names: `Developers` and `developers` are one group "
        "in LDAP, Active Directory and most identity providers.")
    rules: list[Rule] = Field(default_factory=list)

    @property
    def _fold(self) -> Callable[[str], str]:
        return str.casefold if self.match_groups == "case-insensitive" else str

    def groups_of(self, identity: Identity) -> frozenset[str]:
        """The person's groups as rules compare them (case-folded unless `match_groups: case-sensitive`)."""
        return _casefolded(identity.groups) if self.match_groups == "case-insensitive" else identity.groups

    @cached_property
    def matched_groups(self) -> frozenset[str]:
        """Every group some rule matches on, as rules compare them (see `groups_of`)."""
        return frozenset(self._fold(group) for rule in self.rules for group in rule.match.groups)

    @cached_property
    def matched_attributes(self) -> tuple[str, ...]:
        """Every identity attribute some rule matches on, sorted."""
        return tuple(sorted({name for rule in self.rules for name in rule.match.attributes}))

    def granted_scopes(self, cluster: str) -> frozenset[Scope]:
        """Every scope some rule grants on this cluster."""
        return frozenset(scope for rule in self.rules for grant in rule.grant if grant.cluster == cluster
                         for scope in grant.scopes())

    def access_key(self, identity: Identity) -> Hashable:
        """All that `access_for` reads of a person: people with equal keys get equal access."""
        return (identity.active, self.groups_of(identity) & self.matched_groups,
                tuple(identity.attributes.get(name) for name in self.matched_attributes))

    def access_for(self, identity: Identity) -> dict[str, Access]:
        """The union of every matching rule's grants, one entry per cluster. Inactive people get nothing."""
        if not identity.active:
            return {}
        scopes: dict[str, set[Scope]] = {}
        purposes: dict[str, set[tuple[Scope, str]]] = {}
        ttls: dict[str, list[timedelta]] = {}
        rotations: dict[str, list[timedelta]] = {}
        groups = self.groups_of(identity)
        for rule in self.rules:
            if not rule.match.matches(identity, groups, self._fold):
                continue
            for grant in rule.grant:
                scopes.setdefault(grant.cluster, set()).update(grant.scopes())
                purposes.setdefault(grant.cluster, set()).update((scope, rule.name) for scope in grant.scopes())
                ttls.setdefault(grant.cluster, []).append(grant.token_ttl or self.defaults.token_ttl)
                rotations.setdefault(grant.cluster, []).append(grant.rotation_period or self.defaults.rotation_period)
        # Where rules disagree on lifetimes, the strictest wins.
        return {
            cluster: Access(cluster, frozenset(found), min(ttls[cluster]), min(rotations[cluster]),
                            frozenset(purposes[cluster]))
            for cluster, found in scopes.items()
        }
