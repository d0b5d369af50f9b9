"""Every ledger backend passes the same contract: SQLite (the default) and PostgreSQL (for HA)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from syncd.adapters.ledger import Database, Journal, ReadModel
from syncd.core.model import RoleKind, Scope
from syncd.ports import Event
from tests.conftest import PostgresServer

EDIT_A = Scope("a", RoleKind.CLUSTER_ROLE, "edit")


@dataclass
class Ledger:
    """One opened ledger as the runtime sees it: the journal writes, the read model reads."""

    database: Database
    journal: Journal
    read_model: ReadModel

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Ledger:
        database = Database(url, migrate=migrate)
        return cls(database, Journal(database), ReadModel(database))

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def record_events(ledger: Ledger, count: int = 3, run_id: str = "run1") -> None:
    for n in range(count):
        ledger.journal.record(run_id, Event(f"p{n}", f"user{n}", "issue", "joiner", cluster="dev",
                                            after=frozenset({EDIT_A})))


def tamper(ledger: Ledger, sql: str) -> None:
    with ledger.database.engine.begin() as connection:
        connection.execute(text(sql))


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger.open(ledger_url) as opened:
        yield opened
