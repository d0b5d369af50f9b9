"""The planner: a pure function from (people, policy, ledger, cluster state, now) to a list of actions.

No I/O happens here. Every action is plain data with a message, so a dry run and a real run walk the same path.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import PurePath

from syncd.core.lifecycle import Lifecycle, Retirement
from syncd.core.model import (
    Access,
    Identity,
    Kind,
    KnownAccess,
    KnownPerson,
    ObservedAccount,
    ObservedBinding,
    ObservedCluster,
    Reason,
    RoleKind,
    Scope,
    Snapshot,
    binding_name,
    delivery_problem,
    person_key,
    service_account_name,
)
from syncd.core.policy import Policy
from syncd.core.settings import SafetySettings, SweepSettings, TokenSettings
from syncd.errors import InputError

_VERBS = {
    Kind.ISSUE: "issue credentials for",
    Kind.RESCOPE: "rescope",
    Kind.REFRESH: "refresh the token of",
    Kind.ROTATE: "rotate the token of",
    Kind.RETIRE: "retire old tokens of",
    Kind.REPAIR: "repair access of",
    Kind.REVOKE: "revoke",
    Kind.ORPHAN: "remove orphaned objects of",
}

REVOKING = frozenset({Kind.REVOKE, Kind.ORPHAN})


@dataclass(frozen=True)
class Change:
    """One object an action creates (+) or deletes (-) on its cluster."""

    op: str  # + or -
    kind: str  # ServiceAccount, RoleBinding, ClusterRoleBinding, Secret
    namespace: str | None
    name: str
    detail: str = ""  # the role a binding grants; what a Secret holds

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.op} {self.kind.lower()} {where}{self.name}" + (f" ({self.detail})" if self.detail else "")


def _binding_change(op: str, namespace: str | None, name: str, scope: Scope) -> Change:
    kind = "ClusterRoleBinding" if namespace is None else "RoleBinding"
    return Change(op, kind, namespace, name, f"{scope.role_kind}/{scope.role_name}")


@dataclass(frozen=True)
class Action:
    """One change to one person's access on one cluster."""

    kind: Kind
    reason: Reason
    cluster: str
    person_id: str
    username: str
    before: frozenset[Scope] = frozenset()
    after: frozenset[Scope] = frozenset()
    access: Access | None = None
    identity: Identity | None = None
    create_bindings: tuple[Scope, ...] = ()
    delete_bindings: tuple[ObservedBinding, ...] = ()
    token_secrets: tuple[str, ...] = ()  # observed; what a revocation deletes
    service_accounts: tuple[str, ...] = ()  # observed; what a revocation deletes
    create_service_account: bool = False  # none observed: issuing makes it
    new_token: bool = False
    previous_username: str | None = None  # set on a rename
    instance: str = ""  # syncd's namespace on the cluster
    old_kubeconfig: str | None = None  # delivered under the old layout: removed if its token is the person's
    known_fingerprints: tuple[str, ...] = ()  # the person's tokens on this cluster, as the ledger knows them

    @property
    def changes(self) -> tuple[Change, ...]:
        """Every object this action creates or deletes, in the order it does so."""
        changes = [_binding_change("-", b.namespace, b.name, b.scope) for b in self.delete_bindings]
        changes += [Change("-", "Secret", self.instance, name, "token") for name in self.token_secrets]
        changes += [Change("-", "ServiceAccount", self.instance, name) for name in self.service_accounts]
        if self.create_service_account:
            changes.append(Change("+", "ServiceAccount", self.instance, service_account_name(self.person_id)))
        changes += [_binding_change("+", scope.namespace, binding_name(self.person_id, scope, self.instance), scope)
                    for scope in self.create_bindings]
        if self.new_token:
            changes.append(Change("+", "Secret", self.instance, f"syncd-{self.key}-*", "new token"))
        return tuple(changes)

    @property
    def message(self) -> str:
        """Imperative description; a dry run prefixes it with "Would"."""
        return f"{_VERBS[self.kind]} {self.username} on {self.cluster} ({self.reason})"

    @property
    def key(self) -> str:
        """What names the person's objects and delivery folder. An orphan's id is that key already."""
        return self.person_id if self.kind is Kind.ORPHAN else person_key(self.person_id)


