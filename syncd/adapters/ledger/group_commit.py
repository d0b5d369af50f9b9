"""Group commit: concurrent callers' write transactions made durable by one commit (one fsync for many).

A caller queues its work (a function of a `GroupTransaction`) and waits (`Grouped`): the leader of a group runs the
works in queue order in one transaction on the writer's connection, commits, then releases every caller with its
result. The writer's connection is kept from group to group; an ORM session is opened only for a work that asks for
one (the hot path's works run statements on the connection, see prepared.py).
Should a work fail, the transaction is rolled back and the group run again, each work inside its own SAVEPOINT (the
failing one rolls back alone and its caller gets the exception; the others stay): a savepoint per work costs two
statements for every write, inside the write lock, to serve the rare write that fails.
A work may thus run twice; it reads and writes only its transaction. A caller returns only once its own writes are
committed, so each caller's writes stay in the order it made them, and events of one group chain in queue order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from syncd.adapters.grouped import Grouped, Request
from syncd.errors import LedgerError


class GroupTransaction:
    """A group's write transaction, as each of its works sees it: `connection` runs statements, `session` is an ORM
    session in the same transaction (opened on first use), `info` holds what the works cache of the transaction's
    state (the hash chain's head)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.info: dict[str, Any] = {}
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            # Joined to the group's transaction (or to a work's savepoint): never commits it, rolls it back on error.
            self._session = Session(bind=self.connection, join_transaction_mode="rollback_only",
                                    expire_on_commit=False)
        return self._session

    def settle(self) -> None:
        """After each work: its ORM changes written, its objects forgotten, so that the next work sees the rows as
        the group left them, never an object an earlier one loaded."""
        if self._session is not None:
            self._session.flush()
            self._session.expunge_all()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


Work = Callable[[GroupTransaction], Any]
Write = Request[Work]


class GroupCommit:
    """`one_at_a_time`: held around each group's transaction (the database's own writer lock, if it has one);
    `failed`: what a SQLAlchemy error becomes for the caller."""

    def __init__(self, engine: Engine, one_at_a_time: Callable[[], AbstractContextManager],
                 failed: Callable[[SQLAlchemyError], LedgerError]) -> None:
        self._engine = engine
        self._one_at_a_time = one_at_a_time
        self._failed = failed
        self._grouped: Grouped[Work] = Grouped(self._commit)
        self._connection: Connection | None = None  # the writer's, kept between groups
        self._writer = threading.Lock()  # held while a leader or `close` uses it

    def run(self, work: Work) -> Any:
        """Run `work(transaction)`, committed with whatever else is queued; its result once durable."""
        return self._grouped.run(work)

    def close(self) -> None:
        """Give the writer's connection back (the next write opens another)."""
        with self._writer:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _commit(self, group: list[Write]) -> None:
        try:
            with self._writer, self._one_at_a_time():
                if self._connection is None:
                    self._connection = self._engine.connect()
                if not self._together(group, self._connection):
                    self._apart(group, self._connection)
        except SQLAlchemyError as error:
            self._drop_connection()  # it may be broken: the next group opens a new one
            for write in group:
                write.error = write.error or self._failed(error)
        except BaseException:
            self._drop_connection()
            for write in group:
                write.error = write.error or LedgerError("ledger write interrupted before it was committed")
            raise

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with suppress(SQLAlchemyError):  # the pool discards a connection it cannot roll back
                self._connection.close()
            self._connection = None

    @staticmethod
    def _together(group: list[Write], connection: Connection) -> bool:
        """The works in one transaction, committed; False, with nothing written, once one of them failed."""
        transaction = GroupTransaction(connection)
        try:
            with connection.begin() as begun:
                try:
                    for write in group:
                        write.result = write.request(transaction)
                        transaction.settle()
                except Exception:  # noqa: BLE001 - run again apart, where it fails alone
                    if begun.is_active:  # else a failed flush of the work's session rolled it back
                        begun.rollback()
                    return False
        finally:
            transaction.close()
        return True

    def _apart(self, group: list[Write], connection: Connection) -> None:
        """The works in one transaction, each inside its own savepoint: one that fails rolls back alone."""
        transaction = GroupTransaction(connection)
        with connection.begin():
            for write in group:
                try:
                    with connection.begin_nested():
                        try:
                            write.result = write.request(transaction)
                            transaction.settle()
                        finally:
                            transaction.close()  # its session, if any, joined this work's savepoint only
                except SQLAlchemyError as error:
                    write.error = self._failed(error)
                except Exception as error:  # noqa: BLE001 - the caller's own exception, raised in its thread
                    write.error = error
                if write.error is not None:
                    transaction.info.clear()  # what the works cached of the transaction's state was rolled back
