"""Crash safety: a run killed (SIGKILL) in the middle of an external write leaves an intent behind; the next run
reports it, finishes the work and leaves no stray token behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.integration.conftest import World

PEOPLE = [{"id": f"{2000 + i}", "username": f"user{i:02d}", "groups": "developers"} for i in range(25)]


def query(ledger: Path, sql: str, *parameters: str) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql, parameters).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def pending_intents(ledger: Path) -> list[tuple]:
    return query(ledger, "SELECT run_id, username, action FROM intent WHERE state = 'pending'")


def kill_in_the_middle_of_an_action(world: World, ledger: Path) -> list[tuple]:
    """Start a reconcile and SIGKILL it as soon as an action has begun but not finished."""
    run = subprocess.Popen([sys.executable, "-m", "syncd", "reconcile", "--config", str(world.config)],
                           env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_before = len(query(ledger, "SELECT id FROM intent WHERE state = 'done'"))
    deadline = time.monotonic() + 120
    try:
        while run.poll() is None and time.monotonic() < deadline:
            done = len(query(ledger, "SELECT id FROM intent WHERE state = 'done'"))
            if done > done_before and pending_intents(ledger):
                os.kill(run.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if run.poll() is None:
            run.kill()
        run.wait(timeout=30)
    return pending_intents(ledger)


def test_a_run_killed_mid_apply_is_finished_by_the_next_run(world: World):
    ledger = world.directory / "ledger.db"
    world.write_people(*PEOPLE)
    # The kill may land between two actions; try again on the people still to do until it lands inside one.
    for _ in range(5):
        interrupted = kill_in_the_middle_of_an_action(world, ledger)
        if interrupted:
            break
    assert interrupted, "could not kill a run in the middle of an action"
    [(killed_run, username, action)] = interrupted
    assert action == "issue"

    run = world.reconcile()
    recovered = query(ledger, "SELECT username, reason FROM event WHERE action = 'recover'")
    assert recovered == [(username, "interrupted-issue")]
    assert query(ledger, "SELECT result FROM run WHERE id = ?", killed_run) == [("interrupted",)]
    assert not pending_intents(ledger)
    assert {a["kind"] for a in run["actions"]} <= {"issue", "retire", "repair"}

    # Converged: everyone holds exactly one working token, the one the ledger knows, and nothing is left to do.
    secrets = Counter(s["metadata"]["labels"]["syncd.io/person"] for s in world.ours("secrets"))
    assert secrets == Counter({person["id"]: 1 for person in PEOPLE})
    assert world.can(username, "create", "deployments", world.ns("team-a")) == "yes"
    assert all(world.token_authenticates(world.token(person["username"])) for person in PEOPLE)
    again = world.reconcile()
    assert again["actions"] == [] and again["writes"] == 0
    assert world.syncd("ledger", "verify", "--config", str(world.config)).returncode == 0