@dataclass(frozen=True)
class Held:
    action: Action
    why: str
    unsafe: bool = False  # held by the mass-revocation thresholds: a human must pass --allow-mass-revocation
    refused: bool = False  # the person cannot be given access safely (see `_refusals`): the run fails


@dataclass(frozen=True)
class IdleAccess:
    """An access with no use for `usage.idle_after`: suspended (a revoke, reason idle) or only reported."""

    person_id: str
    username: str
    cluster: str
    since: datetime  # its last use, or its grant when it was never used since


@dataclass(frozen=True)
class Plan:
    source: str
    actions: tuple[Action, ...] = ()
    held: tuple[Held, ...] = ()
    skipped_clusters: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    idle: tuple[IdleAccess, ...] = ()  # found idle by this plan, whatever usage.idle_action does with them

    @property
    def revocations(self) -> list[Action]:
        return [a for a in self.actions if a.kind in REVOKING]

    def __bool__(self) -> bool:
        return bool(self.actions)


ALLOW_MASS_REVOCATION = "pass --allow-mass-revocation"  # ends every reason the mass-revocation limits give


@dataclass(frozen=True)
class RevocationCounts:
    """What a targeted run counts toward the mass-revocation limits; a full run counts its own plan."""

    recent_revocations: int = 0  # holders this source revoked lately (targeted runs, not approved ones): they count
    credential_holders: int | None = None  # a targeted run knows only its people; the ledger counts the rest
    held_revocations: int = 0  # holders outside this run whose revocation those limits hold lately: they count too


@dataclass(frozen=True)
class Inputs:
    snapshot: Snapshot
    policy: Policy
    known: Mapping[str, KnownPerson]
    observed: Mapping[str, ObservedCluster | None]  # None: the cluster could not be read
    now: datetime
    safety: SafetySettings
    only: frozenset[str] | None = None  # a targeted run plans these person ids and nothing else
    sweep: SweepSettings = SweepSettings()
    missing_roles: Mapping[str, frozenset[Scope]] = field(default_factory=dict)  # per cluster, see missing_role_notes
    tokens: TokenSettings = TokenSettings()
    counts: RevocationCounts = RevocationCounts()
    idle_after: timedelta | None = None  # usage.idle_after
    suspend_idle: bool = False  # usage.idle_action: suspend (else idle accesses are only reported)
    last_use: Mapping[tuple[str, str], datetime] = field(default_factory=dict)  # (person key, cluster): last use
    suspended: Collection[tuple[str, str]] = frozenset()  # (person id, cluster): planned nothing until resumed

    @cached_property
    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.tokens, self.idle_after)


def missing_role_notes(missing_roles: Mapping[str, Iterable[Scope]]) -> tuple[str, ...]:
    """One warning per role the policy grants that does not exist on a cluster (ClusterRoles have no namespace)."""
    notes = []
    for cluster, roles in sorted(missing_roles.items()):
        for role in sorted(roles, key=str):
            where = f" in namespace {role.namespace}" if role.role_kind is RoleKind.ROLE else ""
            notes.append(f"cluster {cluster}: the policy grants {role.role_kind} {role.role_name}{where}, which does "
                         "not exist; people are still issued and get Forbidden until it is created")
    return tuple(notes)


