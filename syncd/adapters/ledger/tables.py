"""The ledger's tables. Times are UTC; nothing here ever holds a token, only fingerprints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime

from sqlmodel import Field, SQLModel

from syncd.core.model import CredentialState, Purpose, RoleKind, Scope
from syncd.core.usage import DayUsage, UsageKey


class PersonRow(SQLModel, table=True):
    __tablename__ = "person"

    id: str = Field(primary_key=True, description="Stable id from the source (entryUUID, SCIM id, ...).")
    source: str = Field(index=True)
    username: str
    email: str = ""
    display_name: str = ""
    active: bool = True
    groups: str = "[]"  # JSON list
    attributes: str = "{}"  # JSON object: only the attributes the policy matches on, so the sweep can judge them
    first_seen: datetime
    last_seen: datetime
    removed_at: datetime | None = None


class AccessRow(SQLModel, table=True):
    __tablename__ = "access"

    person_id: str = Field(primary_key=True, foreign_key="person.id")
    cluster: str = Field(primary_key=True)
    scopes: str = "[]"  # JSON list of scopes
    kubeconfig: str = ""
    updated_at: datetime
    granted_at: datetime | None = None  # when this access began: idleness counts from here (usage.idle_after)


class CredentialRow(SQLModel, table=True):
    __tablename__ = "credential"

    id: int | None = Field(default=None, primary_key=True)
    person_id: str = Field(index=True, foreign_key="person.id")
    cluster: str
    secret_name: str
    fingerprint: str = Field(index=True)
    issued_at: datetime
    expires_at: datetime
    state: str = Field(default=CredentialState.ACTIVE, index=True)  # a CredentialState
    retire_at: datetime | None = None  # retiring: when its Secret is deleted
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    rejected_at: datetime | None = None  # when a TokenReview first confirmed the token no longer works
    jti: str | None = Field(default=None, index=True)  # the token's jti claim (Kubernetes 1.29+): audit events name it
    purpose: str | None = None  # JSON list of [namespace, role kind, role, rule]: the rules that grant it (None: not
    # recorded, issued before syncd kept purposes)


class RunRow(SQLModel, table=True):
    __tablename__ = "run"

    id: str = Field(primary_key=True)
    source: str
    started_at: datetime
    finished_at: datetime | None = None
    dry_run: bool = False
    result: str = "running"  # running | ok | failed | no-op | interrupted | lost-lease
    summary: str = "{}"  # JSON
    approved: bool = False  # --allow-mass-revocation: its revocations were allowed by a human
    head_seq: int | None = None  # the ledger's newest event when the run finished: an anchor `verify` checks
    head_hash: str | None = None


class EventRow(SQLModel, table=True):
    __tablename__ = "event"

    seq: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    at: datetime
    person_id: str = Field(index=True)
    username: str
    cluster: str | None = None
    action: str
    reason: str
    before: str = "[]"
    after: str = "[]"
    result: str = Field(default="ok", index=True)  # ok | failed | held: held ones are looked up
    error: str | None = None
    fingerprint: str | None = None
    prev_hash: str
    hash: str


class HeadRow(SQLModel, table=True):
    """The chain's newest event, updated in the same transaction as every event: cutting off the tail of the
    chain leaves it pointing past the end."""

    __tablename__ = "ledger_head"

    id: int = Field(default=1, primary_key=True)  # one row
    seq: int
    hash: str


class IntentRow(SQLModel, table=True):
    """Written before an action's first external write, completed with its event. A pending intent found by a
    later run marks work a crash interrupted."""

    __tablename__ = "intent"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    person_id: str
    username: str
    cluster: str
    action: str
    reason: str
    state: str = Field(default="pending", index=True)  # pending | done | failed | not-begun | recovered | deferred
    started_at: datetime
    finished_at: datetime | None = None


class WatchCursorRow(SQLModel, table=True):
    """Where a source's watch stopped (an RFC 4533 or DirSync cookie, base64): a restart resumes there instead of
    reading the directory again. Written only once the changes before it were applied."""

    __tablename__ = "watch_cursor"

    source: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)  # which stream of the source: people | groups
    cookie: str
    updated_at: datetime


class UsageDayRow(SQLModel, table=True):
    """What one credential did on one day, from the API server's audit events (`syncd.core.usage.DayUsage`): the
    person by key (their ServiceAccount's name), the token by its jti where the API server names it, else ""."""

    __tablename__ = "usage_day"

    person_key: str = Field(primary_key=True)
    cluster: str = Field(primary_key=True)
    day: date = Field(primary_key=True)
    credential_id: str = Field(default="", primary_key=True)
    first_use: datetime
    last_use: datetime
    requests: int = 0
    denied: int = 0
    source_ips: str = "[]"  # JSON list, bounded
    user_agents: str = "[]"  # JSON list, bounded
    verbs: str = "{}"  # JSON object name -> count, bounded
    resources: str = "{}"
    namespaces: str = "{}"


class SuspensionRow(SQLModel, table=True):
    """An access suspended for want of use (reason idle): planned nothing until `syncd access resume` deletes the
    row (the revocation and the resume are events of the chain)."""

    __tablename__ = "suspension"

    person_id: str = Field(primary_key=True, foreign_key="person.id")
    cluster: str = Field(primary_key=True)
    since: datetime


class LeaseRow(SQLModel, table=True):
    """A lease every syncd process on a PostgreSQL ledger shares. `apply`: the fenced apply lock, whose epoch each
    holder increments on acquiring it (its journal writes check the epoch is still theirs). `leader`: the replica
    that runs the scheduled jobs, until `expires_at` (the database's clock, UTC) unless it renews."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True)
    epoch: int = 0
    holder: str = ""
    expires_at: datetime | None = None

# How rows encode what they hold.

GENESIS = "0" * 64  # the hash before the first event


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite gives times back without their zone: they are UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def scopes_to_json(scopes: Iterable[Scope]) -> str:
    return json.dumps([[s.namespace, str(s.role_kind), s.role_name] for s in sorted(scopes)])


def scopes_from_json(text: str) -> frozenset[Scope]:
    return frozenset(Scope(ns, RoleKind(kind), name) for ns, kind, name in json.loads(text))


def purpose_to_json(purpose: Purpose) -> str:
    return json.dumps([[s.namespace, str(s.role_kind), s.role_name, rule] for s, rule in sorted(purpose)])


def purpose_from_json(text: str | None) -> Purpose | None:
    if text is None:
        return None
    return frozenset((Scope(ns, RoleKind(kind), name), rule) for ns, kind, name, rule in json.loads(text))


def event_hash(row: EventRow) -> str:
    """Hash over every field of an event and the previous event's hash."""
    body = {
        "seq": row.seq, "run_id": row.run_id, "at": row.at.isoformat(), "person_id": row.person_id,
        "username": row.username, "cluster": row.cluster, "action": row.action, "reason": row.reason,
        "before": row.before, "after": row.after, "result": row.result, "error": row.error,
        "fingerprint": row.fingerprint, "prev_hash": row.prev_hash,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def usage_row(key: UsageKey, day: DayUsage) -> UsageDayRow:
    person_key, cluster, on, credential_id = key
    return UsageDayRow(person_key=person_key, cluster=cluster, day=on, credential_id=credential_id,
                       first_use=utc(day.first), last_use=utc(day.last), requests=day.requests, denied=day.denied,
                       source_ips=json.dumps(day.source_ips), user_agents=json.dumps(day.user_agents),
                       verbs=json.dumps(day.verbs), resources=json.dumps(day.resources),
                       namespaces=json.dumps(day.namespaces))


def usage_from_row(row: UsageDayRow) -> tuple[UsageKey, DayUsage]:
    day = DayUsage(first=aware(row.first_use), last=aware(row.last_use),  # type: ignore[arg-type]
                   requests=row.requests, denied=row.denied, source_ips=json.loads(row.source_ips),
                   user_agents=json.loads(row.user_agents), verbs=json.loads(row.verbs),
                   resources=json.loads(row.resources), namespaces=json.loads(row.namespaces))
    return (row.person_key, row.cluster, row.day, row.credential_id), day
