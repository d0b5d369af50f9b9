"""Several `syncd run` replicas on one PostgreSQL ledger and one control plane: a holder that loses the apply lock
stops and nobody is issued twice; one leader runs the scheduled jobs and a follower takes over when it dies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from syncd.adapters.ledger.database import APPLY_LOCK_KEY
from tests.conftest import PostgresServer
from tests.integration.conftest import World

pytestmark = pytest.mark.kube
# Queries below are built from constants and values the ledger gave back, not from input.
# ruff: noqa: S608

PEOPLE = [{"id": f"{4000 + i}", "username": f"ha{i:02d}", "groups": "developers"} for i in range(40)]
APPLY_LOCK_ROW = (f"locktype = 'advisory' AND classid = {APPLY_LOCK_KEY >> 32} "
                  f"AND objid = {APPLY_LOCK_KEY & 0xFFFFFFFF} AND objsubid = 1")


@pytest.fixture
def ledger(world: World, postgres: PostgresServer) -> Iterator[Engine]:
    """The world's ledger on a fresh PostgreSQL database, and a connection pool to look into it."""
    url = postgres.new_database()
    world.configure(ledger={"url": url})
    engine = create_engine(url, pool_pre_ping=True)  # it outlives a restart of PostgreSQL
    yield engine
    engine.dispose()


def query(ledger: Engine, sql: str) -> list:
    with ledger.connect() as connection:
        return list(connection.execute(text(sql)))


def wait_for(check, what: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return result


def reconcile(world: World) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "syncd", "reconcile", "--config", str(world.config), "--output",
                             "json"], env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def take_over(world: World, ledger: Engine, a: subprocess.Popen) -> tuple[str, subprocess.Popen]:
    """With process `a` mid-run, frozen meanwhile: a `syncd reconcile` b queues for the apply lock, a's lock
    connection is terminated, b takes the lock, and a resumes knowing nothing of it. a's run id, and b."""
    a.send_signal(signal.SIGSTOP)
    try:
        [(a_run,)] = query(ledger, "SELECT id FROM run WHERE result = 'running'")
        [(holder,)] = query(ledger, f"SELECT pid FROM pg_locks WHERE {APPLY_LOCK_ROW} AND granted")
        b = reconcile(world)
        wait_for(lambda: query(ledger, f"SELECT pid FROM pg_locks WHERE {APPLY_LOCK_ROW} AND NOT granted"),
                 "b queues for the apply lock")
        query(ledger, f"SELECT pg_terminate_backend({holder})")
        wait_for(lambda: query(ledger, f"SELECT pid FROM pg_locks WHERE {APPLY_LOCK_ROW} AND granted "
                                       f"AND pid <> {holder}"), "b takes the apply lock")
    finally:
        a.send_signal(signal.SIGCONT)
    return a_run, b


def test_a_holder_that_lost_the_apply_lock_stops_and_nobody_is_issued_twice(world: World, ledger: Engine,
                                                                            start_daemon):
    world.write_people(*PEOPLE)
    # One action at a time, so that a is still mid-run when it is frozen (with a pool it may finish first).
    world.configure(clusters=[cluster | {"concurrency": 1} for cluster in world.settings["clusters"]])
    a = start_daemon(jobs={"reconcile": {"every": "1h"}})  # its first reconcile issues everyone
    wait_for(lambda: query(ledger, "SELECT count(*) FROM event WHERE action = 'issue'")[0][0] >= 2,
             "a's run is under way")
    a_run, b = take_over(world, ledger, a.process)
    stdout, stderr = b.communicate(timeout=300)
    assert b.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["runs"][0]["result"] in ("ok", "no-op")

    # a stops before its next write: its run is recorded lost-lease, and it issues nobody b issued.
    wait_for(lambda: query(ledger, f"SELECT result FROM run WHERE id = '{a_run}'")[0][0] == "lost-lease",
             "a records its run lost-lease")
    assert any(e.get("event") == "stop a run that lost the apply lock" for e in a.log_events())
    a.assert_alive()
    # Each person is issued once: by a run's issue; or by one of a's actions in flight (concurrent apply has several),
    # which b's recovery kept (finished), or rolled back and b then repaired with a token of its own.
    issued = Counter(person for (person,) in query(
        ledger, "SELECT person_id FROM event WHERE (action IN ('issue', 'repair') AND result = 'ok') "
                "OR (action = 'recover' AND result = 'finished')"))
    assert issued == Counter({p["id"]: 1 for p in PEOPLE})
    active = Counter(person for (person,) in query(ledger, "SELECT person_id FROM credential WHERE state = 'active'"))
    assert active == Counter({p["id"]: 1 for p in PEOPLE})
    verify = world.syncd("ledger", "verify", "--config", str(world.config))
    assert verify.returncode == 0 and "hash chain intact" in verify.stdout, verify.stdout + verify.stderr
    assert world.can("ha39", "create", "deployments", world.ns("team-a")) == "yes"


