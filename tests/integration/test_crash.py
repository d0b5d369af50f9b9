"""Crash safety: a run killed (SIGKILL) in the middle of external writes, however many actions are in flight, leaves
their intents behind; the next run reports each, finishes the work and leaves no stray token behind."""

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


def kill_in_the_middle_of_an_action(world: World, ledger: Path, in_flight: int = 1) -> list[tuple]:
    """Start a reconcile and SIGKILL it as soon as an action is done and `in_flight` others have begun but not
    finished."""
    run = subprocess.Popen([sys.executable, "-m", "syncd", "reconcile", "--config", str(world.config)],
                           env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_before = len(query(ledger, "SELECT id FROM intent WHERE state = 'done'"))
    deadline = time.monotonic() + 120
    try:
        while run.poll() is None and time.monotonic() < deadline:
            done = len(query(ledger, "SELECT id FROM intent WHERE state = 'done'"))
            if done > done_before and len(pending_intents(ledger)) >= in_flight:
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
    [killed_run] = {run_id for run_id, _, _ in interrupted}
    assert {action for _, _, action in interrupted} == {"issue"}

    run = world.reconcile()
    recovered = query(ledger, "SELECT username, reason FROM event WHERE action = 'recover'")
    assert sorted(recovered) == sorted([("", "interrupted-run")]
                                       + [(username, "interrupted-issue") for _, username, _ in interrupted])
    assert query(ledger, "SELECT result FROM run WHERE id = ?", killed_run) == [("interrupted",)]
    assert not pending_intents(ledger)
    assert {a["kind"] for a in run["actions"]} <= {"issue", "retire", "repair"}
    assert_converged(world, ledger, PEOPLE, [username for _, username, _ in interrupted])


def assert_converged(world: World, ledger: Path, people: list[dict], interrupted: list[str]) -> None:
    """Everyone holds exactly one working token, the one the ledger knows; no object in the cluster is one the
    ledger does not account for; the hash chain holds; nothing is left to do."""
    secrets = Counter(s["metadata"]["labels"]["syncd.io/person"] for s in world.ours("secrets"))
    assert secrets == Counter({person["id"]: 1 for person in people})
    known = set(query(ledger, "SELECT person_id, secret_name FROM credential WHERE state = 'active'"))
    assert {(s["metadata"]["labels"]["syncd.io/person"], s["metadata"]["name"]) for s in world.ours("secrets")} \
        == known, "a token Secret the ledger does not know"
    assert {sa["metadata"]["labels"]["syncd.io/person"] for sa in world.ours("serviceaccounts")} \
        == {person["id"] for person in people}
    assert Counter(b["metadata"]["labels"]["syncd.io/person"] for b in world.ours("rolebindings")) == Counter(
        {person["id"]: 1 for person in people})
    assert world.can(interrupted[0], "create", "deployments", world.ns("team-a")) == "yes"
    assert all(world.token_authenticates(world.token(username)) for username in interrupted)
    again = world.reconcile()
    assert again["actions"] == [] and again["writes"] == 0
    assert world.syncd("ledger", "verify", "--config", str(world.config)).returncode == 0


MANY = [{"id": f"{4000 + i}", "username": f"many{i:03d}", "groups": "developers"} for i in range(80)]


def test_a_run_killed_with_dozens_of_actions_in_flight_converges_on_the_next_run(world: World):
    ledger = world.directory / "ledger.db"
    world.configure(clusters=[cluster | {"concurrency": 32} for cluster in world.settings["clusters"]])
    world.write_people(*MANY)
    interrupted = kill_in_the_middle_of_an_action(world, ledger, in_flight=24)
    assert len(interrupted) >= 24, f"killed with {len(interrupted)} actions in flight"

    world.reconcile()
    recovered = recoveries(ledger)
    assert sorted(username for username, _, _ in recovered) == sorted(username for _, username, _ in interrupted)
    assert {result for _, _, result in recovered} <= {"finished", "rolled-back", "replanned"}
    assert not pending_intents(ledger)
    assert_converged(world, ledger, MANY, [username for _, username, _ in interrupted])


# Deterministic crash points: the syncd process stops itself (SIGSTOP) at a chosen moment; the test kills it there.
STOP_AT = {
    # Right after a token file is in place (before its kubeconfig is written).
    "token-written": """
from syncd.adapters import delivery
place = delivery.place
def place_then_stop(temporary, path):
    place(temporary, path)
    if path.name.endswith(".token"):
        stop()
delivery.place = place_then_stop
""",
    # Right before a token file is written: the token exists in the cluster, nobody holds it.
    "token-not-written": """
from syncd.adapters import delivery
place = delivery.place
def stop_then_place(temporary, path):
    if path.name.endswith(".token"):
        stop()
    place(temporary, path)
delivery.place = stop_then_place
""",
    # Between two actions: the first one recorded and its intent done, the second's intent begun with the first's
    # (one transaction for a block of lanes) but nothing of it written (concurrent workers: the second waits for the
    # first to end).
    "between-actions": """
import threading
from syncd.adapters.ledger import Journal
from syncd.runtime.apply import Applier
apply, done, begun, first_done = Applier._apply_action, Journal.record_delivered, [], threading.Event()
def done_and_tell(self, *args, **kwargs):
    done(self, *args, **kwargs)
    first_done.set()
def stop_before_the_second(self, *args, **kwargs):
    begun.append(1)
    if len(begun) == 2:
        first_done.wait()  # however long the first takes on a loaded machine (kill_at's deadline bounds it)
        stop()
    return apply(self, *args, **kwargs)
Applier._apply_action, Journal.record_delivered = stop_before_the_second, done_and_tell
""",
}
# SIGSTOP sent to this thread, not the process: a process-directed one is taken by whichever thread the kernel picks
# (the main thread, waiting for the workers), and on a loaded machine the worker that sent it went on for a while,
# past the point (a token file written after "token-not-written").
RUN_WITH_A_STOP = """
import signal, sys, threading
def stop():
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    threading.Event().wait()  # and should the stop still come late, this thread goes no further meanwhile
{hook}
from syncd.app.cli import main
main(sys.argv[1:])
"""


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def kill_at(world: World, point: str, *args: str) -> None:
    """Run `syncd reconcile ARGS`, wait until it stops itself at `point`, then SIGKILL it."""
    run = subprocess.Popen([sys.executable, "-c", RUN_WITH_A_STOP.format(hook=STOP_AT[point]), "reconcile",
                            "--config", str(world.config), *args],
                           env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while not stopped(run.pid):
            assert run.poll() is None, f"syncd ended (exit {run.returncode}) before {point}:\n{run.stderr.read()}"
            assert time.monotonic() < deadline, f"syncd did not reach {point}"
            time.sleep(0.01)
    finally:
        run.kill()
        run.wait(timeout=30)


def recoveries(ledger: Path) -> list[tuple]:
    return query(ledger, "SELECT username, reason, result FROM event WHERE action = 'recover' AND username != ''")


ALICE = {"id": "3001", "username": "alice", "groups": "developers"}
BOB = {"id": "3002", "username": "bob", "groups": "sre"}


def test_a_sweep_after_a_kill_once_a_joiners_token_is_delivered_keeps_it_working(world: World):
    ledger = world.directory / "ledger.db"
    world.write_people(BOB)
    world.reconcile()  # the ledger records someone: a sweep removes what nobody in it owns
    world.write_people(BOB, ALICE)
    kill_at(world, "token-written")
    token = world.token(ALICE["id"])

    sweep = world.reconcile("--sweep")
    assert sweep["actions"] == [], "the sweep removed what the interrupted issue made"
    assert recoveries(ledger) == [("alice", "interrupted-issue", "finished")]
    assert world.token_authenticates(token)
    assert world.token(ALICE["id"]) == token
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    assert world.reconcile()["actions"] == []


def test_a_sweep_after_a_kill_mid_refresh_keeps_the_new_token_working(world: World):
    ledger = world.directory / "ledger.db"
    world.set_policy(defaults={"token_ttl": "10m"})
    world.write_people(ALICE)
    world.reconcile()
    old = world.token(ALICE["id"])
    world.configure(tokens={"refresh_at": 0.0001})  # due at once
    kill_at(world, "token-written")
    new = world.token(ALICE["id"])
    assert new != old

    world.configure(tokens={"refresh_at": 0.8})
    sweep = world.reconcile("--sweep")
    assert sweep["actions"] == [], "the sweep retired the delivered token as stale"
    assert recoveries(ledger) == [("alice", "interrupted-refresh", "finished")]
    assert world.token_authenticates(new) and world.token_authenticates(old)  # the old one is in its grace
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"


def test_a_token_issued_but_never_delivered_is_rolled_back_and_issued_again(world: World):
    ledger = world.directory / "ledger.db"
    world.write_people(BOB)
    world.reconcile()
    world.write_people(BOB, ALICE)
    kill_at(world, "token-not-written")
    assert not (world.folder(ALICE["id"]) / "dev.token").exists()

    sweep = world.reconcile("--sweep")
    assert sorted((a["kind"], a["reason"]) for a in sweep["actions"]) == [("repair", "drift"), ("retire", "stale")]
    assert world.token_authenticates(world.token(ALICE["id"]))
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    assert recoveries(ledger) == [("alice", "interrupted-issue", "rolled-back")]
    assert len(world.ours("secrets", "3001")) == 1
    assert world.reconcile()["actions"] == []


def test_a_run_killed_between_two_actions_is_marked_interrupted(world: World):
    ledger = world.directory / "ledger.db"
    world.write_people(ALICE, BOB)
    kill_at(world, "between-actions")
    [(killed,)] = query(ledger, "SELECT id FROM run WHERE result = 'running'")
    [(_, second, _)] = pending_intents(ledger)  # begun, never applied
    assert len(world.ours("serviceaccounts")) == 1, "the second action wrote to the cluster"

    world.reconcile()
    assert query(ledger, "SELECT result FROM run WHERE id = ?", killed) == [("interrupted",)]
    assert query(ledger, "SELECT reason, username, result FROM event WHERE action = 'recover' ORDER BY seq") == [
        ("interrupted-run", "", "interrupted"), ("interrupted-issue", second, "replanned")]
    assert not pending_intents(ledger)
    log = world.syncd("ledger", "log", "--config", str(world.config)).stdout
    assert f"(interrupted-run) interrupted error=run {killed} of hr stopped before it finished" in log
    assert not query(ledger, "SELECT id FROM run WHERE result = 'running'")


def with_timeout(world: World, timeout: str) -> None:
    world.configure(clusters=[cluster | {"timeout": timeout} for cluster in world.settings["clusters"]])


def test_a_frozen_api_server_holds_a_run_no_longer_than_its_timeout_allows(world: World):
    with_timeout(world, "25s")  # long beside start-up noise: one wait must not become two (a retry)
    world.write_people(ALICE)
    with world.control_plane.frozen():
        started = time.monotonic()
        done = world.syncd("reconcile", "--config", str(world.config))
        took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert "cluster dev could not be read" in done.stderr
    assert took < 45, f"a frozen API server held the run {took:.0f} s with a 25 s timeout"
    assert world.reconcile()["actions"][0]["kind"] == "issue"  # nothing was left half done


def test_a_run_past_its_deadline_skips_what_it_has_not_read(world: World):
    world.configure(run_deadline="0s")
    world.write_people(ALICE)
    run = world.reconcile(expect=3)
    assert run["actions"] == [] and run["writes"] == 0
    assert "deadline passed" in world.last_stderr
