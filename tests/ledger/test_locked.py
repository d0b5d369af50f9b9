"""A SQLite ledger another process holds locked: `syncd` says so, names the holder and what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from syncd.adapters.ledger import Database
from tests.conftest import write_yaml

HOLD_THE_WRITE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_locked_ledger_says_it_is_locked_by_whom_and_what_to_do(tmp_path: Path):
    database = tmp_path / "ledger.db"
    Database(f"sqlite:///{database}").close()
    config = write_yaml(tmp_path / "syncd.yaml", {
        "policy": "policy.yaml",
        "ledger": {"url": "sqlite:///ledger.db?timeout=1"},
        "sources": [{"name": "hr", "type": "file", "path": "people.csv"}],
        "clusters": [{"name": "dev", "kubeconfig": "admin.kubeconfig"}],
    })
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_WRITE_LOCK, str(database)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        done = subprocess.run([sys.executable, "-m", "syncd", "ledger", "log", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    finally:
        holder.communicate("", timeout=30)
    assert done.returncode == os.EX_TEMPFAIL, done.stderr
    assert "the database is locked" in done.stderr
    assert f"pid {holder.pid} " in done.stderr
    assert "wait for the other syncd to finish, or stop it" in done.stderr
