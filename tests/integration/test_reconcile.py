"""`syncd reconcile` against a real Kubernetes control plane, for the whole joiner/mover/leaver story."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest

from syncd.adapters.kube import KubernetesCluster
from syncd.config import load_settings
from syncd.core.model import person_key
from tests.integration.conftest import World

pytestmark = pytest.mark.kube

ALICE = {"id": "1001", "username": "alice", "groups": "developers"}
BOB = {"id": "1002", "username": "bob", "groups": "sre"}


def test_joiner_can_work_in_the_granted_namespace_only(world: World):
    world.write_people(ALICE)
    run = world.reconcile()
    assert [(a["kind"], a["reason"], a["username"]) for a in run["actions"]] == [("issue", "joiner", "alice")]
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    assert world.can("alice", "create", "deployments", world.ns("team-b")) == "no"
    assert world.can("alice", "list", "secrets", "kube-system") == "no"
    (account,) = world.ours("serviceaccounts", person_key("1001"))
    assert account["metadata"]["annotations"]["syncd.io/username"] == "alice"


def test_second_run_is_a_no_op_with_zero_writes(world: World):
    world.write_people(ALICE, BOB)
    world.reconcile()
    versions = {i["metadata"]["uid"]: i["metadata"]["resourceVersion"]
                for kind in ("serviceaccounts", "secrets", "rolebindings") for i in world.ours(kind)}
    run = world.reconcile()
    assert run["actions"] == [] and run["result"] == "no-op" and run["writes"] == 0
    after = {i["metadata"]["uid"]: i["metadata"]["resourceVersion"]
             for kind in ("serviceaccounts", "secrets", "rolebindings") for i in world.ours(kind)}
    assert after == versions


def test_mover_gains_the_new_scope_and_loses_the_old(world: World):
    world.write_people(ALICE)
    world.reconcile()
    token_before = world.token("alice")
    world.write_people(ALICE | {"groups": "sre"})
    run = world.reconcile()
    (action,) = run["actions"]
    assert (action["kind"], action["reason"]) == ("rescope", "mover")
    assert action["before"] == [f"{world.ns('team-a')}:ClusterRole/edit"]
    assert action["after"] == [f"{world.ns('team-b')}:ClusterRole/view"]
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "no"
    assert world.can("alice", "list", "pods", world.ns("team-b")) == "yes"
    assert world.token("alice") == token_before  # no new token needed


def test_rename_is_the_same_person_with_the_same_token(world: World):
    world.write_people(ALICE)
    world.reconcile()
    token = world.token("alice")
    world.write_people(ALICE | {"username": "alice.archer"})
    run = world.reconcile()
    assert [(a["kind"], a["reason"]) for a in run["actions"]] == [("rescope", "rename")]
    assert world.folder("alice.archer") == world.folder("1001")  # files stay in the person's folder
    assert world.token("1001") == token
    assert world.can("alice.archer", "create", "deployments", world.ns("team-a")) == "yes"
    (account,) = world.ours("serviceaccounts", person_key("1001"))
    assert account["metadata"]["annotations"]["syncd.io/username"] == "alice.archer"


def test_leaver_loses_permissions_at_once_and_the_token_dies_soon_after(world: World):
    world.write_people(ALICE, BOB)
    world.reconcile()
    token = world.token("alice")
    kept = world.keep_copy("alice")
    world.write_people(BOB)
    run = world.reconcile()
    assert [(a["kind"], a["reason"], a["username"]) for a in run["actions"]] == [("revoke", "leaver", "alice")]
    # The run confirmed by TokenReview that the token is rejected before it returned.
    assert run["confirmed_rejections"] == 1
    assert not world.token_authenticates(token)
    assert not world.kubeconfig("alice").exists()
    # The kubeconfig the leaver kept no longer works.
    denied = world.control_plane.kubectl("auth", "can-i", "create", "deployments", "-n", world.ns("team-a"),
                                         kubeconfig=kept, check=False)
    assert denied.stdout.strip() != "yes"
    assert world.ours("serviceaccounts", person_key("1001")) == []
    assert world.ours("rolebindings", person_key("1001")) == []
    assert world.ours("secrets", person_key("1001")) == []
    events = json.loads(world.syncd("ledger", "log", "--config", str(world.config), "--person", "alice",
                                    "--output", "json").stdout)
    assert [(e["action"], e["reason"]) for e in events] == [
        ("issue", "joiner"), ("revoke", "leaver"), ("confirm-revocation", "token-rejected")]
    # The run was finished in the ledger once applied, before the wait: a stop while waiting leaves none running.
    with sqlite3.connect(world.directory / "ledger.db") as db:
        (finished_at,) = db.execute("SELECT finished_at FROM run WHERE id = ?", (events[-1]["run_id"],)).fetchone()
    assert datetime.fromisoformat(finished_at).replace(tzinfo=UTC) <= datetime.fromisoformat(events[-1]["at"])


def test_permissions_are_gone_before_the_token_is(world: World):
    """RBAC is not cached: the first request after the revoke is denied even while the token still authenticates."""
    world.write_people(ALICE, BOB)
    world.reconcile()
    world.configure(tokens={"confirm_revocation_timeout": "0s"})
    token = world.token("alice")
    kept = world.keep_copy("alice")
    world.write_people(BOB)
    world.reconcile()
    answer = world.control_plane.kubectl("auth", "can-i", "create", "deployments", "-n", world.ns("team-a"),
                                         kubeconfig=kept, check=False)
    assert answer.stdout.strip() != "yes"
    world.wait_until_rejected(token)


def test_binding_deleted_by_hand_is_repaired(world: World):
    world.write_people(ALICE)
    world.reconcile()
    (binding,) = world.ours("rolebindings", person_key("1001"))
    world.control_plane.kubectl("delete", "rolebinding", "-n", binding["metadata"]["namespace"],
                                binding["metadata"]["name"])
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "no"
    run = world.reconcile()
    assert [(a["kind"], a["reason"]) for a in run["actions"]] == [("repair", "drift")]
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"


def test_binding_edited_by_hand_is_repaired(world: World):
    world.write_people(ALICE)
    world.reconcile()
    (binding,) = world.ours("rolebindings", person_key("1001"))
    patch = json.dumps([{"op": "add", "path": "/subjects/-",
                         "value": {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}}])
    world.control_plane.kubectl("patch", "rolebinding", "-n", binding["metadata"]["namespace"],
                                binding["metadata"]["name"], "--type=json", "-p", patch)
    run = world.reconcile()
    assert [(a["kind"], a["reason"]) for a in run["actions"]] == [("repair", "drift")]
    (repaired,) = world.ours("rolebindings", person_key("1001"))
    assert [s["name"] for s in repaired["subjects"]] == [f"syncd-{person_key('1001')}"]


def test_labelled_service_account_with_nobody_behind_it_is_reported_and_removed(world: World):
    world.write_people(ALICE)
    world.reconcile()
    world.control_plane.kubectl("create", "serviceaccount", "syncd-ghost", "-n", world.system_namespace)
    world.label_ours("serviceaccount", "syncd-ghost", world.system_namespace, "ghost")
    world.control_plane.kubectl("create", "rolebinding", "syncd-ghost-x", "-n", world.ns("team-a"),
                                "--clusterrole=edit", f"--serviceaccount={world.system_namespace}:syncd-ghost")
    world.label_ours("rolebinding", "syncd-ghost-x", world.ns("team-a"), "ghost")
    dry = world.reconcile("--dry-run")
    assert [(a["kind"], a["person_id"]) for a in dry["actions"]] == [("orphan", "ghost")]
    assert world.ours("serviceaccounts", "ghost")
    world.reconcile()
    assert world.ours("serviceaccounts", "ghost") == [] and world.ours("rolebindings", "ghost") == []


def test_the_sweep_repairs_and_removes_orphans_from_the_ledger_alone(world: World):
    world.write_people(ALICE, BOB)
    world.reconcile()
    (world.directory / "people.csv").unlink()  # the source cannot be read: the sweep never reads it
    (binding,) = world.ours("rolebindings", person_key("1002"))
    world.control_plane.kubectl("delete", "rolebinding", "-n", binding["metadata"]["namespace"],
                                binding["metadata"]["name"])
    world.control_plane.kubectl("create", "serviceaccount", "syncd-ghost", "-n", world.system_namespace)
    world.label_ours("serviceaccount", "syncd-ghost", world.system_namespace, "ghost")

    run = world.reconcile("--sweep")
    assert sorted((a["kind"], a["reason"], a["person_id"]) for a in run["actions"]) == [
        ("orphan", "orphan", "ghost"), ("repair", "drift", "1002")]
    assert world.can("bob", "get", "pods", world.ns("team-b")) == "yes", "the ledger's record is put back"
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    assert world.ours("serviceaccounts", "ghost") == []
    assert world.reconcile("--sweep", "--check")["actions"] == []


def test_the_sweep_repairs_people_matched_by_attributes(world: World):
    platform = {"name": "platform", "match": {"groups": ["sre"], "attributes": {"department": "platform"}},
                "grant": [{"cluster": "dev", "namespaces": [world.ns("team-a")], "role": "edit"}]}
    world.set_policy(extra_rules=(platform,))
    (world.directory / "people.csv").write_text("id,username,email,groups,active,department\n"
                                                "3001,petra,petra@example.org,sre,true,platform\n")
    world.reconcile()
    (binding,) = [b for b in world.ours("rolebindings", "3001") if b["metadata"]["namespace"] == world.ns("team-a")]
    world.control_plane.kubectl("delete", "rolebinding", "-n", binding["metadata"]["namespace"],
                                binding["metadata"]["name"])
    assert world.can("petra", "create", "deployments", world.ns("team-a")) == "no"

    run = world.reconcile("--sweep")
    assert [(a["kind"], a["reason"], a["person_id"]) for a in run["actions"]] == [("repair", "drift", "3001")]
    assert world.can("petra", "create", "deployments", world.ns("team-a")) == "yes"


def test_check_counts_held_revocations_as_pending(world: World):
    world.write_people(ALICE, BOB)
    world.configure(safety={"max_revocations": 0})
    world.reconcile()
    world.write_people(ALICE)
    held = world.reconcile("--check", expect=1)
    assert held["actions"] == [] and [h["username"] for h in held["held"]] == ["bob"]


def test_dry_run_and_check_change_nothing(world: World):
    world.write_people(ALICE)
    dry = world.reconcile("--dry-run")
    assert [a["kind"] for a in dry["actions"]] == ["issue"] and dry["writes"] == 0
    world.reconcile("--check", expect=1)
    assert world.ours("serviceaccounts") == []
    assert not (world.directory / "kubeconfigs").exists()
    world.reconcile()
    world.reconcile("--check", expect=0)


def test_unreadable_source_revokes_nothing(world: World):
    world.write_people(ALICE)
    world.reconcile()
    (world.directory / "people.csv").unlink()
    done = world.syncd("reconcile", "--config", str(world.config))
    assert done.returncode == 69, done.stderr
    assert "cannot read" in done.stderr
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"


def test_broken_row_holds_revocations_but_not_joiners(world: World):
    world.write_people(ALICE)
    world.reconcile()
    (world.directory / "people.csv").write_text("id,username,groups,active\n,broken,developers,true\n"
                                                "1002,bob,sre,true\n")
    run = world.reconcile()
    assert [(a["kind"], a["username"]) for a in run["actions"]] == [("issue", "bob")]
    assert [(h["kind"], h["username"]) for h in run["held"]] == [("revoke", "alice")]
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"


def test_no_token_in_logs_or_ledger(world: World):
    world.write_people(ALICE, BOB)
    world.env["SYNCD_LOG_LEVEL"] = "debug"
    world.reconcile()
    logs = world.last_stderr
    tokens = [world.token(u) for u in ("alice", "bob")]
    world.write_people(BOB)
    world.reconcile()
    logs += world.last_stderr
    ledger = (world.directory / "ledger.db").read_bytes()
    with sqlite3.connect(world.directory / "ledger.db") as db:
        dump = "\n".join(db.iterdump())
    for token in tokens:
        assert token not in logs
        assert token.encode() not in ledger and token not in dump
        assert token[-20:] not in dump


def test_a_targeted_observation_reads_only_the_named_people(world: World):
    world.write_people(ALICE, BOB)
    world.reconcile()
    cluster = KubernetesCluster(load_settings(world.config).clusters[0])
    try:
        everyone = cluster.observe()
        alice, bob = person_key("1001"), person_key("1002")
        assert set(everyone.accounts) == {alice, bob}
        # More people than one label selector holds, most of them unknown to the cluster.
        only_bob = cluster.observe({bob} | {f"nobody-{n}" for n in range(120)})
        assert only_bob.accounts == {bob: everyone.accounts[bob]}
        assert cluster.observe(set()).accounts == {}
    finally:
        cluster.close()
