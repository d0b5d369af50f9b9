"""The ports the runtime depends on: what a source, a cluster, delivery, the journal and the read model must do,
and the plain records they exchange (no client library's types). Adapters satisfy them structurally; tests satisfy
them with in-memory fakes (tests/fakes.py), and a contract suite per port (tests/contract/) runs against both.

A source that cannot read everything says so: a read that fails raises `SourceUnavailable`; a read that skipped
broken entries returns `complete=False` with `problems`. Either way the planner revokes nothing from it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from syncd.core.leadership import LeaseRecord
from syncd.core.model import (
    CredentialState,
    Endpoint,
    Identity,
    KnownPerson,
    ObservedBinding,
    ObservedCluster,
    Purpose,
    Scope,
    Snapshot,
    fingerprint,
    token_claims,
)
from syncd.core.review import RbacRule, Role
from syncd.core.usage import DayUsage, UsageKey

AUDIT_FILES = "audit-files"  # the watch cursors' "source" under which each audit log file's cursor is kept, by path


class Source(Protocol):
    name: str

    def read(self) -> Snapshot:
        """Everyone, in full. Raises `SourceUnavailable` when the read fails."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class IncrementalSource(Source, Protocol):
    def poll(self) -> Snapshot:
        """Only the people changed since the last `read` or `poll` (a disabled or deleted person comes back with
        `active=False`). The engine reconciles just those people; deletions a poll cannot see wait for `read`."""
        ...


@runtime_checkable
class TargetedSource(Source, Protocol):
    def read_people(self, ids: Collection[str]) -> Snapshot:
        """Only these people, for a targeted run: cheaper than `read`, just as current. Someone missing from
        the answer is gone from the source; `population` counts everyone it holds."""
        ...


@dataclass(frozen=True)
class ServiceAccountRef:
    """A person's ServiceAccount as `Cluster.ensure_service_account` made or found it: what a token is bound to."""

    name: str
    uid: str


@dataclass(frozen=True)
class IssuedToken:
    """A token fresh from TokenRequest. `token` lives in memory and in the delivered file only."""

    token: str
    secret_name: str
    issued_at: datetime
    expires_at: datetime

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.token)

    @property
    def jti(self) -> str:
        """The token's `jti` claim (Kubernetes 1.29+; "" before): the id audit events name it by."""
        jti = token_claims(self.token).get("jti")
        return jti if isinstance(jti, str) else ""

    def __repr__(self) -> str:
        return f"IssuedToken(secret_name={self.secret_name!r}, fingerprint={self.fingerprint!r})"


class Cluster(Protocol):
    """One Kubernetes cluster, as syncd manages it: everything it made carries its labels, in its namespace.

    A call the cluster cannot answer raises `ClusterUnavailable`; one it refuses, `ClusterRejected`. Deleting what
    is already gone is no error; creating a name taken by an object that is not this syncd's (labels, subjects or
    role differ) is refused."""

    name: str
    namespace: str  # where the ServiceAccounts and token Secrets live
    writes: int  # write calls made so far

    def observe(self, people: Collection[str] | None = None) -> ObservedCluster:
        """Everything under our labels, by person key; given `people` (person keys), at least their objects."""
        ...

    def missing_roles(self, scopes: Iterable[Scope]) -> frozenset[Scope]: ...

    def role_rules(self, role: Role) -> tuple[RbacRule, ...] | None:
        """The rules of a ClusterRole or Role, read live; None when it does not exist."""
        ...

    def endpoint(self) -> Endpoint: ...

    def token_authenticates(self, token: str) -> bool: ...

    def ensure_namespace(self) -> None: ...

    def ensure_service_account(self, person_id: str, username: str) -> ServiceAccountRef: ...

    def issue_token(self, account: ServiceAccountRef, person_id: str, username: str, ttl: timedelta
                    ) -> IssuedToken:
        """A new token Secret and a token bound to it: deleting the Secret (or the account) kills that token."""
        ...

    def create_binding(self, person_id: str, username: str, scope: Scope) -> None: ...

    def delete_binding(self, binding: ObservedBinding) -> None: ...

    def delete_token_secret(self, name: str) -> None: ...

    def delete_account(self, service_accounts: tuple[str, ...], token_secrets: tuple[str, ...]) -> None:
        """Token Secrets first (each kills its token), then the ServiceAccounts."""
        ...

    def close(self) -> None: ...


class Delivery(Protocol):
    """Kubeconfigs and token files, one folder per person key. Files are paths: kubectl reads them."""

    def kubeconfig_path(self, key: str, cluster: str) -> Path: ...

    def deliver(self, key: str, username: str, cluster: str, target: Endpoint, token: str,
                namespace: str | None) -> Path:
        """Write the token and a kubeconfig that uses it (atomically, mode 0600); the kubeconfig's path."""
        ...

    def replace_token(self, key: str, username: str, cluster: str, target: Endpoint, token: str,
                      namespace: str | None) -> Path:
        """A refresh: only the token changes where a token file holds it; else as `deliver`."""
        ...

    def read_token(self, kubeconfig: Path) -> str | None:
        """The token delivered with this kubeconfig, None when there is none."""
        ...

    def remove(self, kubeconfig: Path, fingerprints: Collection[str] | None) -> str | None:
        """Remove the kubeconfig and its token when the token is one of `fingerprints` (None: any); the token
        removed, None when nothing was."""
        ...


# The ledger: one journal writes, the read model answers. Records cross the port as plain data.


