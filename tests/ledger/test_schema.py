"""The schema is kept by migrations, on every backend: they build exactly the tables the code declares, and a
ledger made before migrations existed is adopted with its history intact."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

from syncd.adapters.ledger.schema import FIRST_REVISION, MIGRATIONS, alembic_config
from syncd.errors import LedgerSchemaUnknown
from tests.ledger.conftest import Ledger, record_events, tamper

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


def revision(ledger: Ledger) -> str | None:
    with ledger.database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_a_new_ledger_is_at_the_newest_revision(ledger: Ledger):
    assert revision(ledger) == HEAD


def test_migrations_build_the_declared_tables(ledger: Ledger):
    # A change to the tables without a migration shows up here as a difference.
    with ledger.database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []


def test_reopening_changes_nothing(ledger_url: str):
    with Ledger.open(ledger_url) as first:
        record_events(first)
    with Ledger.open(ledger_url) as again:
        assert revision(again) == HEAD
        assert [e.seq for e in again.read_model.events()] == [1, 2, 3]


def test_a_ledger_made_before_migrations_is_adopted(ledger_url: str):
    engine = create_engine(ledger_url)
    with engine.begin() as connection:  # the tables of the first revision, without Alembic's own
        command.upgrade(alembic_config(connection), FIRST_REVISION)
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text("INSERT INTO run (id, source, started_at, dry_run, result, summary) "
                                "VALUES ('old', 'hr', '2026-01-01 00:00:00', false, 'ok', '{}')"))
    engine.dispose()
    with Ledger.open(ledger_url) as adopted:
        assert revision(adopted) == HEAD
        assert [run.id for run in adopted.read_model.runs()] == ["old"]
        record_events(adopted)
        assert adopted.read_model.verify() is None


def test_an_upgrade_anchors_the_head_of_the_chain_it_finds(ledger_url: str):
    with Ledger.open(ledger_url) as first:
        record_events(first)
        kept = first.read_model.head()
        with first.database.engine.begin() as connection:  # as the first revision left it: events, no head anchor
            command.downgrade(alembic_config(connection), FIRST_REVISION)
    with Ledger.open(ledger_url) as upgraded:
        assert upgraded.read_model.head() == kept and upgraded.read_model.verify() is None
        record_events(upgraded, count=1)
        assert upgraded.read_model.verify() is None and upgraded.read_model.head()[0] == 4


def test_a_ledger_from_a_newer_syncd_is_refused_untouched(ledger_url: str):
    with Ledger.open(ledger_url) as first:
        record_events(first)
        tamper(first, "UPDATE alembic_version SET version_num = 'from-the-future'")
    with pytest.raises(LedgerSchemaUnknown, match="from-the-future.*upgrade syncd"):
        Ledger.open(ledger_url)
    engine = create_engine(ledger_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM event")).scalar() == 3
    engine.dispose()
