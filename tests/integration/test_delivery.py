"""Delivery reaches its owner only: one folder per person id, whatever the usernames, on the real control plane."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest

from syncd.core.model import person_key
from tests.integration.conftest import World

pytestmark = pytest.mark.kube


def account_of(world: World, person_id: str) -> str:
    return f"system:serviceaccount:{world.system_namespace}:syncd-{person_key(person_id)}"


def gone(world: World, person_id: str) -> bool:
    return all(world.ours(kind, person_key(person_id)) == []
               for kind in ("serviceaccounts", "secrets", "rolebindings"))


def test_two_people_with_one_username_each_get_their_own_folder(world: World):
    first, second = {"id": "2101", "username": "sam", "groups": "developers"}, {
        "id": "2102", "username": "sam", "groups": "sre"}
    world.write_people(first, second)
    world.reconcile()
    assert world.folder("2101") != world.folder("2102")
    tokens = {pid: world.token(pid) for pid in ("2101", "2102")}
    assert {pid: world.token_user(token) for pid, token in tokens.items()} == {
        pid: account_of(world, pid) for pid in tokens}
    assert world.can("2102", "list", "pods", world.ns("team-b")) == "yes"

    world.write_people(second)
    run = world.reconcile()
    assert [(a["kind"], a["person_id"]) for a in run["actions"]] == [("revoke", "2101")]
    assert run["confirmed_rejections"] == 1
    assert not world.kubeconfig("2101").exists()
    assert world.token("2102") == tokens["2102"] and world.token_user(tokens["2102"]) == account_of(world, "2102")
    assert world.can("2102", "list", "pods", world.ns("team-b")) == "yes"
    assert world.reconcile("--check")["actions"] == []


def test_a_leaver_replaced_by_a_joiner_of_the_same_username_leaves_her_files(world: World):
    world.write_people({"id": "2004", "username": "erin", "groups": "developers"})
    world.reconcile()
    world.write_people({"id": "2003", "username": "erin", "groups": "developers"})
    run = world.reconcile()
    assert sorted((a["kind"], a["person_id"]) for a in run["actions"]) == [("issue", "2003"), ("revoke", "2004")]
    assert world.token_user(world.token("2003")) == account_of(world, "2003")
    assert world.can("2003", "create", "deployments", world.ns("team-a")) == "yes"
    assert not world.kubeconfig("2004").exists()


NAMES = {"3001": "josé.garcía", "3002": "李雷", "3003": "Zoë", "3004": "frank castle", "3005": "a/b", "3006": "..",
         "3007": "x" * 300}


def test_real_names_are_delivered_and_revoked_in_full(world: World):
    world.write_people(*({"id": pid, "username": name, "groups": "developers"} for pid, name in NAMES.items()))
    run = world.reconcile()
    assert sorted(a["person_id"] for a in run["actions"]) == sorted(NAMES)
    for pid, name in NAMES.items():
        assert world.kubeconfig(pid).exists() and world.folder(name) == world.folder(pid)
    # A real kubectl with the delivered kubeconfig, whose user and context carry the readable name.
    done = world.control_plane.kubectl("config", "view", "-o", "jsonpath={.users[0].name}",
                                       kubeconfig=world.kubeconfig("3004"))
    assert done.stdout == "frank castle@dev"
    assert world.can("3004", "create", "deployments", world.ns("team-a")) == "yes"

    world.write_people({"id": "3999", "username": "stays", "groups": "developers"})
    run = world.reconcile()
    assert sorted(a["person_id"] for a in run["actions"] if a["kind"] == "revoke") == sorted(NAMES)
    for pid in NAMES:
        assert gone(world, pid) and not world.kubeconfig(pid).exists()


def test_an_undeliverable_username_is_refused_before_any_cluster_write(world: World):
    world.write_people({"id": "2005", "username": "eve\nroot", "groups": "developers"},
                       {"id": "1002", "username": "bob", "groups": "sre"})
    run = world.reconcile(expect=3)
    assert [a["person_id"] for a in run["actions"]] == ["1002"]
    (held,) = run["held"]
    assert held["person_id"] == "2005" and "people.csv line" in held["why"] and "U+000A" in held["why"]
    assert "refused" in world.last_stderr
    assert gone(world, "2005") and world.ours("serviceaccounts", person_key("1002"))
    assert world.can("bob", "list", "pods", world.ns("team-b")) == "yes"
    world.reconcile(expect=3)  # still refused, recorded once
    events = json.loads(world.syncd("ledger", "log", "--config", str(world.config), "--person", "2005",
                                    "--output", "json").stdout)
    assert [(e["action"], e["result"]) for e in events] == [("issue", "held")]


def test_a_leaver_whose_files_cannot_be_removed_loses_access_and_the_next_leaver_too(world: World):
    people = [{"id": "2201", "username": "ann", "groups": "developers"},
              {"id": "2202", "username": "ben", "groups": "developers"},
              {"id": "2203", "username": "cat", "groups": "developers"}]
    world.write_people(*people)
    world.reconcile()
    token_path = world.folder("2201") / "dev.token"
    token_path.unlink()
    (token_path / "in-the-way").mkdir(parents=True)  # a directory where ann's token file should be
    world.write_people(people[2])
    run = world.reconcile(expect=3)
    assert [(a["kind"], a["person_id"]) for a in run["actions"]] == [("revoke", "2201"), ("revoke", "2202")]
    assert gone(world, "2201") and gone(world, "2202")
    assert world.can("cat", "create", "deployments", world.ns("team-a")) == "yes"
    events = json.loads(world.syncd("ledger", "log", "--config", str(world.config), "--person", "2201",
                                    "--output", "json").stdout)
    assert events[-1]["result"] == "failed" and "cannot read the token" in events[-1]["error"]


def test_access_delivered_under_the_old_username_folders_moves_to_the_person_folder(world: World):
    alice, bob = {"id": "1001", "username": "alice", "groups": "developers"}, {
        "id": "1002", "username": "bob", "groups": "sre"}
    world.write_people(alice, bob)
    world.reconcile()
    # As an older syncd left it: DIRECTORY/USERNAME/. Alice's folder holds her token; "bob"'s holds alice's too,
    # as when two people shared a username.
    root = world.directory / "kubeconfigs"
    old_tokens = {pid: world.token(pid) for pid in ("1001", "1002")}
    subprocess.run(["cp", "-a", str(world.folder("1001")), str(root / "bob")], check=True)
    (root / "1001").rename(root / "alice")
    with sqlite3.connect(world.directory / "ledger.db") as db:
        for pid, name in (("1001", "alice"), ("1002", "bob")):
            db.execute("UPDATE access SET kubeconfig = ? WHERE person_id = ?",
                       (str(root / name / "dev.kubeconfig"), pid))

    run = world.reconcile()
    assert sorted((a["kind"], a["reason"], a["person_id"]) for a in run["actions"]) == [
        ("repair", "relocate", "1001"), ("repair", "relocate", "1002")]
    for pid in ("1001", "1002"):
        assert world.folder(pid) == root / pid and world.token(pid) != old_tokens[pid]
        assert world.token_user(world.token(pid)) == account_of(world, pid)
    assert not (root / "alice").exists()  # alice's own old files
    assert (root / "bob" / "dev.token").read_text() == old_tokens["1001"]  # not bob's: left alone
    world.reconcile()  # the replaced tokens' Secrets retire
    assert world.reconcile("--check")["actions"] == []
