"""Group commit: concurrent callers' write transactions made durable by one commit (one fsync for many).

A caller queues its work (a function of an ORM session) and waits (`Grouped`): the leader of a group runs the works
in queue order in one transaction, commits, then releases every caller with its result.
Should a work fail, the transaction is rolled back and the group run again, each work inside its own SAVEPOINT (the
failing one rolls back alone and its caller gets the exception; the others stay): a savepoint per work costs two
statements and the session's bookkeeping for every write, inside the write lock, to serve the rare write that fails.
A work may thus run twice; it reads and writes only the session. A caller returns only once its own writes are
committed, so each caller's writes stay in the order it made them, and events of one group chain in queue order."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from syncd.adapters.grouped import Grouped, Request
from syncd.errors import LedgerError

Work = Callable[[Session], Any]
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

    def run(self, work: Work) -> Any:
        """Run `work(session)` in a transaction, committed with whatever else is queued; its result once durable."""
        return self._grouped.run(work)

    def _commit(self, group: list[Write]) -> None:
        try:
            with self._one_at_a_time():
                if not self._together(group):
                    self._apart(group)
        except SQLAlchemyError as error:
            for write in group:
                write.error = write.error or self._failed(error)
        except BaseException:
            for write in group:
                write.error = write.error or LedgerError("ledger write interrupted before it was committed")
            raise

    def _together(self, group: list[Write]) -> bool:
        """The works in one transaction, committed; False, with nothing written, once one of them failed."""
        with Session(self._engine, expire_on_commit=False) as session:
            try:
                for write in group:
                    write.result = write.request(session)
                    session.flush()
                    # Each write sees the rows as the group left them, never an object an earlier one loaded.
                    session.expunge_all()
            except Exception:  # noqa: BLE001 - run again apart, where it fails alone
                session.rollback()
                return False
            session.commit()
        return True

    def _apart(self, group: list[Write]) -> None:
        """The works in one transaction, each inside its own savepoint: one that fails rolls back alone."""
        with Session(self._engine, expire_on_commit=False) as session:
            for write in group:
                try:
                    with session.begin_nested():
                        write.result = write.request(session)
                except SQLAlchemyError as error:
                    write.error = self._failed(error)
                except Exception as error:  # noqa: BLE001 - the caller's own exception, raised in its thread
                    write.error = error
                if write.error is not None:
                    session.info.clear()  # what the works cached of the transaction's state was rolled back
                session.expunge_all()
            session.commit()
