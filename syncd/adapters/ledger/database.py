"""The ledger's database: engine, transactions, the apply lock and the schema check. The SQLite and PostgreSQL
specifics live here; SQLAlchemy's exceptions become `LedgerError`."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, make_url, text
from sqlalchemy import event as sa_event
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import Session, create_engine

from syncd.adapters.ledger import schema
from syncd.adapters.ledger.group_commit import GroupCommit, GroupTransaction
from syncd.adapters.ledger.lease import ApplyLease
from syncd.adapters.ledger.prepared import Prepared
from syncd.errors import LedgerError, LedgerMissing

T = TypeVar("T")
APPLY_LOCK_KEY = 0x73796E6364  # "syncd"
CHAIN_LOCK_KEY = APPLY_LOCK_KEY + 1
SCHEMA_LOCK_KEY = APPLY_LOCK_KEY + 2
# A lock connection (or any other) whose server went silent fails within about 5 s rather than hanging.
POSTGRES_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 3,
                       "tcp_user_timeout": 5000}
READ_ONLY = "syncd_read_only"  # an execution option: the transaction only reads
ID_LIST_LIMIT = 500  # ids in one `IN (...)`: databases cap a query's parameters (PostgreSQL at 65,535)
CONNECTIONS = 5  # connections kept open by default (SQLAlchemy's); as many again may open while they are all busy
BEGIN_READ, BEGIN_WRITE = Prepared(text("BEGIN")), Prepared(text("BEGIN IMMEDIATE"))  # SQLite's


def _failed(doing: str, error: SQLAlchemyError) -> LedgerError:
    return LedgerError(f"ledger {doing} failed: {error.__class__.__name__}: {getattr(error, 'orig', None) or error}")


def _write_failed(error: SQLAlchemyError) -> LedgerError:
    return _failed("write", error)


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


class Database:
    """One ledger database. `migrate=True` (commands that write) brings its schema to this syncd's newest revision;
    `migrate=False` (read-only commands) only checks it, refusing a ledger that is missing, older or newer.
    `connections`: how many to keep open, at least the threads that use the ledger at once (an apply's workers
    each read it), so that none waits for a connection. `revisions`: the schema's revision before and after
    opening."""

    def __init__(self, url: str, *, migrate: bool = True, connections: int = CONNECTIONS) -> None:
        self.url = url
        self._apply_lease: ApplyLease | None = None  # while this process holds the apply lock (PostgreSQL)
        try:
            file = make_url(url).database if url.startswith("sqlite") else None
            if not migrate and file not in (None, "", ":memory:") and not Path(file).exists():  # type: ignore[arg-type]
                # Connecting would create it.
                raise LedgerMissing(f"there is no ledger at {self._safe_url()} yet", hint=schema.MISSING_HINT)
            self.engine = create_engine(url, connect_args=self._connect_args(url), pool_size=connections,
                                        max_overflow=connections)
            # SQLite has one writer at a time: this process's threads queue here rather than in SQLite's busy
            # handler, which sleeps up to 100 ms a try.
            self._one_at_a_time: AbstractContextManager = nullcontext()
            if url.startswith("sqlite"):
                self._one_at_a_time = threading.RLock()
                self._serialise_sqlite_writers()
            self._group_commit = GroupCommit(self.engine, lambda: self._one_at_a_time, _write_failed)
            with self.engine.begin() as connection:
                if self.engine.dialect.name == "postgresql":
                    # Processes starting together would race to migrate the same tables.
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
                self.revisions = schema.upgrade(connection) if migrate else schema.check(connection, self._safe_url())
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
        if url.startswith("sqlite"):
            return {"timeout": self._lock_timeout, "check_same_thread": False}
        return POSTGRES_KEEPALIVES if url.startswith("postgresql") else {}

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
            # A reader needs no write lock: in WAL mode it reads a snapshot while a writer goes on.
            (BEGIN_READ if connection.get_execution_options().get(READ_ONLY) else BEGIN_WRITE).run(connection, {})

    def _safe_url(self) -> str:
        if hasattr(self, "engine"):
            return self.engine.url.render_as_string(hide_password=True)
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except SQLAlchemyError:
            return "(unparsed URL)"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One ORM transaction, committed at the end. For the ledger's adapters only: no session leaves them."""
        try:
            with self._one_at_a_time, Session(self.engine, expire_on_commit=False) as session:
                yield session
                session.commit()
        except SQLAlchemyError as error:
            raise _write_failed(error) from None

    @contextmanager
    def read(self) -> Iterator[Session]:
        """One ORM transaction that only reads: a snapshot, taken without waiting for writers (on SQLite, without
        the write lock the writers queue for). For the read model."""
        try:
            with Session(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False) as session:
                yield session  # closing it ends the transaction; what it read stays readable
        except SQLAlchemyError as error:
            raise _failed("read", error) from None

    def read_rows(self, statement: Prepared, values: Mapping[str, Any]) -> list[tuple]:
        """One select's rows, read by a single statement outside any transaction (one statement reads one
        snapshot): for a hot path, without the session and the transaction `read` sets up and ends."""
        try:
            with self.engine.connect() as connection:
                return statement.rows(connection, values)
        except SQLAlchemyError as error:
            raise _failed("read", error) from None

    def write(self, work: Callable[[GroupTransaction], T]) -> T:
        """Run `work(transaction)` as one write transaction, committed together with other threads' writes queued
        meanwhile (one commit, one fsync for all); returns once its own writes are durable. The ledger's writer
        (the journal) writes only through here. See group_commit.py."""
        return self._group_commit.run(work)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One transaction without the ORM: cheaper for a statement or two on a hot path."""
        try:
            with self._one_at_a_time, self.engine.begin() as connection:
                yield connection
        except SQLAlchemyError as error:
            raise _write_failed(error) from None

    def lock_chain(self, transaction: GroupTransaction) -> None:
        """Queue the transaction behind every other writer of the hash chain until it commits."""
        if self.engine.dialect.name == "postgresql":
            transaction.connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})")

    def close(self) -> None:
        self._group_commit.close()
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the apply lock shared by every syncd process on this ledger: the daemon's jobs, SCIM pushes
        and an on-demand `syncd reconcile` never plan and apply at the same time. On PostgreSQL it is a fenced
        lease (`ApplyLease`): the journal's writes fail with `LeaseLost` once another process took it over."""
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
        lease = ApplyLease(self.engine, APPLY_LOCK_KEY, holder=f"{socket.gethostname()}:{os.getpid()}")
        self._apply_lease = lease
        try:
            yield
        finally:
            self._apply_lease = None
            lease.release()

    def check_lease(self) -> None:
        """`LeaseLost` once this process knows it lost the apply lock it holds (no database round trip); nothing on
        SQLite or outside the lock."""
        lease = self._apply_lease
        if lease is not None:
            lease.check_known()

    def fence(self, transaction: GroupTransaction) -> None:
        """In a journal write's transaction: fail it with `LeaseLost` once this process, holding the apply lock,
        lost it (see `ApplyLease.check`). Writes outside the lock, and every write on SQLite, go unfenced."""
        lease = self._apply_lease
        if lease is not None:
            lease.check(transaction.connection)