def make_plan(inputs: Inputs, *, allow_mass_revocation: bool = False) -> Plan:
    snapshot = inputs.snapshot
    identities = snapshot.by_id()
    known = {pid: person for pid, person in inputs.known.items() if person.source == snapshot.source}
    others = {person_key(pid) for pid, person in inputs.known.items() if person.source != snapshot.source}
    reachable = {name: cluster for name, cluster in inputs.observed.items() if cluster is not None}
    skipped = tuple(sorted(name for name, cluster in inputs.observed.items() if cluster is None))

    people = set(identities) | set(known)
    if inputs.only is not None:
        people &= inputs.only

    clusters = sorted(reachable.items())
    access_by_key: dict[Hashable, dict[str, Access]] = {}  # people alike to the policy share one evaluation
    actions: list[Action] = []
    idle: list[IdleAccess] = []
    for pid in sorted(people):
        identity = identities.get(pid)
        desired: dict[str, Access] = {}
        if identity is not None:
            key = inputs.policy.access_key(identity)
            if key not in access_by_key:
                access_by_key[key] = inputs.policy.access_for(identity)
            desired = access_by_key[key]
        person = known.get(pid)
        for cluster, observed in clusters:
            known_access = person.access.get(cluster) if person else None
            wanted = desired.get(cluster)
            withheld = wanted is not None and (pid, cluster) in inputs.suspended
            if wanted is not None and not withheld and known_access is not None:
                since = inputs.lifecycle.idle_since(known_access, inputs.last_use.get((person_key(pid), cluster)),
                                                    inputs.now)
                if since is not None:
                    idle.append(IdleAccess(pid, person.username if person else pid, cluster, since))
                    withheld = inputs.suspend_idle
            actions.extend(
                _plan_person_on_cluster(
                    pid=pid,
                    identity=identity,
                    person=person,
                    desired=None if withheld else wanted,
                    known_access=known_access,
                    observed=observed.accounts.get(person_key(pid)),
                    cluster=cluster,
                    instance=observed.instance,
                    inputs=inputs,
                    idle=withheld,
                )
            )
    if inputs.only is None:
        actions.extend(_orphans(reachable, {person_key(pid) for pid in people} | others))
    actions = [_as_recorded(a, inputs.policy) for a in actions]

    actions, held = _report_only(actions, inputs.sweep)
    refusals = _refusals(snapshot, inputs.known)
    kept = []
    for action in actions:
        refusal = refusals.get(action.person_id) if action.kind is not Kind.ORPHAN else None
        if refusal is not None and (action.kind not in REVOKING or refusal[1]):
            held.append(Held(action, refusal[0], refused=True))
        else:
            kept.append(action)
    actions = kept
    if not snapshot.complete:
        held += [Held(a, "the source read was partial; nothing is revoked from partial data")
                 for a in actions if a.kind in REVOKING]
        actions = [a for a in actions if a.kind not in REVOKING]
    else:
        why = _unsafe(actions, known, snapshot, inputs.safety, inputs.counts)
        if why and not allow_mass_revocation:
            held += [Held(a, why, unsafe=True) for a in actions if a.kind in REVOKING]
            actions = [a for a in actions if a.kind not in REVOKING]
    notes = missing_role_notes({name: roles for name, roles in inputs.missing_roles.items() if name in reachable})
    return Plan(snapshot.source, tuple(actions), tuple(held), skipped, notes, tuple(idle))


SWEEPING = frozenset({Kind.REPAIR, Kind.RETIRE, Kind.ORPHAN})


def _refusals(snapshot: Snapshot, known: Mapping[str, KnownPerson]) -> dict[str, tuple[str, bool]]:
    """People this plan must not act for, before any cluster write: why, and whether their revocations are
    refused too. A username no kubeconfig can carry refuses the person's access but never their revocation; a key
    shared with another person (in the snapshot, or recorded for another source) refuses everything, since the
    objects under that key may be the other person's."""
    by_key: dict[str, list[Identity]] = {}
    for identity in snapshot.identities:
        by_key.setdefault(person_key(identity.id), []).append(identity)
    elsewhere = {person_key(pid): person for pid, person in known.items() if person.source != snapshot.source}
    refused: dict[str, tuple[str, bool]] = {}
    for key, identities in by_key.items():
        other = elsewhere.get(key)
        for identity in identities:
            sharing = [i.where for i in identities if i is not identity]
            if sharing:
                refused[identity.id] = (f"{identity.where} and {', '.join(sharing)} share the key {key}; "
                                        "give them distinct ids in the source", True)
            elif other is not None:
                recorded = "this id" if other.id == identity.id else f"id {other.id!r}, of the same key {key},"
                refused[identity.id] = (f"{identity.where}: the ledger records {recorded} for source "
                                        f"{other.source!r}; one person belongs to one source", True)
            elif (problem := delivery_problem(identity.username)) is not None:
                refused[identity.id] = (f"{identity.where}: username {identity.username[:80]!r} cannot be delivered:"
                                        f" {problem}", False)
    return refused


