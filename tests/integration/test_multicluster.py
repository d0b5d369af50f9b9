"""One person, several clusters: each cluster is reconciled on its own, and one that is down delays only itself."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ControlPlane
from tests.integration.conftest import World

ALICE = {"id": "1001", "username": "alice", "groups": "developers"}
BOB = {"id": "1002", "username": "bob", "groups": "developers"}


@pytest.fixture
def prod(world: World, second_control_plane: ControlPlane) -> ControlPlane:
    """A second real cluster, `prod`, where developers may read their team's namespace."""
    second_control_plane.kubectl("create", "namespace", world.ns("team-a"))
    world.add_cluster("prod", second_control_plane, timeout="2s")
    world.set_policy(extra_rules=({"name": "developers read prod", "match": {"groups": ["developers"]},
                                   "grant": [{"cluster": "prod", "namespaces": [world.ns("team-a")],
                                              "role": "view"}]},))
    return second_control_plane


def test_one_person_gets_access_on_every_cluster_and_loses_it_on_every_cluster(world: World, prod: ControlPlane):
    world.write_people(ALICE)
    world.reconcile()
    team_a = world.ns("team-a")
    assert world.can("alice", "create", "deployments", team_a, cluster="dev") == "yes"
    assert world.can("alice", "get", "pods", team_a, cluster="prod") == "yes"
    assert world.can("alice", "create", "deployments", team_a, cluster="prod") == "no"
    tokens = {cluster: world.token("alice", cluster) for cluster in ("dev", "prod")}
    assert tokens["dev"] != tokens["prod"]

    world.write_people()
    run = world.reconcile("--allow-mass-revocation")
    assert sorted((a["kind"], a["cluster"]) for a in run["actions"]) == [("revoke", "dev"), ("revoke", "prod")]
    assert world.can("alice", "get", "pods", team_a, cluster="prod") != "yes"


def test_a_cluster_that_is_down_delays_only_its_own_changes(world: World, prod: ControlPlane):
    team_a = world.ns("team-a")
    world.write_people(ALICE)
    world.reconcile()

    world.write_people(BOB)  # alice leaves, bob joins
    with prod.frozen():
        started = time.monotonic()
        run = world.reconcile("--allow-mass-revocation", expect=3)
        took = time.monotonic() - started
        assert "cluster prod could not be read" in world.last_stderr
        assert run["skipped_clusters"] == ["prod"]
        assert {(a["kind"], a["username"], a["cluster"]) for a in run["actions"]} == {
            ("revoke", "alice", "dev"), ("issue", "bob", "dev")}
        # dev went ahead in full while prod was unreachable.
        assert world.can("bob", "create", "deployments", team_a, cluster="dev") == "yes"
        assert world.can("alice", "create", "deployments", team_a, cluster="dev") != "yes"
        assert not world.kubeconfig("bob", "prod").exists()
    assert took < 120, f"a hung cluster held the run for {took:.0f} s"

    # prod is back: its share of the changes happens now, and dev has nothing left to do.
    run = world.reconcile("--allow-mass-revocation")
    assert {(a["kind"], a["username"], a["cluster"]) for a in run["actions"]} == {
        ("revoke", "alice", "prod"), ("issue", "bob", "prod")}
    assert world.can("bob", "get", "pods", team_a, cluster="prod") == "yes"
    assert world.can("alice", "get", "pods", team_a, cluster="prod") != "yes"
    assert world.reconcile()["actions"] == []
