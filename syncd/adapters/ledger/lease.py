"""Leases on a PostgreSQL ledger: the fenced apply lock one process holds while it plans and applies, and the leader
lease naming the replica that runs the scheduled jobs. On SQLite one process per ledger is the supported shape: its
file lock is the apply lock and that process leads."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from syncd.core.leadership import LeaseRecord, after, decide, released
from syncd.errors import LeaseLost, LedgerError

if TYPE_CHECKING:
    from syncd.adapters.ledger.database import Database

HEARTBEAT = 1.0  # seconds between two checks of the lock connection and of the lease's epoch
# The server drops a lock connection whose peer went silent within about 5 s (TCP keepalives, unacknowledged data),
# which frees the lock for another process; the client side has the same bounds (Database's connect_args).
SERVER_KEEPALIVES = ("SET tcp_keepalives_idle = 2", "SET tcp_keepalives_interval = 1", "SET tcp_keepalives_count = 3",
                     "SET tcp_user_timeout = 5000")
TAKE_APPLY_LEASE = text(
    "INSERT INTO lease (name, epoch, holder) VALUES ('apply', 1, :holder) "
    "ON CONFLICT (name) DO UPDATE SET epoch = lease.epoch + 1, holder = excluded.holder RETURNING epoch")
APPLY_EPOCH = "SELECT epoch FROM lease WHERE name = 'apply'"


class ApplyLease:
    """The apply lock, held: PostgreSQL's session advisory lock on a connection of its own (processes queue on it)
    and the epoch this holder took in the `apply` lease row (the fence: every journal write checks it, see `check`).
    A heartbeat checks every `HEARTBEAT` that the lock connection lives and the epoch is still ours; once either
    fails the lease is lost for good and every later check raises `LeaseLost`."""

    def __init__(self, engine: Engine, key: int, holder: str) -> None:
        self.lost = threading.Event()
        self._stop = threading.Event()
        try:
            self.connection = engine.connect()
        except SQLAlchemyError as error:
            raise LedgerError(f"cannot take the apply lock: {error.__class__.__name__}") from None
        try:
            self.connection.execution_options(isolation_level="AUTOCOMMIT")
            for statement in SERVER_KEEPALIVES:
                self.connection.exec_driver_sql(statement)
            self.connection.exec_driver_sql(f"SELECT pg_advisory_lock({key})")
            self.key = key
            self.epoch: int = self.connection.execute(TAKE_APPLY_LEASE, {"holder": holder}).scalar_one()
        except SQLAlchemyError as error:
            self.connection.invalidate()
            self.connection.close()
            raise LedgerError(f"cannot take the apply lock: {error.__class__.__name__}") from None
        self._thread = threading.Thread(target=self._beat, name="apply-lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                epoch = self.connection.exec_driver_sql(APPLY_EPOCH).scalar_one_or_none()
            except SQLAlchemyError:
                epoch = None  # the lock connection is gone, and the lock with it
            if epoch != self.epoch:
                self.lost.set()
                return

    def check(self, connection: Connection) -> None:
        """In a write's transaction: raise `LeaseLost` unless the lease is still ours. The lease row stays
        share-locked until the transaction ends, so nobody takes the lease over between this check and the commit:
        a new holder's recovery sees every write this one committed, and none it did not."""
        if not self.lost.is_set():
            epoch = connection.exec_driver_sql(f"{APPLY_EPOCH} FOR SHARE").scalar_one_or_none()
            if epoch == self.epoch:
                return
            self.lost.set()
        self.check_known()

    def check_known(self) -> None:
        """Raise `LeaseLost` once this holder knows the lease is lost (its heartbeat or a write found it), without
        asking the database."""
        if self.lost.is_set():
            raise LeaseLost(f"lost the apply lock (epoch {self.epoch}): its connection died or another process took "
                            "it", hint="the holder now recovers this run's unfinished work")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            if self.lost.is_set():
                self.connection.invalidate()  # never back to the pool: whatever session state it had goes with it
            else:
                self.connection.exec_driver_sql(f"SELECT pg_advisory_unlock({self.key})")
            self.connection.close()
        except SQLAlchemyError:
            self.connection.invalidate()
            self.connection.close()


class LedgerLeaderLease:
    """The leader lease in the ledger database: each step is one transaction on the `leader` row, decided by the
    database's clock, so replicas' clocks need not agree. On SQLite the one process is always the leader."""

    backend = "ledger"

    def __init__(self, database: Database) -> None:
        self.database = database
        self.engine = database.engine
        self.shared = self.engine.dialect.name == "postgresql"

    def step(self, me: str, ttl: timedelta) -> LeaseRecord:
        """Acquire, renew or take over the lease, or follow its holder; the lease as it then stands."""
        if not self.shared:
            return LeaseRecord(me, None)
        try:
            with self.engine.begin() as connection:
                current, now = self._current(connection)
                record = after(current, decide(current, me, now), me, now, ttl)
                if record != current:
                    self._write(connection, record)
                return record
        except SQLAlchemyError as error:
            raise LedgerError(f"cannot read or renew the leader lease: {error.__class__.__name__}") from None

    def release(self, me: str) -> None:
        """Hand the lease over at once when stopping, if we hold it."""
        if not self.shared:
            return
        try:
            with self.engine.begin() as connection:
                current, now = self._current(connection)
                record = released(current, me, now)
                if record != current:
                    self._write(connection, record)
        except SQLAlchemyError:
            pass  # it expires on its own

    def close(self) -> None:
        self.database.close()

    @staticmethod
    def _current(connection: Connection) -> tuple[LeaseRecord, datetime]:
        connection.exec_driver_sql("INSERT INTO lease (name, epoch, holder) VALUES ('leader', 0, '') "
                                   "ON CONFLICT (name) DO NOTHING")
        row = connection.exec_driver_sql(
            "SELECT holder, expires_at, epoch, now() FROM lease WHERE name = 'leader' FOR UPDATE").one()
        return LeaseRecord(row[0], row[1], row[2]), row[3]

    @staticmethod
    def _write(connection: Connection, record: LeaseRecord) -> None:
        connection.execute(text("UPDATE lease SET holder = :holder, expires_at = :expires_at, epoch = :transitions "
                                "WHERE name = 'leader'"),
                           {"holder": record.holder, "expires_at": record.expires_at,
                            "transitions": record.transitions})