def make_sweep_plan(inputs: Inputs) -> Plan:
    """The orphan and drift sweep between full reconciles. `inputs.snapshot` is what the ledger last recorded of
    the source's people, not a fresh read: the sweep puts back what the ledger records (bindings deleted or edited,
    a token gone), retires token Secrets no record explains and removes labelled objects nobody in the ledger owns.
    Joiners, movers, leavers and refreshes wait for the jobs that read the source, and so does a repair whose
    scopes the policy now computes differently from the ledger's record."""
    plan = make_plan(inputs)
    actions = [a for a in plan.actions
               if a.kind in SWEEPING and (a.kind is not Kind.REPAIR or a.before == a.after)]
    held = [h for h in plan.held if h.action.kind in SWEEPING]
    if not inputs.snapshot.identities:  # a new or lost ledger: everything would look like an orphan
        held += [Held(a, "the ledger records nobody from this source; a sweep removes nothing")
                 for a in actions if a.kind is Kind.ORPHAN]
        actions = [a for a in actions if a.kind is not Kind.ORPHAN]
    return Plan(plan.source, tuple(actions), tuple(held), plan.skipped_clusters, plan.notes)


def hold_interrupted(plan: Plan, left: Collection[tuple[str, str]]) -> Plan:
    """Hold every action on a (person id, cluster) whose work an interrupted run left for a full run: a sweep
    must not remove or repair what that work explains."""
    if not left:
        return plan
    why = "an interrupted run left this person's work half done; a run that reads the source finishes it"
    keys = {(person_key(pid), cluster) for pid, cluster in left}  # an orphan's action knows the key only
    waiting = [a for a in plan.actions if (a.key, a.cluster) in keys]
    return replace(plan, actions=tuple(a for a in plan.actions if (a.key, a.cluster) not in keys),
                   held=plan.held + tuple(Held(a, why) for a in waiting))


def _plan_person_on_cluster(
    *,
    pid: str,
    identity: Identity | None,
    person: KnownPerson | None,
    desired: Access | None,
    known_access: KnownAccess | None,
    observed: ObservedAccount | None,
    cluster: str,
    instance: str,
    inputs: Inputs,
    idle: bool = False,
) -> list[Action]:
    """`idle`: the policy entitles the person here, but the access is idle or suspended: only a revocation of what
    is left of it (reason idle), never access given back."""
    username = identity.username if identity else (person.username if person else pid)
    before = known_access.scopes if known_access else frozenset()
    delivered = dict(old_kubeconfig=_old_layout(known_access, pid, cluster),
                     known_fingerprints=_fingerprints(known_access))

    if desired is None:
        if known_access is None and observed is None:
            return []
        if identity is None:
            reason = Reason.LEAVER
        elif not identity.active:
            reason = Reason.DISABLED
        else:
            reason = Reason.IDLE if idle else Reason.NO_ENTITLEMENT
        return [
            Action(
                Kind.REVOKE, reason, cluster, pid, username, before=before,
                delete_bindings=observed.bindings if observed else (),
                token_secrets=observed.token_secrets if observed else (),
                service_accounts=observed.service_accounts if observed else (),
                previous_username=person.username if person else None, instance=instance, **delivered,
            )
        ]

    after = desired.scopes
    create, delete = _binding_diff(after, observed)
    common = dict(cluster=cluster, person_id=pid, username=username, before=before, after=after,
                  access=desired, identity=identity, create_bindings=create, delete_bindings=delete,
                  create_service_account=observed is None or not observed.service_account,
                  previous_username=person.username if person else None, instance=instance, **delivered)

    credential = known_access.credential if known_access else None
    retirements = _retirements(inputs.lifecycle.retirements(known_access, observed, inputs.now), common)
    token_present = (
        credential is not None and observed is not None and observed.service_account
        and credential.secret_name in observed.token_secrets
    )
    if not token_present:
        reason = Reason.JOINER if known_access is None else Reason.DRIFT
        kind = Kind.ISSUE if known_access is None else Kind.REPAIR
        return [Action(kind, reason, new_token=True, **common), *retirements]

    if delivered["old_kubeconfig"] is not None:
        return [Action(Kind.REPAIR, Reason.RELOCATE, new_token=True, **common), *retirements]

    actions = []
    renamed = person is not None and identity is not None and person.username != identity.username
    if before != after:
        actions.append(Action(Kind.RESCOPE, Reason.MOVER, **common))
    elif renamed:
        actions.append(Action(Kind.RESCOPE, Reason.RENAME, **common))
    elif create or delete:
        actions.append(Action(Kind.REPAIR, Reason.DRIFT, **common))
    elif credential.purpose is not None and credential.purpose != desired.purpose:
        actions.append(Action(Kind.RESCOPE, Reason.PURPOSE, **common))

    renewal = inputs.lifecycle.renewal(credential, desired, inputs.now)
    if renewal is not None:
        actions.append(Action(*renewal, new_token=True, **_token_only(common)))
    return actions + retirements