def test_one_leader_runs_the_schedules_and_a_follower_takes_over_when_it_dies(world: World, ledger: Engine,
                                                                              start_daemon):
    world.write_people(PEOPLE[0])
    settings = {"jobs": {"reconcile": {"every": "1h"}, "sweep": {"every": "1s"}}, "leader": {"lease": "3s"}}
    a = start_daemon(**settings)
    b = start_daemon(**settings)
    _, a_ready = a.get_json("/readyz")
    assert a_ready["leader"]["role"] == "leader" and a_ready["leader"]["backend"] == "ledger"
    _, b_ready = b.get_json("/readyz")
    assert b_ready["leader"] | {"id": None} == {"backend": "ledger", "holder": a_ready["leader"]["id"],
                                                "id": None, "role": "follower"}
    a.wait_until(lambda: (a.metric("syncd_runs_total", job="sweep", source="hr", result="no-op") or 0) >= 3,
                 "the leader sweeps on its schedule")
    assert a.metric("syncd_leader", backend="ledger") == 1 and b.metric("syncd_leader", backend="ledger") == 0
    # The follower stands by: no scheduled job ran there, not even the reconcile at start.
    assert not [e for e in b.log_events() if e.get("event") == "finish a run"]

    a.process.kill()
    a.process.wait(timeout=30)
    # Within the lease (3 s) and a job interval, and some slack for a loaded machine; benchmarks/ times it.
    b.wait_until(lambda: (b.metric("syncd_runs_total", job="sweep", source="hr", result="no-op") or 0) >= 1,
                 "the follower takes over and runs the next scheduled job", timeout=30)
    assert b.get_json("/readyz")[1]["leader"]["role"] == "leader"
    assert b.metric("syncd_leader", backend="ledger") == 1
    b.wait_until(lambda: b.metric("syncd_runs_total", job="reconcile", source="hr", result="no-op"),
                 "the new leader reconciles at once, as at start")
    assert b.stop() == 0
    verify = world.syncd("ledger", "verify", "--config", str(world.config))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_config_check_says_how_the_ledger_may_be_shared(world: World, postgres: PostgresServer):
    alone = world.syncd("config", "check", "--config", str(world.config))
    assert alone.returncode == 0 and "SQLite: one syncd process per ledger is the supported shape" in alone.stdout
    world.configure(ledger={"url": postgres.new_database()}, daemon={"leader": {"lease": "10s"}})
    shared = world.syncd("config", "check", "--config", str(world.config))
    assert shared.returncode == 0 and "shared by every replica: a fenced apply lock; the scheduled jobs run on one " \
        "leader (ledger lease, 10s)" in shared.stdout


def test_both_replicas_recover_unaided_when_postgresql_restarts_mid_run(world: World, ledger: Engine,
                                                                       postgres: PostgresServer, start_daemon):
    people = PEOPLE[:20]
    world.write_people(*people)
    settings = {"jobs": {"reconcile": {"every": "1h"}, "sweep": {"every": "1s"}}, "leader": {"lease": "3s"}}
    a = start_daemon(**settings)
    b = start_daemon(**settings)
    wait_for(lambda: query(ledger, "SELECT count(*) FROM event WHERE action = 'issue'")[0][0] >= 2,
             "the leader's first reconcile is under way")
    postgres.stop()
    try:
        for daemon in (a, b):
            daemon.wait_until(lambda d=daemon: d.get_json("/readyz")[1]["ledger"].startswith("unreachable"),
                              "readyz reports the ledger down")
    finally:
        postgres.start()
    for daemon in (a, b):
        daemon.wait_until(lambda d=daemon: d.get("/readyz")[0] == 200, "readyz recovers with the ledger")
    # The interrupted reconcile is retried with backoff and finishes the work; one replica leads again.
    a.wait_until(lambda: query(ledger, "SELECT count(*) FROM credential WHERE state = 'active'")[0][0] == len(people),
                 "everyone is issued")
    roles = sorted(d.get_json("/readyz")[1]["leader"]["role"] for d in (a, b))
    assert roles == ["follower", "leader"]
    issued = Counter(person for (person,) in query(
        ledger, "SELECT person_id FROM event WHERE (action = 'issue' AND result = 'ok') "
                "OR (action = 'recover' AND result = 'finished')"))
    assert issued == Counter({p["id"]: 1 for p in people})
    verify = world.syncd("ledger", "verify", "--config", str(world.config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert a.stop() == 0 and b.stop() == 0


def test_a_holder_that_lost_the_apply_lock_revokes_nobody_twice(world: World, ledger: Engine):
    world.configure(safety={"max_revocations": 100, "max_revocation_percent": 100})
    world.write_people(*PEOPLE)
    world.reconcile()
    stayers, leavers = PEOPLE[:5], PEOPLE[5:]
    world.write_people(*stayers)
    # One action at a time, so that a is still mid-run when it is frozen (a pool of workers revokes the rest first).
    world.configure(clusters=[cluster | {"concurrency": 1} for cluster in world.settings["clusters"]])
    a = reconcile(world)
    wait_for(lambda: query(ledger, "SELECT count(*) FROM event WHERE action = 'revoke'")[0][0] >= 2,
             "a's revocations are under way")
    a_run, b = take_over(world, ledger, a)
    _, a_stderr = a.communicate(timeout=300)
    _, b_stderr = b.communicate(timeout=300)
    assert a.returncode == 75 and "lost the apply lock" in a_stderr, a_stderr[-3000:]
    assert b.returncode == 0, b_stderr[-3000:]
    assert query(ledger, f"SELECT result FROM run WHERE id = '{a_run}'")[0][0] == "lost-lease"
    revoked = Counter(person for (person,) in query(
        ledger, "SELECT person_id FROM event WHERE action = 'revoke' AND result = 'ok'"))
    assert revoked == Counter({p["id"]: 1 for p in leavers})
    assert query(ledger, "SELECT count(*) FROM credential WHERE state = 'active'")[0][0] == len(stayers)
    verify = world.syncd("ledger", "verify", "--config", str(world.config))
    assert verify.returncode == 0 and "hash chain intact" in verify.stdout, verify.stdout + verify.stderr
