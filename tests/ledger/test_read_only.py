"""Commands that only read never create nor migrate a ledger: an older schema is refused, untouched, naming the
command that upgrades it; a missing ledger is reported, not created. `syncd ledger upgrade` migrates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from syncd.adapters.ledger import Database
from syncd.adapters.ledger.schema import FIRST_REVISION, alembic_config
from syncd.errors import LedgerSchemaUnknown
from tests.conftest import write_yaml
from tests.ledger.conftest import Ledger, record_events, tamper
from tests.ledger.test_schema import HEAD

READ_ONLY = [("ledger", "log"), ("ledger", "verify"), ("ledger", "export"), ("token", "list")]


def syncd(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    config = write_yaml(tmp_path / "syncd.yaml", {
        "policy": "policy.yaml", "ledger": {"url": url},
        "sources": [{"name": "hr", "type": "file", "path": "people.csv"}],
        "clusters": [{"name": "dev", "kubeconfig": "admin.kubeconfig"}],
    })
    return subprocess.run([sys.executable, "-m", "syncd", *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})


def downgraded(ledger_url: str) -> None:
    """A ledger as an older syncd left it: events, at the first revision."""
    with Ledger.open(ledger_url) as older:
        record_events(older)
        with older.database.engine.begin() as connection:
            command.downgrade(alembic_config(connection), FIRST_REVISION)


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_a_read_only_command_refuses_an_older_schema_untouched(ledger_url: str, tmp_path: Path, args: tuple):
    downgraded(ledger_url)
    done = syncd(tmp_path, ledger_url, *args)
    assert done.returncode == os.EX_TEMPFAIL, done.stderr
    assert f"at revision {FIRST_REVISION}, older than this syncd's {HEAD}" in done.stderr
    assert "run `syncd ledger upgrade`" in done.stderr
    engine = create_engine(ledger_url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == FIRST_REVISION
    engine.dispose()


def test_ledger_upgrade_migrates_and_says_from_what_to_what(ledger_url: str, tmp_path: Path):
    downgraded(ledger_url)
    done = syncd(tmp_path, ledger_url, "ledger", "upgrade")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ledger schema upgraded from revision {FIRST_REVISION} to {HEAD}"
    assert syncd(tmp_path, ledger_url, "ledger", "verify").returncode == 0
    again = syncd(tmp_path, ledger_url, "ledger", "upgrade")
    assert again.stdout.strip() == f"ledger schema at revision {HEAD}: up to date"


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_a_read_only_command_creates_no_ledger(ledger_url: str, tmp_path: Path, args: tuple):
    done = syncd(tmp_path, ledger_url, *args)
    assert done.returncode == os.EX_CONFIG, done.stderr
    assert "there is no ledger at" in done.stderr and "yet" in done.stderr
    assert not (tmp_path / "ledger.db").exists()
    if ledger_url.startswith("postgresql"):
        engine = create_engine(ledger_url)
        with engine.connect() as connection:
            assert inspect(connection).get_table_names() == []
        engine.dispose()


def test_a_read_only_open_refuses_a_newer_schema_untouched(ledger: Ledger, ledger_url: str):
    tamper(ledger, "UPDATE alembic_version SET version_num = 'from-the-future'")
    with pytest.raises(LedgerSchemaUnknown, match="from-the-future.*upgrade syncd"):
        Database(ledger_url, migrate=False)