def _as_recorded(action: Action, policy: Policy) -> Action:
    """The action with its person's attributes cut down to those the policy matches on: what the ledger keeps of
    them, so that the sweep, which plans from the ledger's record, judges people matched by attributes too."""
    if action.identity is None:
        return action
    attributes = {name: action.identity.attributes[name] for name in policy.matched_attributes
                  if name in action.identity.attributes}
    return replace(action, identity=replace(action.identity, attributes=attributes))


def _old_layout(known_access: KnownAccess | None, pid: str, cluster: str) -> str | None:
    """Where the person's kubeconfig was delivered, when that is not the person's own folder (DIRECTORY/KEY/)."""
    recorded = known_access.kubeconfig if known_access else ""
    if not recorded:
        return None
    path = PurePath(recorded)
    return None if (path.parent.name, path.name) == (person_key(pid), f"{cluster}.kubeconfig") else recorded


def _fingerprints(known_access: KnownAccess | None) -> tuple[str, ...]:
    if known_access is None:
        return ()
    return tuple(c.fingerprint for c in (known_access.credential, *known_access.retiring) if c is not None)


def _token_only(common: dict) -> dict:
    return common | dict(create_bindings=(), delete_bindings=(), create_service_account=False)


def _retirements(due: list[Retirement], common: dict) -> list[Action]:
    base = _token_only(common) if due else {}
    return [Action(Kind.RETIRE, retirement.reason, token_secrets=retirement.secrets, **base) for retirement in due]


def _report_only(actions: list[Action], sweep: SweepSettings) -> tuple[list[Action], list[Held]]:
    """Per the sweep settings, some clean-ups are reported (held) rather than done."""
    def reported(action: Action) -> str | None:
        if action.kind is Kind.ORPHAN and sweep.orphans == "report":
            return "reported only (sweep.orphans: report)"
        if action.reason is Reason.STALE and sweep.stale_tokens == "report":
            return "reported only (sweep.stale_tokens: report)"
        if action.kind is Kind.REPAIR and not action.new_token and sweep.drift == "report":
            return "reported only (sweep.drift: report)"
        return None

    kept, held = [], []
    for action in actions:
        why = reported(action)
        if why:
            held.append(Held(action, why))
        else:
            kept.append(action)
    return kept, held


def _binding_diff(
    scopes: Iterable[Scope], observed: ObservedAccount | None
) -> tuple[tuple[Scope, ...], tuple[ObservedBinding, ...]]:
    """Bindings to create and observed bindings to delete so that exactly `scopes` are bound, unedited."""
    wanted = set(scopes)
    healthy: set[Scope] = set()
    delete = []
    for binding in observed.bindings if observed else ():
        if binding.scope in wanted and binding.subjects_intact and binding.scope not in healthy:
            healthy.add(binding.scope)
        else:
            delete.append(binding)
    missing = wanted - healthy
    create = tuple(sorted(missing)) if missing else ()
    return create, tuple(sorted(delete, key=lambda b: (b.namespace or "", b.name))) if delete else ()


def _orphans(reachable: Mapping[str, ObservedCluster], accounted: set[str]) -> list[Action]:
    orphans = []
    for cluster, observed in sorted(reachable.items()):
        for key in sorted(observed.accounts.keys() - accounted):
            account = observed.accounts[key]
            orphans.append(Action(Kind.ORPHAN, Reason.ORPHAN, cluster, key, key, delete_bindings=account.bindings,
                                  token_secrets=account.token_secrets, service_accounts=account.service_accounts,
                                  instance=observed.instance))
    return orphans


