"""Small builders for planner inputs, so each test states only what its decision depends on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.core.model import (
    Identity,
    KnownAccess,
    KnownCredential,
    KnownPerson,
    ObservedAccount,
    ObservedBinding,
    ObservedCluster,
    Purpose,
    RoleKind,
    Scope,
    Snapshot,
    binding_name,
    person_key,
    service_account_name,
)
from syncd.core.plan import Inputs, Plan, RevocationCounts, make_plan, make_sweep_plan
from syncd.core.policy import Policy
from syncd.core.settings import SafetySettings, SweepSettings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SOURCE = "hr"
CLUSTER = "dev"
INSTANCE = "syncd"
EDIT_A = Scope("team-a", RoleKind.CLUSTER_ROLE, "edit")
VIEW_B = Scope("team-b", RoleKind.CLUSTER_ROLE, "view")

POLICY = Policy.model_validate({
    "defaults": {"token_ttl": "8h", "rotation_period": "90d"},
    "rules": [
        {"name": "developers", "match": {"groups": ["developers"]},
         "grant": [{"cluster": CLUSTER, "namespaces": ["team-a"], "role": "edit"}]},
        {"name": "sre", "match": {"groups": ["sre"]},
         "grant": [{"cluster": CLUSTER, "namespaces": ["team-b"], "role": "view", "token_ttl": "1h"}]},
    ],
})
SAFETY = SafetySettings(max_revocations=50, max_revocation_percent=25.0)
SWEEP = SweepSettings()
COUNTS = RevocationCounts()


def person(pid: str = "1001", username: str = "alice", groups: tuple[str, ...] = ("developers",),
           active: bool = True) -> Identity:
    return Identity(pid, username, f"{username}@example.org", groups=frozenset(groups), active=active)


def credential(issued: datetime = NOW - timedelta(hours=1), ttl: timedelta = timedelta(hours=8),
               secret: str = "syncd-1001-abcde", retire_at: datetime | None = None,
               purpose: Purpose | None = None) -> KnownCredential:
    return KnownCredential(secret, "sha256:00", issued, issued + ttl, retire_at, purpose)


def known(pid: str = "1001", username: str = "alice", scopes: tuple[Scope, ...] = (EDIT_A,),
          cred: KnownCredential | None = None, source: str = SOURCE,
          retiring: tuple[KnownCredential, ...] = (), granted_at: datetime | None = None) -> KnownPerson:
    cred = cred or credential(secret=f"syncd-{person_key(pid)}-abcde")
    return KnownPerson(pid, source, username, {CLUSTER: KnownAccess(CLUSTER, frozenset(scopes), cred, retiring,
                                                                    granted_at=granted_at)})


def binding(pid: str, scope: Scope, *, intact: bool = True, name: str | None = None) -> ObservedBinding:
    return ObservedBinding(name or binding_name(pid, scope, INSTANCE), scope.namespace, scope, intact)


def account(pid: str = "1001", scopes: tuple[Scope, ...] = (EDIT_A,), *, service_account: bool = True,
            secrets: tuple[str, ...] | None = None, bindings: tuple[ObservedBinding, ...] | None = None
            ) -> ObservedAccount:
    key = person_key(pid)
    return ObservedAccount(
        key, service_account,
        bindings if bindings is not None else tuple(binding(pid, s) for s in scopes),
        secrets if secrets is not None else (f"syncd-{key}-abcde",),
        (service_account_name(pid),) if service_account else (),
    )


def cluster(*accounts: ObservedAccount) -> ObservedCluster:
    return ObservedCluster(CLUSTER, {a.key: a for a in accounts}, INSTANCE)


def plan(identities: tuple[Identity, ...] = (), people: tuple[KnownPerson, ...] = (),
         observed: ObservedCluster | None = None, *, complete: bool = True, now: datetime = NOW,
         only: frozenset[str] | None = None, safety: SafetySettings = SAFETY, allow_mass_revocation: bool = False,
         reachable: bool = True, sweep: SweepSettings = SWEEP, population: int | None = None,
         sweeping: bool = False, missing_roles: frozenset[Scope] = frozenset(),
         counts: RevocationCounts = COUNTS, idle_after: timedelta | None = None, suspend_idle: bool = False,
         last_use: dict[tuple[str, str], datetime] | None = None,
         suspended: frozenset[tuple[str, str]] = frozenset()) -> Plan:
    inputs = Inputs(
        snapshot=Snapshot(SOURCE, identities, complete=complete, population=population),
        policy=POLICY,
        known={p.id: p for p in people},
        observed={CLUSTER: (observed if observed is not None else cluster()) if reachable else None},
        now=now,
        safety=safety,
        only=only,
        sweep=sweep,
        missing_roles={CLUSTER: missing_roles},
        counts=counts,
        idle_after=idle_after,
        suspend_idle=suspend_idle,
        last_use=last_use or {},
        suspended=suspended,
    )
    if sweeping:  # identities are then what the ledger recorded, as the sweep job reads them
        return make_sweep_plan(inputs)
    return make_plan(inputs, allow_mass_revocation=allow_mass_revocation)


def kinds(result: Plan) -> list[tuple[str, str, str]]:
    return [(str(a.kind), str(a.reason), a.person_id) for a in result.actions]