@dataclass(frozen=True)
class Event:
    """One ledger event as callers give it; the journal adds sequence, time and hashes."""

    person_id: str
    username: str
    action: str
    reason: str
    cluster: str | None = None
    before: frozenset[Scope] = frozenset()
    after: frozenset[Scope] = frozenset()
    result: str = "ok"
    error: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Intent:
    """Work an action began before its first external write; pending until its event is recorded."""

    id: int
    run_id: str | None
    person_id: str
    username: str
    cluster: str
    action: str
    reason: str
    started_at: datetime


@dataclass(frozen=True)
class RunRef:
    id: str
    source: str


@dataclass(frozen=True)
class NewCredential:
    """A token just issued, as the ledger keeps it: never the token itself."""

    secret_name: str
    fingerprint: str
    issued_at: datetime
    expires_at: datetime
    jti: str = ""  # its `jti` claim, where it has one: audit events name the token by it (Kubernetes 1.29+)


class Journal(Protocol):
    """The one path that writes the ledger. Each method is one transaction; an event chains onto the last."""

    def start_run(self, source: str, *, dry_run: bool, approved: bool = False) -> str: ...

    def finish_run(self, run_id: str, result: str, summary: dict) -> None: ...

    def lose_lease(self, run_id: str) -> None:
        """The run stopped because this process lost the apply lock: it is recorded `lost-lease`."""
        ...

    def interrupt_dead_runs(self, run_id: str) -> list[RunRef]: ...

    def check_lease(self) -> None: ...

    def begin_intents(self, run_id: str | None, events: list[Event]) -> list[int]: ...

    def end_intents(self, intent_ids: list[int], state: str) -> None: ...

    def settle_intent(self, run_id: str | None, intent: Intent, result: str) -> None: ...

    def record(self, run_id: str | None, event: Event, intent_id: int | None = None) -> None: ...

    def record_holds(self, run_id: str | None, held: Collection[Event]) -> int: ...

    def record_token(self, source: str, identity: Identity, cluster: str, scopes: frozenset[Scope],
                     token: NewCredential, *, kubeconfig: str, grace: timedelta | None, reason: str,
                     purpose: Purpose | None = None) -> None: ...

    def record_delivered(self, run_id: str | None, event: Event, intent_id: int | None, *,
                         moved_to: str | None = None) -> None: ...

    def record_delivery(self, run_id: str | None, source: str, identity: Identity, event: Event, kubeconfig: str,
                        intent_id: int | None, *, purpose: Purpose | None = None) -> None: ...

    def undo_credential(self, person_id: str, cluster: str, fingerprint: str, *, delivered: str | None) -> None: ...

    def record_revocation(self, run_id: str | None, event: Event, *, remove_access: bool,
                          secret_names: tuple[str, ...] | None = None, intent_id: int | None = None,
                          suspend: bool = False) -> list[str]: ...

    def resume(self, run_id: str | None, event: Event) -> list[str]:
        """Lift the person's suspension on `event.cluster` (None: every cluster), a `resume` event each; the
        clusters resumed."""
        ...

    def confirm_rejected(self, run_id: str | None, fingerprints: Collection[str], at: datetime) -> None: ...

    def save_cursors(self, source: str, cookies: Mapping[str, bytes | None]) -> None: ...

    def record_usage(self, days: Mapping[UsageKey, DayUsage], cursors: Mapping[str, bytes] | None = None) -> None:
        """Fold per-day use (from audit events) into the ledger's, in one transaction, with the audit log files'
        cursors (path -> where its follower stopped; `ReadModel.watch_cursors(AUDIT_FILES)` reads them back)."""
        ...

    def record_anomaly(self, event: Event) -> bool:
        """An anomaly in a credential's use as an event; False when the same one of the same token is recorded."""
        ...

    def forget_usage(self, before: date) -> int:
        """Delete the use recorded for days before `before`; how many rows."""
        ...


class ReadModel(Protocol):
    """The views of the ledger the planner, the engine, the daemon and the CLI read."""

    def identities(self, source: str) -> tuple[Identity, ...]: ...

    def known_people(self, ids: Collection[str] | None = None) -> dict[str, KnownPerson]: ...

    def live_fingerprints(self, person_id: str, cluster: str) -> set[str]: ...

    def interrupted_intents(self) -> list[Intent]: ...

    def last_seq(self) -> int: ...

    def source_changed_since(self, source: str, seq: int) -> bool: ...

    def credential_holders(self, source: str) -> int: ...

    def recent_revocations(self, source: str, since: datetime) -> int: ...

    def mass_holds(self, source: str, since: datetime) -> frozenset[str]: ...

    def held_revocations(self, source: str) -> frozenset[str]: ...

    def last_used(self, keys: Collection[str] | None = None) -> dict[tuple[str, str], datetime]: ...

    def suspensions(self) -> list[tuple[str, str, str, datetime]]:
        """(person id, username, cluster, since) of each access suspended for want of use."""
        ...

    def watch_cursors(self, source: str) -> dict[str, bytes]: ...

    def credential_states(self) -> dict[CredentialState, int]: ...

    def ping(self) -> None: ...


class LeaderLease(Protocol):
    """Where replicas elect the one that runs the scheduled jobs (`syncd.core.leadership` decides each step)."""

    backend: str  # ledger | kubernetes

    def step(self, me: str, ttl: timedelta) -> LeaseRecord:
        """Acquire, renew or take over the lease for `ttl`, or follow its holder; the lease as it then stands."""
        ...

    def release(self, me: str) -> None:
        """Let the lease expire now if `me` holds it, so that a follower takes over at once."""
        ...

    def close(self) -> None: ...