def _unsafe(actions: list[Action], known: Mapping[str, KnownPerson], snapshot: Snapshot, safety: SafetySettings,
            counts: RevocationCounts) -> str | None:
    """Why the revocations in this plan look like a broken source rather than real leavers, if they do. Only
    people holding a credential lose access: both limits count them alone."""
    revoking = {a.person_id for a in actions if a.kind is Kind.REVOKE}
    if not revoking:
        return None
    if not (len(snapshot.identities) if snapshot.population is None else snapshot.population):
        return f"the source returned no people at all; {ALLOW_MASS_REVOCATION} if that is true"
    holders = {pid for pid, person in known.items() if any(a.credential for a in person.access.values())}
    # Holders before this plan: the ledger's count for a targeted run (it knows only its people), plus the
    # people the window's runs revoked, who held one until then.
    held = (len(holders) if counts.credential_holders is None else counts.credential_holders) \
        + counts.recent_revocations
    # People whose revocation is held still hold their credential: they are among the holders already.
    losing = len(revoking & holders) + counts.recent_revocations + counts.held_revocations
    if losing > safety.max_revocations:
        return (f"{losing} people would lose access, more than safety.max_revocations="
                f"{safety.max_revocations}; {ALLOW_MASS_REVOCATION} if that is intended")
    percent = min(100.0, 100.0 * losing / max(held, 1))
    if held >= 10 and percent > safety.max_revocation_percent:
        return (f"{percent:.0f}% of credential holders would lose access, more than "
                f"safety.max_revocation_percent={safety.max_revocation_percent:g}; "
                f"{ALLOW_MASS_REVOCATION} if that is intended")
    return None


def plan_manual_revocation(target: str, reason: Reason, known: Mapping[str, KnownPerson],
                           observed: Mapping[str, ObservedCluster | None]) -> Plan:
    """`syncd token revoke`: a fingerprint (or a prefix that names one token) revokes that one token; a person id,
    or a username only one person has, revokes all of that person's access on every cluster. No grace window either
    way. A target that may name someone else (a prefix of several tokens, a shared username) is refused."""
    actions: list[Action] = []
    if target.startswith("sha256:"):
        matches = {credential.fingerprint for person in known.values() for access in person.access.values()
                   for credential in filter(None, (access.credential, *access.retiring))
                   if credential.fingerprint.startswith(target)}
        if len(matches) > 1:
            raise InputError(f"{target!r} is the start of {len(matches)} tokens' fingerprints",
                             hint="give more of the fingerprint (see `syncd token list`)")
        for person in known.values():
            for cluster, access in sorted(person.access.items()):
                seen = observed.get(cluster)
                for credential in filter(None, (access.credential, *access.retiring)):
                    if credential.fingerprint in matches:
                        actions.append(Action(Kind.RETIRE, reason, cluster, person.id, person.username,
                                              before=access.scopes, after=access.scopes,
                                              token_secrets=(credential.secret_name,),
                                              instance=seen.instance if seen else ""))
    else:
        people = [known[target]] if target in known else [p for p in known.values() if p.username == target]
        if len(people) > 1:
            raise InputError(f"{target!r} is the username of {len(people)} people "
                             f"(ids {', '.join(sorted(p.id for p in people))})", hint="revoke by person id")
        for person in people:
            for cluster, access in sorted(person.access.items()):
                seen = observed.get(cluster)
                account = seen.accounts.get(person_key(person.id)) if seen else None
                actions.append(Action(
                    Kind.REVOKE, reason, cluster, person.id, person.username, before=access.scopes,
                    delete_bindings=account.bindings if account else (),
                    token_secrets=account.token_secrets if account else (),
                    service_accounts=account.service_accounts if account else (),
                    previous_username=person.username, instance=seen.instance if seen else "",
                    old_kubeconfig=_old_layout(access, person.id, cluster), known_fingerprints=_fingerprints(access),
                ))
    skipped = tuple(sorted({a.cluster for a in actions if observed.get(a.cluster) is None}))
    return Plan("manual", tuple(a for a in actions if a.cluster not in skipped), (), skipped)
