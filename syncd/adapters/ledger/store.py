"""Reads and writes of the ledger. The SQLAlchemy adapter: its exceptions become `LedgerError`."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, make_url
from sqlalchemy import event as sa_event
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import aliased
from sqlmodel import Session, create_engine, exists, func, select

from syncd.adapters.ledger import schema
from syncd.adapters.ledger.tables import AccessRow, CredentialRow, EventRow, HeadRow, IntentRow, PersonRow, RunRow
from syncd.core.lifecycle import retire_at
from syncd.core.model import Identity, KnownAccess, KnownCredential, KnownPerson, RoleKind, Scope
from syncd.errors import LedgerError

GENESIS = "0" * 64
APPLY_LOCK_KEY = 0x73796E6364  # "syncd"
ID_LIST_LIMIT = 500  # ids in one `IN (...)`: databases cap a query's parameters (PostgreSQL at 65,535)
CHAIN_LOCK_KEY = APPLY_LOCK_KEY + 1
SCHEMA_LOCK_KEY = APPLY_LOCK_KEY + 2
LEFT_FOR_FULL_RUN = "left-for-full-run"  # what recovery does with work only a run that reads the source can settle


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def scopes_to_json(scopes: Iterable[Scope]) -> str:
    return json.dumps([[s.namespace, str(s.role_kind), s.role_name] for s in sorted(scopes)])


def scopes_from_json(text: str) -> frozenset[Scope]:
    return frozenset(Scope(ns, RoleKind(kind), name) for ns, kind, name in json.loads(text))


@dataclass(frozen=True)
class Event:
    """One ledger event as callers give it; the ledger adds sequence, time and hashes."""

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


def event_hash(row: EventRow) -> str:
    """Hash over every field of an event and the previous event's hash."""
    body = {
        "seq": row.seq, "run_id": row.run_id, "at": row.at.isoformat(), "person_id": row.person_id,
        "username": row.username, "cluster": row.cluster, "action": row.action, "reason": row.reason,
        "before": row.before, "after": row.after, "result": row.result, "error": row.error,
        "fingerprint": row.fingerprint, "prev_hash": row.prev_hash,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_failed(error: SQLAlchemyError) -> LedgerError:
    return LedgerError(f"ledger write failed: {error.__class__.__name__}: {getattr(error, 'orig', None) or error}")


def _locked(error: SQLAlchemyError) -> bool:
    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


def _holders(database: str | None) -> str:
    """Which other processes of this host have the SQLite file open, as `; open in pid N (command)`, if any."""
    if not database or database == ":memory:":
        return ""
    target = os.path.realpath(database)
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        if pid == os.getpid():
            continue
        try:
            if any(os.path.realpath(fd) == target for fd in fd_dir.iterdir()):
                command = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"pid {pid} ({command.strip()[:80]})")
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return f"; open in {', '.join(found)}" if found else ""


