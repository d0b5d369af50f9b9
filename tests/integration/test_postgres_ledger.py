"""The HA setup: several syncd processes share one PostgreSQL ledger and take turns through its apply lock."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

from tests.conftest import PostgresServer
from tests.integration.conftest import World

PEOPLE = [{"id": f"{3000 + i}", "username": f"pg{i:02d}", "groups": "developers"} for i in range(5)]


def test_concurrent_runs_on_a_shared_postgresql_ledger_issue_each_token_once(world: World, postgres: PostgresServer):
    world.configure(ledger={"url": postgres.new_database()})
    world.write_people(*PEOPLE)
    command = [sys.executable, "-m", "syncd", "reconcile", "--config", str(world.config), "--output", "json"]
    runs = [subprocess.Popen(command, env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], results
    issued = [a for stdout, _ in results for a in json.loads(stdout)["runs"][0]["actions"] if a["kind"] == "issue"]
    assert sorted(a["username"] for a in issued) == [p["username"] for p in PEOPLE]
    assert Counter(s["metadata"]["labels"]["syncd.io/person"] for s in world.ours("secrets")) == Counter(
        {p["id"]: 1 for p in PEOPLE})
    assert world.can("pg00", "create", "deployments", world.ns("team-a")) == "yes"

    world.write_people(*PEOPLE[1:])
    run = world.reconcile()
    assert [(a["kind"], a["username"]) for a in run["actions"]] == [("revoke", "pg00")]
    assert world.syncd("ledger", "verify", "--config", str(world.config)).returncode == 0
