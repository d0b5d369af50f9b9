"""What syncd makes on a real cluster, and what its plans say it will make: deployments sharing a cluster, objects
under our labels that name nobody, every write shown in a plan, roles that do not exist, and write counts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from syncd.core.model import UNOWNED, RoleKind, Scope, binding_name, person_key
from tests.conftest import free_port, write_yaml
from tests.integration.conftest import World

pytestmark = pytest.mark.kube

ALICE = {"id": "1001", "username": "alice", "groups": "developers"}
BOB = {"id": "1002", "username": "bob", "groups": "sre"}


def another_deployment(world: World) -> World:
    """A second syncd (its own namespace, ledger and delivery folder) granting the same people on the same cluster."""
    other = World(world.control_plane, world.directory / "other", world.suffix, world.env, policy=world.policy)
    other.directory.mkdir()
    write_yaml(other.directory / "policy.yaml", world.policy)
    other.configure(**{key: value for key, value in world.settings.items() if key != "clusters"},
                    clusters=[world.settings["clusters"][0] | {"namespace": f"{world.system_namespace}-other"}])
    return other


def text_run(world: World, *args: str) -> str:
    done = world.syncd(*args, "--config", str(world.config))
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_two_deployments_sharing_a_cluster_both_grant_the_same_person(world: World):
    other = another_deployment(world)
    for deployment in (world, other):
        deployment.write_people(ALICE)
        assert [a["kind"] for a in deployment.reconcile()["actions"]] == ["issue"]
    for deployment in (world, other):
        assert deployment.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
        again = deployment.reconcile()
        assert again["actions"] == [] and again["writes"] == 0, "no repair (drift) on the next run"
    bindings = world.kubectl_json("get", "rolebindings", "-n", world.ns("team-a"))["items"]
    names = sorted(b["metadata"]["name"] for b in bindings)
    scope = Scope(world.ns("team-a"), RoleKind.CLUSTER_ROLE, "edit")
    assert names == sorted(binding_name("1001", scope, ns) for ns in (world.system_namespace,
                                                                      f"{world.system_namespace}-other"))


def test_bindings_made_under_the_former_name_keep_matching_after_an_upgrade(world: World):
    world.write_people(ALICE)
    world.reconcile()
    (binding,) = world.ours("rolebindings", person_key("1001"))
    scope = Scope(world.ns("team-a"), RoleKind.CLUSTER_ROLE, "edit")
    former = f"syncd-{person_key('1001')}-{scope.key}"  # what syncd named RoleBindings before they carried the instance
    binding["metadata"] = {"name": former, "namespace": binding["metadata"]["namespace"],
                           "labels": binding["metadata"]["labels"], "annotations": binding["metadata"]["annotations"]}
    world.control_plane.kubectl("delete", "rolebinding", "-n", world.ns("team-a"), binding_name("1001", scope,
                                                                                                  world.system_namespace))
    world.control_plane.kubectl("create", "-f", "-", stdin=json.dumps(binding))
    run = world.reconcile()
    assert run["actions"] == [] and run["writes"] == 0
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"


def test_a_binding_name_taken_by_someone_else_never_counts_as_granted(world: World):
    scope = Scope(world.ns("team-a"), RoleKind.CLUSTER_ROLE, "edit")
    name = binding_name("1001", scope, world.system_namespace)
    world.control_plane.kubectl("create", "rolebinding", name, "-n", world.ns("team-a"), "--clusterrole=view",
                                "--serviceaccount=default:someone-else")
    world.write_people(ALICE)
    run = world.reconcile(expect=3)
    (action,) = run["actions"]
    assert action["kind"] == "issue" and "is not this syncd's" in action["error"]
    assert world.can("alice", "create", "deployments", world.ns("team-a")) != "yes"
    (squatted,) = [b for b in world.kubectl_json("get", "rolebindings", "-n", world.ns("team-a"))["items"]
                   if b["metadata"]["name"] == name]
    assert squatted["roleRef"]["name"] == "view"  # left as it was


def test_objects_under_our_labels_that_name_no_person_are_reported_and_removed(world: World):
    world.write_people(ALICE)
    world.reconcile()

    def hand_made_admin_binding(name: str) -> None:
        world.control_plane.kubectl("create", "rolebinding", name, "-n", world.ns("team-a"), "--clusterrole=admin",
                                    "--serviceaccount=default:default")
        world.control_plane.kubectl("label", "rolebinding", name, "-n", world.ns("team-a"), *world.our_labels)

    def present(name: str) -> bool:
        found = world.control_plane.kubectl("get", "rolebinding", name, "-n", world.ns("team-a"), check=False)
        return found.returncode == 0

    hand_made_admin_binding("by-hand")
    world.configure(sweep={"orphans": "report"})
    held = world.reconcile()["held"]
    assert [(h["kind"], h["person_id"]) for h in held] == [("orphan", UNOWNED)]
    assert held[0]["changes"] == [{"op": "-", "kind": "RoleBinding", "namespace": world.ns("team-a"),
                                   "name": "by-hand", "detail": "ClusterRole/admin"}]
    assert present("by-hand")

    world.configure(sweep={"orphans": "remove"})
    swept = world.reconcile("--sweep")
    assert [(a["kind"], a["person_id"]) for a in swept["actions"]] == [("orphan", UNOWNED)]
    assert not present("by-hand")

    hand_made_admin_binding("by-hand-again")
    ns = world.system_namespace
    world.control_plane.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    world.control_plane.kubectl("label", "serviceaccount", "nobody", "-n", ns, *world.our_labels)
    world.control_plane.kubectl("create", "secret", "generic", "nobody-token", "-n", ns)
    world.control_plane.kubectl("label", "secret", "nobody-token", "-n", ns, *world.our_labels, "syncd.io/token=true")
    run = world.reconcile()
    assert [(a["kind"], a["person_id"]) for a in run["actions"]] == [("orphan", UNOWNED)]
    assert not present("by-hand-again")
    assert world.control_plane.kubectl("get", "serviceaccount", "nobody", "-n", ns, check=False).returncode != 0
    assert world.control_plane.kubectl("get", "secret", "nobody-token", "-n", ns, check=False).returncode != 0
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    assert world.reconcile()["actions"] == []


def test_the_dry_run_shows_every_binding_the_real_run_deletes_and_creates(world: World):
    world.write_people(ALICE)
    world.reconcile()
    # RoleBinding roleRefs are immutable: "edit by hand" is delete and recreate, with our labels, pointing at admin.
    (binding,) = world.ours("rolebindings", person_key("1001"))
    name, namespace = binding["metadata"]["name"], binding["metadata"]["namespace"]
    world.control_plane.kubectl("delete", "rolebinding", name, "-n", namespace)
    binding["metadata"] = {key: binding["metadata"][key] for key in ("name", "namespace", "labels", "annotations")}
    binding["roleRef"]["name"] = "admin"
    world.control_plane.kubectl("create", "-f", "-", stdin=json.dumps(binding))
    extra = f"extra-{world.suffix}"
    world.control_plane.kubectl("create", "clusterrolebinding", extra, "--clusterrole=cluster-admin",
                                f"--serviceaccount={world.system_namespace}:syncd-{person_key('1001')}")
    world.label_ours("clusterrolebinding", extra, None, person_key("1001"))

    expected = [
        {"op": "-", "kind": "ClusterRoleBinding", "namespace": None, "name": extra,
         "detail": "ClusterRole/cluster-admin"},
        {"op": "-", "kind": "RoleBinding", "namespace": namespace, "name": name, "detail": "ClusterRole/admin"},
        {"op": "+", "kind": "RoleBinding", "namespace": namespace, "name": name, "detail": "ClusterRole/edit"},
    ]
    (dry,) = world.reconcile("--dry-run")["actions"]
    assert (dry["kind"], dry["reason"], dry["changes"]) == ("repair", "drift", expected)
    text = text_run(world, "reconcile", "--dry-run")
    assert f"      - clusterrolebinding {extra} (ClusterRole/cluster-admin)\n" \
           f"      - rolebinding {namespace}/{name} (ClusterRole/admin)\n" \
           f"      + rolebinding {namespace}/{name} (ClusterRole/edit)" in text

    (applied,) = world.reconcile()["actions"]
    assert applied["changes"] == expected
    assert world.control_plane.kubectl("get", "clusterrolebinding", extra, check=False).returncode != 0
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    assert world.can("alice", "delete", "rolebindings", world.ns("team-a")) == "no"


def test_a_revoked_fingerprint_and_a_rotation_print_their_plans(world: World):
    world.write_people(ALICE)
    world.reconcile()
    fingerprint = json.loads(world.syncd("token", "list", "--config", str(world.config), "--output", "json")
                             .stdout)[0]["fingerprint"]
    text = text_run(world, "token", "revoke", fingerprint, "--reason", "exposed")
    assert "- retire   alice on dev (exposed)" in text and "      - secret " in text
    world.reconcile()

    world.set_policy(defaults={"rotation_period": "1s"})
    world.configure(tokens={"rotation_grace": "1s"})
    deadline = time.monotonic() + 30
    while "~ rotate   alice on dev (rotation-due)" not in (text := text_run(world, "reconcile", "--dry-run")):
        assert time.monotonic() < deadline, text
        time.sleep(0.5)
    assert "~ rotate   alice on dev (rotation-due)" in text_run(world, "reconcile")
    deadline = time.monotonic() + 30
    while "- retire   alice on dev (grace-ended)" not in (text := text_run(world, "reconcile")):
        assert time.monotonic() < deadline, text
        time.sleep(0.5)


def test_a_granted_role_that_does_not_exist_is_warned_about_and_still_issued(world: World):
    missing = f"no-such-role-{world.suffix}"
    world.set_policy(extra_rules=({"name": "ghost-role", "match": {"groups": ["developers"]},
                                   "grant": [{"cluster": "dev", "namespaces": [world.ns("team-a")],
                                              "role": missing}]},))
    world.write_people(ALICE)
    run = world.reconcile()
    assert [a["kind"] for a in run["actions"]] == ["issue"]
    note = (f"cluster dev: the policy grants ClusterRole {missing}, which does not exist; people are still issued "
            "and get Forbidden until it is created")
    assert run["notes"] == [note]
    assert world.last_stderr.count("grant a role that does not exist") == 1
    assert f"! warning: {note}" in text_run(world, "reconcile", "--dry-run")
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"

    unreachable = world.directory / "unreachable.kubeconfig"
    admin = Path(world.control_plane.admin_kubeconfig).read_text()
    server = next(line.split("server:")[1].strip() for line in admin.splitlines() if "server:" in line)
    unreachable.write_text(admin.replace(server, f"https://127.0.0.1:{free_port()}"))
    world.add_cluster("gone", world.control_plane, kubeconfig=str(unreachable))
    world.set_policy(extra_rules=(world.policy["rules"][2], {"name": "gone", "match": {"groups": ["sre"]},
                                                             "grant": [{"cluster": "gone", "namespaces": ["x"],
                                                                        "role": "view"}]}))
    checked = text_run(world, "config", "check")
    assert f"  warning: {note}" in checked
    assert "  cluster gone: not checked: cluster gone: list ClusterRoles:" in checked


def test_writes_are_counted_once_per_call(world: World):
    world.write_people(ALICE)
    world.reconcile()
    world.write_people(ALICE, BOB)
    joiner = world.reconcile()
    assert [a["username"] for a in joiner["actions"]] == ["bob"]
    assert joiner["writes"] == 3 + 1  # ServiceAccount, token Secret, TokenRequest, one binding per scope
    revoked = json.loads(world.syncd("token", "revoke", "bob", "--reason", "left", "--config", str(world.config),
                                     "--output", "json").stdout)
    assert revoked["writes"] == 3  # the binding, the token Secret, the ServiceAccount