class Ledger:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = create_engine(url, connect_args=self._connect_args(url))
            if url.startswith("sqlite"):
                self._serialise_sqlite_writers()
            with self.engine.begin() as connection:
                if self.engine.dialect.name == "postgresql":
                    # Processes starting together would race to migrate the same tables.
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
                schema.upgrade(connection)
        except SQLAlchemyError as error:
            if _locked(error):
                raise LedgerError(
                    f"cannot open the ledger at {self._safe_url()}: the database is locked; another process held "
                    f"its write lock for more than {self._lock_timeout:g} s{_holders(self.engine.url.database)}",
                    hint="wait for the other syncd to finish, or stop it; check that no `syncd run` uses the same "
                    "file (ledger.url takes ?timeout=SECONDS to wait longer)") from None
            raise LedgerError(f"cannot open the ledger at {self._safe_url()}: {error.__class__.__name__}") from None

    @property
    def _lock_timeout(self) -> float:
        """How long a SQLite transaction waits for another process's write lock: the URL's `?timeout=`, or 30 s."""
        return float(make_url(self.url).query.get("timeout") or 30)  # type: ignore[arg-type]

    def _connect_args(self, url: str) -> dict:
        return {"timeout": self._lock_timeout, "check_same_thread": False} if url.startswith("sqlite") else {}

    def _serialise_sqlite_writers(self) -> None:
        # Every transaction takes the write lock at BEGIN, so two processes never interleave the hash chain.
        busy_ms = int(self._lock_timeout * 1000)

        @sa_event.listens_for(self.engine, "connect")
        def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None
            dbapi_connection.execute(f"PRAGMA busy_timeout={busy_ms}")
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

        @sa_event.listens_for(self.engine, "begin")
        def _begin(connection):  # type: ignore[no-untyped-def]
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") else "(unparsed URL)"

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
                session.commit()
        except SQLAlchemyError as error:
            raise _write_failed(error) from None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One transaction without the ORM: cheaper for a statement or two on a hot path."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except SQLAlchemyError as error:
            raise _write_failed(error) from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the apply lock shared by every syncd process on this ledger: the daemon's jobs, SCIM pushes
        and an on-demand `syncd reconcile` never plan and apply at the same time."""
        if self.engine.url.get_backend_name() == "sqlite":
            database = self.engine.url.database
            lock_path = f"{database}.lock" if database and database != ":memory:" else None
            if lock_path is None:
                yield
                return
            with open(lock_path, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        try:
            connection = self.engine.connect()
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({APPLY_LOCK_KEY})")
        except SQLAlchemyError as error:
            raise LedgerError(f"cannot take the apply lock: {error.__class__.__name__}") from None
        try:
            yield
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({APPLY_LOCK_KEY})")
            connection.close()

    # Runs

    def start_run(self, source: str, *, dry_run: bool, approved: bool = False) -> str:
        """`approved`: a human allowed the run's revocations (--allow-mass-revocation); the targeted safety window
        does not count them again."""
        run_id = uuid.uuid4().hex[:12]
        with self.session() as s:
            s.add(RunRow(id=run_id, source=source, started_at=_utc(datetime.now(UTC)), dry_run=dry_run,
                         approved=approved))
        return run_id

    def finish_run(self, run_id: str, result: str, summary: dict) -> None:
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is not None:
                run.finished_at = _utc(datetime.now(UTC))
                run.result = result
                run.summary = json.dumps(summary, sort_keys=True)
                head = s.get(HeadRow, 1)
                if head is not None:  # the chain's head as the run leaves it: `verify` finds it in the chain
                    run.head_seq, run.head_hash = head.seq, head.hash
                s.add(run)

    # Intents: crash safety around external writes

    def begin_intent(self, run_id: str | None, event: Event) -> int:
        with self.session() as s:
            row = IntentRow(run_id=run_id, person_id=event.person_id, username=event.username,
                            cluster=event.cluster or "", action=event.action, reason=event.reason,
                            started_at=datetime.now(UTC))
            s.add(row)
            s.flush()
            return row.id  # type: ignore[return-value]

    def end_intent(self, intent_id: int, state: str, *, session: Session | None = None) -> None:
        if session is None:
            with self.session() as s:
                return self.end_intent(intent_id, state, session=s)
        row = session.get(IntentRow, intent_id)
        if row is not None:
            row.state = state
            row.finished_at = datetime.now(UTC)
            session.add(row)
        return None

    def interrupt_dead_runs(self, run_id: str) -> list[RunRow]:
        """Mark every run still `running` but this one `interrupted`, each with a `recover` event. A run is
        `running` only while it holds the apply lock, so call this only while holding `exclusive()`: any other
        running run then belongs to a process that died or was killed."""
        with self.session() as s:
            dead = list(s.exec(select(RunRow).where(RunRow.result == "running", RunRow.id != run_id)).all())
            for run in dead:
                run.result, run.finished_at = "interrupted", _utc(datetime.now(UTC))
                s.add(run)
                self.record(run_id, Event("", "", "recover", "interrupted-run", result="interrupted",
                                          error=f"run {run.id} of {run.source} stopped before it finished"),
                            session=s)
        return dead

    def interrupted_intents(self) -> list[IntentRow]:
        """Intents a dead run left pending, and those a sweep left for a full run, oldest first. Call only while
        holding `exclusive()`."""
        with self.session() as s:
            rows = list(s.exec(select(IntentRow).where(IntentRow.state.in_(("pending", "deferred")))  # type: ignore[attr-defined]
                               .order_by(IntentRow.id)).all())  # type: ignore[arg-type]
        for row in rows:
            row.started_at = _aware(row.started_at)  # type: ignore[assignment]
        return rows

    def settle_intent(self, run_id: str | None, intent: IntentRow, result: str, *,
                      session: Session | None = None) -> None:
        """Close an interrupted intent with a `recover` event saying what became of its work (finished,
        rolled-back, replanned); `left-for-full-run` keeps it open as `deferred`, with one event however many
        sweeps leave it."""
        if session is None:
            with self.session() as s:
                return self.settle_intent(run_id, intent, result, session=s)
        row = session.get(IntentRow, intent.id)
        if row is None:
            return None
        deferred = result == LEFT_FOR_FULL_RUN
        if deferred and row.state == "deferred":
            return None
        row.state = "deferred" if deferred else "recovered"
        row.finished_at = None if deferred else datetime.now(UTC)
        session.add(row)
        self.record(run_id, Event(row.person_id, row.username, "recover", f"interrupted-{row.action}",
                                  cluster=row.cluster, result=result,
                                  error=f"run {row.run_id} stopped mid-action"), session=session)
        return None

    # What the planner needs

    def identities(self, source: str) -> tuple[Identity, ...]:
        """The source's people as runs last recorded them, with the attributes the policy matched on then."""
        with self.session() as s:
            rows = s.exec(select(PersonRow).where(PersonRow.source == source,
                                                  PersonRow.removed_at.is_(None))).all()  # type: ignore[union-attr]
        return tuple(Identity(row.id, row.username, row.email, row.display_name, frozenset(json.loads(row.groups)),
                              row.active, json.loads(row.attributes)) for row in rows)

    def known_people(self, ids: Collection[str] | None = None) -> dict[str, KnownPerson]:
        """Everyone the ledger holds, or only the people with these ids (past ID_LIST_LIMIT of them, read from
        everyone)."""
        if ids is not None and len(ids) > ID_LIST_LIMIT:
            wanted = set(ids)
            return {pid: person for pid, person in self.known_people().items() if pid in wanted}
        people_query = select(PersonRow).where(PersonRow.removed_at.is_(None))  # type: ignore[union-attr]
        access_query = select(AccessRow)
        credential_query = select(CredentialRow).where(
            CredentialRow.state.in_(("active", "retiring")))  # type: ignore[attr-defined]
        if ids is not None:
            people_query = people_query.where(PersonRow.id.in_(ids))  # type: ignore[attr-defined]
            access_query = access_query.where(AccessRow.person_id.in_(ids))  # type: ignore[attr-defined]
            credential_query = credential_query.where(CredentialRow.person_id.in_(ids))  # type: ignore[attr-defined]
        with self.session() as s:
            people = s.exec(people_query).all()
            access_rows = s.exec(access_query).all()
            credentials = s.exec(credential_query).all()
        active: dict[tuple[str, str], KnownCredential] = {}
        retiring: dict[tuple[str, str], list[KnownCredential]] = {}
        for row in sorted(credentials, key=lambda r: r.issued_at):
            known = KnownCredential(row.secret_name, row.fingerprint, _aware(row.issued_at), _aware(row.expires_at),
                                    _aware(row.retire_at))
            key = (row.person_id, row.cluster)
            if row.state == "active":
                active[key] = known
            else:
                retiring.setdefault(key, []).append(known)
        access: dict[str, dict[str, KnownAccess]] = {}
        for row in access_rows:
            key = (row.person_id, row.cluster)
            access.setdefault(row.person_id, {})[row.cluster] = KnownAccess(
                row.cluster, scopes_from_json(row.scopes), active.get(key), tuple(retiring.get(key, ())), row.kubeconfig
            )
        return {p.id: KnownPerson(p.id, p.source, p.username, access.get(p.id, {})) for p in people}

    # Writes, each together with its event

    def record(self, run_id: str | None, event: Event, *, session: Session | None = None) -> EventRow:
        if session is None:
            with self.session() as s:
                return self.record(run_id, event, session=s)
        if self.engine.dialect.name == "postgresql":
            # Writers queue here until commit, so two processes never chain onto the same last event.
            session.connection().exec_driver_sql(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})")
        # The chain goes on from its anchored head, not from whatever event is newest: a cut-off tail stays a
        # break in the chain, however many events follow.
        head = session.get(HeadRow, 1) or HeadRow(id=1, seq=0, hash=GENESIS)
        row = EventRow(
            seq=head.seq + 1, run_id=run_id, at=_utc(datetime.now(UTC)),
            person_id=event.person_id, username=event.username, cluster=event.cluster, action=event.action,
            reason=event.reason, before=scopes_to_json(event.before), after=scopes_to_json(event.after),
            result=event.result, error=event.error, fingerprint=event.fingerprint,
            prev_hash=head.hash, hash="",
        )
        row.hash = event_hash(row)
        head.seq, head.hash = row.seq, row.hash
        session.add(row)
        session.add(head)
        return row

    def head(self) -> tuple[int, str]:
        """The chain's head anchor: its newest event's sequence number and hash (0 and GENESIS when empty)."""
        with self.session() as s:
            head = s.get(HeadRow, 1)
        return (head.seq, head.hash) if head is not None else (0, GENESIS)

    def last_seq(self) -> int:
        """The newest event's sequence number (0 when there is none): a mark for `source_changed_since`."""
        with self.session() as s:
            return s.exec(select(func.max(EventRow.seq))).one() or 0

    def source_changed_since(self, source: str, seq: int) -> bool:
        """Whether a run of this source changed anyone's access after the mark (held actions and confirmations
        change nothing)."""
        with self.session() as s:
            after_mark = EventRow.seq > seq  # type: ignore[operator]
            query = (select(EventRow.seq).join(RunRow, EventRow.run_id == RunRow.id)  # type: ignore[arg-type]
                     .where(RunRow.source == source, after_mark, EventRow.result != "held",
                            EventRow.action != "confirm-revocation").limit(1))
            return s.exec(query).first() is not None

    def record_holds(self, run_id: str | None, held: Collection[Event]) -> int:
        """Record held actions that are news: a person and cluster whose latest event already holds the same
        action for the same reason keep it, however many runs go on holding it. How many were written."""
        if not held:
            return 0
        latest: dict[tuple[str, str | None], tuple[str, str, str]] = {}
        people = sorted({event.person_id for event in held})
        with self.session() as s:
            for chunk in (people[i:i + ID_LIST_LIMIT] for i in range(0, len(people), ID_LIST_LIMIT)):
                last_seqs = (select(func.max(EventRow.seq))
                             .where(EventRow.person_id.in_(chunk))  # type: ignore[attr-defined]
                             .group_by(EventRow.person_id, EventRow.cluster))  # type: ignore[arg-type]
                for row in s.exec(select(EventRow).where(EventRow.seq.in_(last_seqs))):  # type: ignore[union-attr]
                    latest[(row.person_id, row.cluster)] = (row.action, row.reason, row.result)
            news = [e for e in held if latest.get((e.person_id, e.cluster)) != (e.action, e.reason, "held")]
            for event in news:
                self.record(run_id, event, session=s)
        return len(news)

    def held_revocations(self, source: str) -> frozenset[str]:
        """People of this source with a revocation held on some cluster and nothing recorded for them there since:
        they wait for the hold to end (or a human)."""
        later = aliased(EventRow)
        superseded = exists().where(later.person_id == EventRow.person_id, later.cluster == EventRow.cluster,
                                    later.seq > EventRow.seq)  # type: ignore[operator]
        with self.session() as s:
            query = (select(EventRow.person_id).join(RunRow, EventRow.run_id == RunRow.id)  # type: ignore[arg-type]
                     .where(EventRow.result == "held", EventRow.action == "revoke", RunRow.source == source,
                            ~superseded).distinct())
            return frozenset(s.exec(query).all())

    def save_identity(self, session: Session, source: str, identity: Identity) -> None:
        now = _utc(datetime.now(UTC))
        row = session.get(PersonRow, identity.id)
        if row is None:
            row = PersonRow(id=identity.id, source=source, username=identity.username, first_seen=now, last_seen=now)
        row.username = identity.username
        row.email = identity.email
        row.display_name = identity.display_name
        row.active = identity.active
        row.groups = json.dumps(sorted(identity.groups))
        row.attributes = json.dumps(identity.attributes, sort_keys=True)
        row.last_seen = now
        row.removed_at = None
        session.add(row)

    def save_access(self, session: Session, person_id: str, cluster: str, scopes: frozenset[Scope],
                    kubeconfig: str) -> None:
        row = session.get(AccessRow, (person_id, cluster)) or AccessRow(
            person_id=person_id, cluster=cluster, updated_at=_utc(datetime.now(UTC))
        )
        row.scopes = scopes_to_json(scopes)
        row.kubeconfig = kubeconfig
        row.updated_at = _utc(datetime.now(UTC))
        session.add(row)

    def add_credential(self, session: Session, person_id: str, cluster: str, secret_name: str, fingerprint: str,
                       issued_at: datetime, expires_at: datetime) -> None:
        session.add(CredentialRow(
            person_id=person_id, cluster=cluster, secret_name=secret_name, fingerprint=fingerprint,
            issued_at=_utc(issued_at), expires_at=_utc(expires_at),
        ))

    def replace_credential(self, session: Session, person_id: str, cluster: str, *, grace: timedelta | None,
                           reason: str) -> list[CredentialRow]:
        """The person's active credential is replaced: it retires after `grace` (never past its expiry),
        or is revoked now when `grace` is None."""
        rows = session.exec(select(CredentialRow).where(
            CredentialRow.person_id == person_id, CredentialRow.cluster == cluster, CredentialRow.state == "active",
        )).all()
        now = datetime.now(UTC)
        for row in rows:
            if grace is None:
                self._revoke_row(row, reason, now)
            else:
                row.state = "retiring"
                row.retire_at = retire_at(_aware(row.expires_at), now, grace)
                row.revoke_reason = reason
            session.add(row)
        return list(rows)

    @staticmethod
    def _revoke_row(row: CredentialRow, reason: str, now: datetime) -> None:
        row.state = "revoked"
        row.revoked_at = now
        row.revoke_reason = reason

    def undo_credential(self, session: Session, person_id: str, cluster: str, fingerprint: str, *,
                        delivered: str | None) -> None:
        """A token recorded but never delivered: its credential is revoked (its Secret is then stale, and retired),
        and the credential it replaced is active again if that is the token delivered (fingerprint `delivered`)."""
        rows = session.exec(select(CredentialRow).where(
            CredentialRow.person_id == person_id, CredentialRow.cluster == cluster,
            CredentialRow.state.in_(("active", "retiring")),  # type: ignore[attr-defined]
        )).all()
        now = datetime.now(UTC)
        for row in rows:
            if row.fingerprint == fingerprint:
                self._revoke_row(row, "undelivered", now)
            elif row.fingerprint == delivered and row.state == "retiring":
                row.state, row.retire_at, row.revoke_reason = "active", None, None
            session.add(row)

    def revoke_credentials(self, session: Session, person_id: str, cluster: str, *, reason: str,
                           secret_names: tuple[str, ...] | None = None) -> list[CredentialRow]:
        """Mark the person's live credentials on a cluster revoked: all of them, or those bound to `secret_names`."""
        query = select(CredentialRow).where(
            CredentialRow.person_id == person_id, CredentialRow.cluster == cluster,
            CredentialRow.state.in_(("active", "retiring")),  # type: ignore[attr-defined]
        )
        if secret_names is not None:
            query = query.where(CredentialRow.secret_name.in_(secret_names))  # type: ignore[attr-defined]
        rows = session.exec(query).all()
        now = datetime.now(UTC)
        for row in rows:
            self._revoke_row(row, reason, now)
            session.add(row)
        return list(rows)

    def remove_access(self, session: Session, person_id: str, cluster: str) -> None:
        row = session.get(AccessRow, (person_id, cluster))
        if row is not None:
            session.delete(row)
        remaining = session.exec(
            select(AccessRow).where(AccessRow.person_id == person_id, AccessRow.cluster != cluster)
        ).first()
        person = session.get(PersonRow, person_id)
        if person is not None and remaining is None:
            person.removed_at = _utc(datetime.now(UTC))
            session.add(person)

    def confirm_rejected(self, run_id: str | None, fingerprint: str, at: datetime) -> None:
        with self.session() as s:
            row = s.exec(select(CredentialRow).where(CredentialRow.fingerprint == fingerprint)).first()
            if row is None:
                return
            row.rejected_at = _utc(at)
            s.add(row)
            person = s.get(PersonRow, row.person_id)
            self.record(run_id, Event(row.person_id, person.username if person else row.person_id,
                                      "confirm-revocation", "token-rejected", cluster=row.cluster,
                                      fingerprint=fingerprint), session=s)

    # Reading the log

    def events(self, *, person: str | None = None, run_id: str | None = None, limit: int | None = None
               ) -> list[EventRow]:
        with self.session() as s:
            query = select(EventRow).order_by(EventRow.seq)  # type: ignore[arg-type]
            if person is not None:
                query = query.where((EventRow.person_id == person) | (EventRow.username == person))
            if run_id is not None:
                query = query.where(EventRow.run_id == run_id)
            rows = list(s.exec(query).all())
        for row in rows:
            row.at = _aware(row.at)
        return rows[-limit:] if limit else rows

    def credentials(self, *, include_revoked: bool = False) -> list[tuple[CredentialRow, str, frozenset[Scope]]]:
        """Credentials with their owner's username and current scopes on that cluster, oldest first."""
        with self.session() as s:
            query = select(CredentialRow, PersonRow).join(PersonRow).order_by(CredentialRow.id)  # type: ignore[arg-type]
            if not include_revoked:
                query = query.where(CredentialRow.state != "revoked")
            rows = s.exec(query).all()
            scopes = {(a.person_id, a.cluster): scopes_from_json(a.scopes) for a in s.exec(select(AccessRow))}
        return [(cred, person.username, scopes.get((cred.person_id, cred.cluster), frozenset()))
                for cred, person in rows]

    def credential_holders(self, source: str) -> int:
        """How many people of this source hold a live credential."""
        with self.session() as s:
            return s.exec(select(func.count(func.distinct(CredentialRow.person_id)))
                          .join(PersonRow, PersonRow.id == CredentialRow.person_id)  # type: ignore[arg-type]
                          .where(PersonRow.source == source, PersonRow.removed_at.is_(None),  # type: ignore[union-attr]
                                 CredentialRow.state == "active")).one()

    def recent_revocations(self, source: str, since: datetime) -> int:
        """How many credential holders runs of this source revoked since then. Held revocations and people who
        held no credential do not count; nor does anything up to and including a run a human allowed
        (--allow-mass-revocation): they saw what was revoked, and the count starts afresh."""
        with self.session() as s:
            approved_at = _aware(s.exec(select(func.max(RunRow.started_at)).where(
                RunRow.source == source, RunRow.approved.is_(True))).one())  # type: ignore[attr-defined]
            since = max(_utc(since), approved_at) if approved_at is not None else _utc(since)
            query = (select(EventRow.person_id).join(RunRow, EventRow.run_id == RunRow.id)  # type: ignore[arg-type]
                     .where(RunRow.source == source, RunRow.approved.is_(False),  # type: ignore[attr-defined]
                            EventRow.action == "revoke", EventRow.result == "ok",
                            EventRow.fingerprint.is_not(None),  # type: ignore[union-attr]
                            EventRow.at >= since).distinct())
            return len(s.exec(query).all())

    def runs(self) -> list[RunRow]:
        with self.session() as s:
            return list(s.exec(select(RunRow).order_by(RunRow.started_at)).all())  # type: ignore[arg-type]

    def verify(self, anchor: tuple[int, str] | None = None) -> str | None:
        """What is wrong with the event chain, or None when it holds: every link and hash, the chain's end at its
        head anchor, each finished run's recorded head in the chain, and `anchor` (seq, hash: a head kept outside
        the database) in the chain."""
        with self.session() as s:
            head = s.get(HeadRow, 1)
            runs = s.exec(select(RunRow.id, RunRow.head_seq, RunRow.head_hash)
                          .where(RunRow.head_seq.is_not(None))).all()  # type: ignore[union-attr]
            # Each point some record outside the chain says the chain passed through, with who says so.
            expected: dict[int, list[tuple[str, str]]] = {}
            for run_id, seq, hash_ in runs:
                expected.setdefault(seq, []).append((hash_, f"run {run_id} finished at event {seq}"))
            if anchor is not None:
                expected.setdefault(anchor[0], []).append((anchor[1], f"the anchor given is event {anchor[0]}"))
            previous, last_seq = GENESIS, 0
            for row in s.exec(select(EventRow).order_by(EventRow.seq)):  # type: ignore[arg-type]
                if row.prev_hash != previous or event_hash(row) != row.hash:
                    return f"the hash chain breaks at event {row.seq}"
                for hash_, claim in expected.pop(row.seq or 0, ()):
                    if hash_ != row.hash:
                        return f"{claim}, whose hash differs from the chain's"
                previous, last_seq = row.hash, row.seq or 0
        if head is None:
            return "the ledger's head anchor is missing"
        if head.seq > last_seq:
            missing = f"event {head.seq} is" if head.seq == last_seq + 1 else f"events {last_seq + 1} to {head.seq} are"
            return f"{missing} missing: the chain ends before its head anchor"
        if (head.seq, head.hash) != (last_seq, previous):
            return f"the chain ends at event {last_seq}, which its head anchor (event {head.seq}) does not match"
        for seq, claims in sorted(expected.items()):
            if seq > 0 or claims[0][0] != GENESIS:
                return f"{claims[0][1]}, which the chain lacks (it ends at event {last_seq})"
        return None

    # Health and gauges for the daemon

    def ping(self) -> None:
        """Raise `LedgerError` unless the database answers."""
        with self.session() as s:
            s.exec(select(RunRow.id).limit(1)).all()  # reads at most one row, however long the history

    def credential_states(self) -> dict[str, int]:
        """How many credentials are in each state (active, retiring, revoked)."""
        with self.session() as s:
            rows = s.exec(select(CredentialRow.state, func.count()).group_by(CredentialRow.state)).all()
        return {state: count for state, count in rows}
