"""The ports the runtime depends on: what a source, a cluster, delivery, the journal and the read model must do.
Adapters satisfy them structurally; tests satisfy them with in-memory fakes.

A source that cannot read everything says so: a read that fails raises `SourceUnavailable`; a read that skipped
broken entries returns `complete=False` with `problems`. Either way the planner revokes nothing from it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from syncd.core.model import CredentialState, Identity, KnownPerson, Scope, Snapshot


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


class Journal(Protocol):
    """The one path that writes the ledger. Each method is one transaction; an event chains onto the last."""

    def start_run(self, source: str, *, dry_run: bool, approved: bool = False) -> str: ...

    def finish_run(self, run_id: str, result: str, summary: dict) -> None: ...

    def interrupt_dead_runs(self, run_id: str) -> list[RunRef]: ...

    def begin_intent(self, run_id: str | None, event: Event) -> int: ...

    def end_intent(self, intent_id: int, state: str) -> None: ...

    def settle_intent(self, run_id: str | None, intent: Intent, result: str) -> None: ...

    def record(self, run_id: str | None, event: Event) -> None: ...

    def record_holds(self, run_id: str | None, held: Collection[Event]) -> int: ...

    def record_token(self, source: str, identity: Identity, cluster: str, scopes: frozenset[Scope],
                     token: NewCredential, *, grace: timedelta | None, reason: str) -> None: ...

    def record_delivery(self, run_id: str | None, source: str, identity: Identity, event: Event, kubeconfig: str,
                        intent_id: int | None) -> None: ...

    def undo_credential(self, person_id: str, cluster: str, fingerprint: str, *, delivered: str | None) -> None: ...

    def record_revocation(self, run_id: str | None, event: Event, *, remove_access: bool,
                          secret_names: tuple[str, ...] | None = None, intent_id: int | None = None) -> list[str]: ...

    def confirm_rejected(self, run_id: str | None, fingerprint: str, at: datetime) -> None: ...


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

    def held_revocations(self, source: str) -> frozenset[str]: ...

    def credential_states(self) -> dict[CredentialState, int]: ...

    def ping(self) -> None: ...
