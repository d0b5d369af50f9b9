"""Every ledger backend passes the same contract: SQLite (the default) and PostgreSQL (for HA)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from syncd.adapters.ledger import Ledger
from tests.conftest import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger(ledger_url) as opened:
        yield opened
