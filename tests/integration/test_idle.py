"""Idle access on a real control plane: with `usage.idle_after` and `idle_action: suspend`, an access nobody used is
suspended (its RoleBinding gone from the API server, its kubeconfig removed, a `revoke ... idle` event), stays so
through reconciles while the source still entitles the person, and is back after `syncd access resume`; a person
whose use is recorded keeps access; a mass idle suspension is held by the safety thresholds."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from syncd.adapters.ledger import Database, Journal
from syncd.core.model import person_key
from syncd.core.usage import DayUsage
from tests.integration.conftest import World

pytestmark = pytest.mark.kube

ALICE = {"id": "1001", "username": "alice", "groups": "developers"}
BOB = {"id": "1002", "username": "bob", "groups": "developers"}


def record_use(world: World, person_id: str) -> None:
    """A request by the person's credential on dev now, into the ledger as the audit receiver's flush writes it."""
    now = datetime.now(UTC)
    with Database(f"sqlite:///{world.directory / 'ledger.db'}") as database:
        Journal(database).record_usage({(person_key(person_id), "dev", now.date(), ""): DayUsage(now, now, 1)})


def actions(run: dict) -> list[tuple[str, str, str]]:
    return sorted((a["kind"], a["reason"], a["username"]) for a in run["actions"])


def events(world: World, person: str) -> list[tuple[str, str]]:
    done = world.syncd("ledger", "log", "--config", str(world.config), "--person", person, "--output", "json")
    return [(e["action"], e["reason"]) for e in json.loads(done.stdout)]


def suspended(world: World) -> list[str]:
    done = world.syncd("access", "list", "--config", str(world.config), "--suspended", "--output", "json")
    assert done.returncode == 0, done.stderr
    return [entry["person"] for entry in json.loads(done.stdout) if entry["state"] == "suspended"]


def test_an_idle_access_is_suspended_kept_suspended_and_resumed(world: World):
    # Long enough that bob, using his access just before each run, is never idle by the time the run plans.
    world.configure(usage={"idle_after": "30s", "idle_action": "suspend"})
    world.write_people(ALICE, BOB)
    world.reconcile()
    assert world.ours("rolebindings", person_key("1001")) and world.kubeconfig("alice").exists()
    token = world.token("alice")
    deadline = time.monotonic() + 180
    while True:  # bob uses his access before every run; alice never does
        record_use(world, "1002")
        run = world.reconcile()
        if actions(run):
            break
        assert time.monotonic() < deadline, "alice was not suspended within 180 s"
    assert actions(run) == [("revoke", "idle", "alice")]
    assert world.ours("rolebindings", person_key("1001")) == []
    assert not world.kubeconfig("alice").exists()
    world.wait_until_rejected(token)
    assert ("revoke", "idle") in events(world, "alice") and suspended(world) == ["alice"]
    for _ in range(2):  # the source still entitles alice: nothing is given back
        record_use(world, "1002")
        assert world.reconcile()["actions"] == []
    assert world.ours("rolebindings", person_key("1001")) == [] and world.ours("rolebindings", person_key("1002"))

    done = world.syncd("access", "resume", "alice", "--config", str(world.config), "--reason", "back from leave")
    assert done.returncode == 0, done.stderr
    assert suspended(world) == [] and events(world, "alice")[-1] == ("resume", "back from leave")
    record_use(world, "1002")
    assert actions(world.reconcile()) == [("issue", "joiner", "alice")]
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    verify = world.syncd("ledger", "verify", "--config", str(world.config))
    assert verify.returncode == 0, verify.stderr


def test_a_mass_idle_suspension_is_held_until_allowed(world: World):
    world.configure(safety={"max_revocations": 1})
    people = [{"id": f"20{n}", "username": f"dev{n}", "groups": "developers"} for n in range(3)]
    world.write_people(*people)
    world.reconcile()
    # All three idle at once (on a loaded machine their grants may be seconds apart): past the last grant.
    listed = world.syncd("access", "list", "--config", str(world.config), "--output", "json")
    last_grant = max(datetime.fromisoformat(entry["since"]) for entry in json.loads(listed.stdout))
    world.configure(usage={"idle_after": "3s", "idle_action": "suspend"})
    while datetime.now(UTC) < last_grant + timedelta(seconds=4):
        time.sleep(0.5)
    held = world.reconcile(expect=4)
    assert held["actions"] == [] and len(held["held"]) == 3
    assert all(world.ours("rolebindings", person_key(p["id"])) for p in people) and suspended(world) == []
    allowed = world.reconcile("--allow-mass-revocation")
    assert actions(allowed) == [("revoke", "idle", p["username"]) for p in people]
    assert all(world.ours("rolebindings", person_key(p["id"])) == [] for p in people)
    assert suspended(world) == ["dev0", "dev1", "dev2"]
