"""The journal: the one path that writes the ledger. Runs, intents, events (holds and recoveries included),
credential state changes and the identity and access records behind them; each method is one transaction and takes
plain data. The transactions of concurrent callers are committed in groups (`Database.write`).

The writes an action makes (its intent, its token, its event) are plain SQL statements on the transaction's connection
(inserts, updates, upserts), not ORM loads and flushes: a group's transaction holds the ledger's write lock, so every
statement saved there is saved for every worker. Rows this path changes are never loaded into the ORM session."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, insert, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import delete, func, select

from syncd.adapters.ledger.database import ID_LIST_LIMIT, Database
from syncd.adapters.ledger.group_commit import GroupTransaction
from syncd.adapters.ledger.prepared import Prepared
from syncd.adapters.ledger.tables import (
    GENESIS,
    AccessRow,
    CredentialRow,
    EventRow,
    HeadRow,
    IntentRow,
    PersonRow,
    RunRow,
    SuspensionRow,
    UsageDayRow,
    WatchCursorRow,
    aware,
    event_hash,
    purpose_to_json,
    scopes_to_json,
    usage_from_row,
    usage_row,
    utc,
)
from syncd.core.lifecycle import retire_at
from syncd.core.model import CredentialState, Identity, Purpose
from syncd.core.usage import DayUsage, UsageKey
from syncd.ports import AUDIT_FILES, Event, Intent, NewCredential, RunRef

T = TypeVar("T")

LEFT_FOR_FULL_RUN = "left-for-full-run"  # what recovery does with work only a run that reads the source can settle
LIVE = (CredentialState.ACTIVE, CredentialState.RETIRING)
CHAIN_HEAD = "syncd_chain_head"  # the transaction's cache of the chain's head (seq, hash), as its transaction moved it

# The statements of an action's writes, built once and run on the driver's cursor (prepared.py). An UPDATE's SET
# clause is the columns its parameters name.
PERSON, ACCESS, CREDENTIAL, EVENT, HEAD, INTENT = (row.__table__ for row in (  # type: ignore[attr-defined]
    PersonRow, AccessRow, CredentialRow, EventRow, HeadRow, IntentRow))
INSERT_INTENTS = insert(INTENT).returning(INTENT.c.id, sort_by_parameter_order=True)  # SQLAlchemy's: ids in order
END_INTENT = Prepared(update(INTENT).where(INTENT.c.id == bindparam("intent_id")))
SELECT_HEAD = Prepared(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))
INSERT_EVENT, INSERT_HEAD = Prepared(insert(EVENT)), Prepared(insert(HEAD))
UPDATE_HEAD = Prepared(update(HEAD).where(HEAD.c.id == 1))
INSERT_CREDENTIAL = Prepared(insert(CREDENTIAL))
UPDATE_CREDENTIAL = Prepared(update(CREDENTIAL).where(CREDENTIAL.c.id == bindparam("credential_id")))
IS_LIVE = or_(*(CREDENTIAL.c.state == state for state in LIVE))
SET_PURPOSE = Prepared(update(CREDENTIAL).where(
    CREDENTIAL.c.person_id == bindparam("of_person"), CREDENTIAL.c.cluster == bindparam("on_cluster"), IS_LIVE))
LIVE_CREDENTIALS = Prepared(select(CREDENTIAL.c.id, CREDENTIAL.c.fingerprint).where(
    CREDENTIAL.c.person_id == bindparam("person"), CREDENTIAL.c.cluster == bindparam("cluster"), IS_LIVE))
DELETE_ACCESS = Prepared(ACCESS.delete().where(ACCESS.c.person_id == bindparam("person"),
                                               ACCESS.c.cluster == bindparam("cluster")))
ANY_ACCESS = Prepared(select(ACCESS.c.cluster).where(ACCESS.c.person_id == bindparam("person")).limit(1))
UPDATE_PERSON = Prepared(update(PERSON).where(PERSON.c.id == bindparam("person")))
MOVE_ACCESS = Prepared(update(ACCESS).where(ACCESS.c.person_id == bindparam("of_person"),
                                            ACCESS.c.cluster == bindparam("on_cluster")))
ACTIVE_CREDENTIALS = Prepared(select(CREDENTIAL.c.id, CREDENTIAL.c.expires_at).where(
    CREDENTIAL.c.person_id == bindparam("person"), CREDENTIAL.c.cluster == bindparam("cluster"),
    CREDENTIAL.c.state == CredentialState.ACTIVE))
PERSON_CHANGES = ("username", "email", "display_name", "active", "groups", "attributes", "last_seen", "removed_at")
ACCESS_CHANGES = ("scopes", "kubeconfig", "updated_at")


class Journal:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _write(self, work: Callable[[GroupTransaction], T]) -> T:
        """One write transaction (committed with other threads' writes, see `Database.write`), fenced: it fails with
        `LeaseLost`, writing nothing, once this process lost the apply lock it holds (`Database.fence`)."""
        def fenced(tx: GroupTransaction) -> T:
            self.database.fence(tx)
            return work(tx)

        return self.database.write(fenced)

    # Runs

    def start_run(self, source: str, *, dry_run: bool, approved: bool = False) -> str:
        """`approved`: a human allowed the run's revocations (--allow-mass-revocation); the targeted safety window
        does not count them again."""
        run_id = uuid.uuid4().hex[:12]
        self._write(lambda tx: tx.session.add(RunRow(id=run_id, source=source, started_at=utc(datetime.now(UTC)),
                                                   dry_run=dry_run, approved=approved)))
        return run_id

    def finish_run(self, run_id: str, result: str, summary: dict) -> None:
        def work(tx: GroupTransaction) -> None:
            run = tx.session.get(RunRow, run_id)
            if run is not None:
                run.finished_at = utc(datetime.now(UTC))
                run.result = result
                run.summary = json.dumps(summary, sort_keys=True)
                head = _head(tx.connection)
                if head is not None:  # the chain's head as the run leaves it: `verify` finds it in the chain
                    run.head_seq, run.head_hash = head
                tx.session.add(run)

        self._write(work)

    def lose_lease(self, run_id: str) -> None:
        """Record that the run stopped because it lost the apply lock (`lost-lease`). Unfenced, as it must be: it
        changes only the run's own row (another holder may have marked it interrupted meanwhile), no event."""
        with self.database.session() as session:
            run = session.get(RunRow, run_id)
            if run is not None and run.result in ("running", "interrupted"):
                run.result = "lost-lease"
                run.finished_at = run.finished_at or utc(datetime.now(UTC))
                session.add(run)

    def interrupt_dead_runs(self, run_id: str) -> list[RunRef]:
        """Mark every run still `running` but this one `interrupted`, each with a `recover` event. A run is
        `running` only while it holds the apply lock, so call this only while holding `exclusive()`: any other
        running run then belongs to a process that died or was killed."""
        def work(tx: GroupTransaction) -> list[RunRef]:
            # Row locks, so that a run whose old holder is recording it `lost-lease` right now is read once that
            # commits, and skipped: it is not running any more.
            dead = list(tx.session.exec(select(RunRow).where(RunRow.result == "running", RunRow.id != run_id)
                               .with_for_update()).all())
            for run in dead:
                run.result, run.finished_at = "interrupted", utc(datetime.now(UTC))
                tx.session.add(run)
                self._record(tx, run_id, Event("", "", "recover", "interrupted-run", result="interrupted",
                                              error=f"run {run.id} of {run.source} stopped before it finished"))
            return [RunRef(run.id, run.source) for run in dead]

        return self._write(work)

    # Intents: crash safety around external writes

    def check_lease(self) -> None:
        """Before an external write whose intent is already begun: `LeaseLost` once this process knows it lost the
        apply lock (the heartbeat's finding; a write's own fence asks the database)."""
        self.database.check_lease()

    def begin_intents(self, run_id: str | None, events: list[Event]) -> list[int]:
        """The intents of several actions, in one transaction (before the first external write of any of them);
        their ids, in order."""
        def work(tx: GroupTransaction) -> list[int]:
            now = datetime.now(UTC)
            return list(tx.connection.execute(INSERT_INTENTS, [dict(
                run_id=run_id, person_id=event.person_id, username=event.username, cluster=event.cluster or "",
                action=event.action, reason=event.reason, state="pending", started_at=now) for event in events]
            ).scalars())

        return self._write(work) if events else []

    def end_intents(self, intent_ids: list[int], state: str) -> None:
        """Close intents as `state` (`not-begun`: their actions never began), in one transaction."""
        now = datetime.now(UTC)
        self._write(lambda tx: END_INTENT.run_many(tx.connection, [dict(intent_id=i, state=state, finished_at=now)
                                                                     for i in intent_ids]))

    def _close(self, tx: GroupTransaction, run_id: str | None, event: Event, intent_id: int | None) -> None:
        """An action's event, and the end of its intent (if any): done, or failed with the event."""
        self._record(tx, run_id, event)
        if intent_id is not None:
            END_INTENT.run(tx.connection, dict(
                intent_id=intent_id, state="done" if event.result == "ok" else "failed", finished_at=datetime.now(UTC)))

    def settle_intent(self, run_id: str | None, intent: Intent, result: str) -> None:
        """Close an interrupted intent with a `recover` event saying what became of its work (finished,
        rolled-back, replanned); `left-for-full-run` keeps it open as `deferred`, with one event however many
        sweeps leave it."""
        def work(tx: GroupTransaction) -> None:
            row = tx.session.get(IntentRow, intent.id)
            if row is None:
                return
            deferred = result == LEFT_FOR_FULL_RUN
            if deferred and row.state == "deferred":
                return
            row.state = "deferred" if deferred else "recovered"
            row.finished_at = None if deferred else datetime.now(UTC)
            tx.session.add(row)
            self._record(tx, run_id, Event(row.person_id, row.username, "recover", f"interrupted-{row.action}",
                                          cluster=row.cluster, result=result,
                                          error=f"run {row.run_id} stopped mid-action"))

        self._write(work)

    # Events

    def record(self, run_id: str | None, event: Event, intent_id: int | None = None) -> None:
        """An event; with `intent_id`, the end of that intent too (failed with the event, else done)."""
        self._write(lambda tx: self._close(tx, run_id, event, intent_id))

    def _record(self, tx: GroupTransaction, run_id: str | None, event: Event) -> None:
        self.database.lock_chain(tx)  # two processes never chain onto the same last event
        connection = tx.connection
        # The chain goes on from its anchored head, not from whatever event is newest: a cut-off tail stays a
        # break in the chain, however many events follow.
        # Read once per transaction: its writes are the only ones while it holds the write lock (or the chain lock).
        head = tx.info[CHAIN_HEAD] if CHAIN_HEAD in tx.info else _head(connection)
        seq, prev_hash = head or (0, GENESIS)
        row = SimpleNamespace(
            seq=seq + 1, run_id=run_id, at=utc(datetime.now(UTC)),
            person_id=event.person_id, username=event.username, cluster=event.cluster, action=event.action,
            reason=event.reason, before=scopes_to_json(event.before), after=scopes_to_json(event.after),
            result=event.result, error=event.error, fingerprint=event.fingerprint, prev_hash=prev_hash,
        )
        row.hash = event_hash(row)  # type: ignore[arg-type]
        INSERT_EVENT.run(connection, vars(row))
        (INSERT_HEAD if head is None else UPDATE_HEAD).run(connection, dict(id=1, seq=row.seq, hash=row.hash))
        tx.info[CHAIN_HEAD] = (row.seq, row.hash)

    def record_holds(self, run_id: str | None, held: Collection[Event]) -> int:
        """Record held actions that are news: a person and cluster whose latest event already holds the same
        action for the same reason keep it, however many runs go on holding it. How many were written."""
        if not held:
            return 0
        people = sorted({event.person_id for event in held})

        def work(tx: GroupTransaction) -> int:
            latest: dict[tuple[str, str | None], tuple[str, str, str]] = {}
            for chunk in (people[i:i + ID_LIST_LIMIT] for i in range(0, len(people), ID_LIST_LIMIT)):
                last_seqs = (select(func.max(EventRow.seq))
                             .where(EventRow.person_id.in_(chunk))  # type: ignore[attr-defined]
                             .group_by(EventRow.person_id, EventRow.cluster))  # type: ignore[arg-type]
                for row in tx.session.exec(select(EventRow).where(EventRow.seq.in_(last_seqs))):  # type: ignore[union-attr]
                    latest[(row.person_id, row.cluster)] = (row.action, row.reason, row.result)
            news = [e for e in held if latest.get((e.person_id, e.cluster)) != (e.action, e.reason, "held")]
            for event in news:
                self._record(tx, run_id, event)
            return len(news)

        return self._write(work)

    # Credentials, with the identity and access records behind them

    def record_token(self, source: str, identity: Identity, cluster: str, scopes: frozenset, token: NewCredential,
                     *, kubeconfig: str, grace: timedelta | None, reason: str, purpose: Purpose | None = None) -> None:
        """A token just issued, recorded before its file is written, with the person, their access (delivered to
        `kubeconfig`) and the rules that grant it (`purpose`, recorded on every live credential there: one
        ServiceAccount holds them all): the person's active credential is replaced (it retires after `grace`, never
        past its expiry, or is revoked now when `grace` is None). `record_delivered` then closes the action."""
        def work(tx: GroupTransaction) -> None:
            connection = tx.connection
            self._save_identity(connection, source, identity)
            self._save_access(connection, identity.id, cluster, scopes, kubeconfig)
            now = datetime.now(UTC)
            purpose_json = None if purpose is None else purpose_to_json(purpose)
            active = ACTIVE_CREDENTIALS.rows(connection, dict(person=identity.id, cluster=cluster))
            for credential_id, expires_at in active:
                if grace is None:
                    self._revoke(connection, [credential_id], reason, now)
                else:
                    UPDATE_CREDENTIAL.run(connection, dict(
                        credential_id=credential_id, state=CredentialState.RETIRING, revoke_reason=reason,
                        retire_at=retire_at(aware(expires_at), now, grace)))
            if purpose_json is not None and active:
                SET_PURPOSE.run(connection, dict(of_person=identity.id, on_cluster=cluster, purpose=purpose_json))
            INSERT_CREDENTIAL.run(connection, dict(
                person_id=identity.id, cluster=cluster, secret_name=token.secret_name, fingerprint=token.fingerprint,
                issued_at=utc(token.issued_at), expires_at=utc(token.expires_at), state=CredentialState.ACTIVE,
                jti=token.jti or None, purpose=purpose_json))

        self._write(work)

    def record_delivered(self, run_id: str | None, event: Event, intent_id: int | None, *,
                         moved_to: str | None = None) -> None:
        """A token action whose token `record_token` recorded, done: its event and the end of its intent.
        `moved_to`: the kubeconfig now delivered there instead of the place recorded (an old layout's)."""
        def work(tx: GroupTransaction) -> None:
            if moved_to is not None:
                MOVE_ACCESS.run(tx.connection, dict(of_person=event.person_id, on_cluster=event.cluster or "",
                                                     kubeconfig=moved_to))
            self._close(tx, run_id, event, intent_id)

        self._write(work)

    def record_delivery(self, run_id: str | None, source: str, identity: Identity, event: Event, kubeconfig: str,
                        intent_id: int | None, *, purpose: Purpose | None = None) -> None:
        """An action that grants access without a new token, done: the person, their access (`event.after`,
        delivered to `kubeconfig`), its event and the end of its intent. Every live credential there records
        `purpose`, when given."""
        def work(tx: GroupTransaction) -> None:
            self._save_identity(tx.connection, source, identity)
            self._save_access(tx.connection, event.person_id, event.cluster or "", event.after, kubeconfig)
            if purpose is not None:
                SET_PURPOSE.run(tx.connection, dict(of_person=event.person_id, on_cluster=event.cluster or "",
                                                     purpose=purpose_to_json(purpose)))
            self._close(tx, run_id, event, intent_id)

        self._write(work)

    def undo_credential(self, person_id: str, cluster: str, fingerprint: str, *, delivered: str | None) -> None:
        """A token recorded but never delivered: its credential is revoked (its Secret is then stale, and retired),
        and the credential it replaced is active again if that is the token delivered (fingerprint `delivered`)."""
        def work(tx: GroupTransaction) -> None:
            now = datetime.now(UTC)
            for row in self._live(tx, person_id, cluster):
                if row.fingerprint == fingerprint:
                    self._revoke_row(row, "undelivered", now)
                elif row.fingerprint == delivered and row.state == CredentialState.RETIRING:
                    row.state, row.retire_at, row.revoke_reason = CredentialState.ACTIVE, None, None
                tx.session.add(row)

        self._write(work)

    def record_revocation(self, run_id: str | None, event: Event, *, remove_access: bool,
                          secret_names: tuple[str, ...] | None = None, intent_id: int | None = None,
                          suspend: bool = False) -> list[str]:
        """Revoke the person's live credentials on `event.cluster` (all, or those bound to `secret_names`), forget
        their access there when `remove_access` (and the person with their last access), suspend it when `suspend`
        (idle: nothing is planned for it until `resume`), and record the event, naming the fingerprints revoked,
        with the end of its intent. The fingerprints revoked."""
        person_id, cluster = event.person_id, event.cluster or ""

        def work(tx: GroupTransaction) -> list[str]:
            connection = tx.connection
            whose = dict(person=person_id, cluster=cluster)
            if secret_names is None:
                rows = LIVE_CREDENTIALS.rows(connection, whose)
            else:  # a retirement: only the credentials bound to these Secrets (an IN list: through SQLAlchemy)
                rows = [tuple(row) for row in connection.execute(
                    LIVE_CREDENTIALS.statement.where(CREDENTIAL.c.secret_name.in_(secret_names)), whose)]
            now = datetime.now(UTC)
            self._revoke(connection, [credential_id for credential_id, _ in rows], event.reason, now)
            if remove_access:
                self._remove_access(connection, person_id, cluster)
            if suspend and tx.session.get(SuspensionRow, (person_id, cluster)) is None:
                tx.session.add(SuspensionRow(person_id=person_id, cluster=cluster, since=utc(now)))
            fingerprints = [fingerprint for _, fingerprint in rows]
            self._close(tx, run_id, replace(event, fingerprint=",".join(fingerprints) or None), intent_id)
            return fingerprints

        return self._write(work)

    def resume(self, run_id: str | None, event: Event) -> list[str]:
        """Lift the suspension of the person's access on `event.cluster`, or on every cluster when it is None, each
        with a `resume` event (`event.reason`: the operator's). The clusters resumed."""
        def work(tx: GroupTransaction) -> list[str]:
            query = select(SuspensionRow).where(SuspensionRow.person_id == event.person_id)
            if event.cluster is not None:
                query = query.where(SuspensionRow.cluster == event.cluster)
            rows = sorted(tx.session.exec(query).all(), key=lambda row: row.cluster)
            for row in rows:
                tx.session.delete(row)
                self._record(tx, run_id, replace(event, cluster=row.cluster))
            return [row.cluster for row in rows]

        return self._write(work)

    def save_cursors(self, source: str, cookies: Mapping[str, bytes | None]) -> None:
        """Where a source's watch stopped, per stream; None forgets a stream's cookie."""
        def work(tx: GroupTransaction) -> None:
            for kind, cookie in cookies.items():
                row = tx.session.get(WatchCursorRow, (source, kind))
                if cookie is None:
                    if row is not None:
                        tx.session.delete(row)
                    continue
                row = row or WatchCursorRow(source=source, kind=kind, cookie="", updated_at=datetime.now(UTC))
                row.cookie, row.updated_at = base64.b64encode(cookie).decode("ascii"), datetime.now(UTC)
                tx.session.add(row)

        self._write(work)

    def record_usage(self, days: Mapping[UsageKey, DayUsage], cursors: Mapping[str, bytes] | None = None) -> None:
        """Fold per-day use, aggregated from audit events, into what the ledger holds, in one transaction, with
        where each audit log file's follower stopped (`cursors`: path -> cursor, kept as the watch cursors of
        `AUDIT_FILES`), so a restart neither reads an event again nor skips one.
        Unfenced: use is what the API server saw, not a change syncd makes, so it is kept whoever holds the lock."""
        def work(tx: GroupTransaction) -> None:
            for key, day in days.items():
                row = tx.session.get(UsageDayRow, key)
                if row is not None:
                    merged = usage_from_row(row)[1]
                    merged.merge(day)
                    day = merged
                tx.session.merge(usage_row(key, day))
            for path, cursor in (cursors or {}).items():
                tx.session.merge(WatchCursorRow(source=AUDIT_FILES, kind=path, updated_at=datetime.now(UTC),
                                             cookie=base64.b64encode(cursor).decode("ascii")))

        self.database.write(work)

    def record_anomaly(self, event: Event) -> bool:
        """An anomaly in a credential's use (action `anomaly`, its kind as reason), chained like every event; False,
        and nothing written, when the same anomaly of the same token (`event.fingerprint`) is already recorded.
        Unfenced, like use."""
        def work(tx: GroupTransaction) -> bool:
            if event.fingerprint is not None and tx.session.exec(select(EventRow.seq).where(
                    EventRow.person_id == event.person_id, EventRow.action == event.action,
                    EventRow.reason == event.reason, EventRow.fingerprint == event.fingerprint)).first() is not None:
                return False
            self._record(tx, None, event)
            return True

        return self.database.write(work)

    def forget_usage(self, before: date) -> int:
        """Delete the use recorded for the days before `before` (retention); how many days of credentials."""
        def work(tx: GroupTransaction) -> int:
            return tx.session.execute(delete(UsageDayRow).where(UsageDayRow.day < before)).rowcount  # type: ignore[arg-type]

        return self.database.write(work)

    def confirm_rejected(self, run_id: str | None, fingerprints: Collection[str], at: datetime) -> None:
        """Revoked tokens the API server now rejects: each credential records when, with an event, in one
        transaction."""
        wanted = list(dict.fromkeys(fingerprints))

        def work(tx: GroupTransaction) -> None:
            connection = tx.connection
            found: dict[str, tuple] = {}
            for chunk in (wanted[i:i + ID_LIST_LIMIT] for i in range(0, len(wanted), ID_LIST_LIMIT)):
                for row in connection.execute(
                        select(CREDENTIAL.c.id, CREDENTIAL.c.person_id, CREDENTIAL.c.cluster, CREDENTIAL.c.fingerprint,
                               PERSON.c.username).join_from(CREDENTIAL, PERSON, isouter=True)
                        .where(CREDENTIAL.c.fingerprint.in_(chunk)).order_by(CREDENTIAL.c.id)):
                    found.setdefault(row.fingerprint, tuple(row))
            rejected = [found[fingerprint] for fingerprint in wanted if fingerprint in found]
            UPDATE_CREDENTIAL.run_many(connection, [dict(credential_id=credential_id, rejected_at=utc(at))
                                                    for credential_id, *_ in rejected])
            for _, person_id, cluster, fingerprint, username in rejected:
                self._record(tx, run_id, Event(person_id, username or person_id, "confirm-revocation",
                                              "token-rejected", cluster=cluster, fingerprint=fingerprint))

        if fingerprints:
            self._write(work)

    @staticmethod
    def _live(tx: GroupTransaction, person_id: str, cluster: str) -> list[CredentialRow]:
        return list(tx.session.exec(select(CredentialRow).where(
            CredentialRow.person_id == person_id, CredentialRow.cluster == cluster,
            CredentialRow.state.in_(LIVE))).all())  # type: ignore[attr-defined]

    @staticmethod
    def _revoke(connection: Connection, credential_ids: list[int], reason: str, now: datetime) -> None:
        if credential_ids:
            UPDATE_CREDENTIAL.run_many(connection, [dict(credential_id=credential_id, state=CredentialState.REVOKED,
                                                         revoked_at=now, revoke_reason=reason)
                                                    for credential_id in credential_ids])

    @staticmethod
    def _revoke_row(row: CredentialRow, reason: str, now: datetime) -> None:
        row.state = CredentialState.REVOKED
        row.revoked_at = now
        row.revoke_reason = reason

    @staticmethod
    def _save_identity(connection: Connection, source: str, identity: Identity) -> None:
        """Insert the person, or update what a source may change of them (their source and first sighting stay)."""
        now = utc(datetime.now(UTC))
        _upsert(connection, PERSON, ("id",), PERSON_CHANGES).run(connection, dict(
            id=identity.id, source=source, first_seen=now, username=identity.username, email=identity.email,
            display_name=identity.display_name, active=identity.active, groups=json.dumps(sorted(identity.groups)),
            attributes=json.dumps(identity.attributes, sort_keys=True), last_seen=now, removed_at=None))

    @staticmethod
    def _save_access(connection: Connection, person_id: str, cluster: str, scopes: frozenset, kubeconfig: str) -> None:
        now = utc(datetime.now(UTC))
        _upsert(connection, ACCESS, ("person_id", "cluster"), ACCESS_CHANGES).run(connection, dict(
            person_id=person_id, cluster=cluster, scopes=scopes_to_json(scopes), kubeconfig=kubeconfig,
            updated_at=now, granted_at=now))  # granted_at: a new access's only (no ACCESS_CHANGES)

    @staticmethod
    def _remove_access(connection: Connection, person_id: str, cluster: str) -> None:
        DELETE_ACCESS.run(connection, dict(person=person_id, cluster=cluster))
        if not ANY_ACCESS.rows(connection, dict(person=person_id)):
            UPDATE_PERSON.run(connection, dict(person=person_id, removed_at=utc(datetime.now(UTC))))


def _head(connection: Connection) -> tuple[int, str] | None:
    """The hash chain's head anchor (seq, hash), None before the first event."""
    rows = SELECT_HEAD.rows(connection, {})
    return rows[0] if rows else None  # type: ignore[return-value]


_UPSERTS: dict[tuple[str, str], Prepared] = {}


def _upsert(connection: Connection, table: Any, keys: tuple[str, ...], changes: tuple[str, ...]) -> Prepared:
    """This database's statement that inserts a row of `table`, or updates the `changes` columns of the row with
    the same `keys`: one statement, no read. Built once per database kind."""
    kind = connection.dialect.name
    statement = _UPSERTS.get((kind, table.name))
    if statement is None:
        inserting = (postgresql if kind == "postgresql" else sqlite).insert(table)
        statement = _UPSERTS[(kind, table.name)] = Prepared(inserting.on_conflict_do_update(
            index_elements=list(keys), set_={name: inserting.excluded[name] for name in changes}))
    return statement
