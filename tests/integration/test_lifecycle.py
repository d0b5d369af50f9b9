"""Credential lifecycle on a real control plane: refresh, rotation with overlap, immediate revocation,
ghost sweeps, the exec credential plugin, and the ledger's export and verification."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from syncd.core.model import person_key
from tests.integration.conftest import World

pytestmark = pytest.mark.kube

ALICE = {"id": "1001", "username": "alice", "groups": "developers"}
BOB = {"id": "1002", "username": "bob", "groups": "sre"}


def reconcile_until(world: World, kind: str, timeout: float = 60) -> dict:
    """Reconcile (dry) until a plan holds an action of this kind, then apply it. Bounded."""
    deadline = time.monotonic() + timeout
    while not any(a["kind"] == kind for a in world.reconcile("--dry-run")["actions"]):
        assert time.monotonic() < deadline, f"no {kind} planned within {timeout} s"
        time.sleep(1)
    return world.reconcile()


def events(world: World, person: str) -> list[tuple[str, str]]:
    done = world.syncd("ledger", "log", "--config", str(world.config), "--person", person, "--output", "json")
    return [(e["action"], e["reason"]) for e in json.loads(done.stdout)]


def credentials(world: World, *args: str) -> list[dict]:
    return json.loads(world.syncd("token", "list", "--config", str(world.config), "--output", "json", *args).stdout)


def test_refresh_replaces_the_token_file_and_kubectl_keeps_working(world: World):
    world.set_policy(defaults={"token_ttl": "10m"})
    world.configure(tokens={"refresh_at": 0.01})  # 6 s into a 10 min token
    world.write_people(ALICE)
    world.reconcile()
    kubeconfig_before = world.kubeconfig("alice").read_bytes()
    old = world.token("alice")
    run = reconcile_until(world, "refresh")
    assert [(a["kind"], a["reason"]) for a in run["actions"]] == [("refresh", "expiring")]
    assert world.token("alice") != old
    assert world.kubeconfig("alice").read_bytes() == kubeconfig_before  # only the token file changed
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    assert world.token_authenticates(old)  # still inside its grace window
    states = sorted(c["state"] for c in credentials(world))
    assert states == ["active", "retiring"]


def test_rotation_overlaps_then_retires_the_old_token(world: World):
    world.set_policy(defaults={"rotation_period": "5s"})
    world.configure(tokens={"rotation_grace": "8s"})
    world.write_people(ALICE)
    world.reconcile()
    old = world.token("alice")
    run = reconcile_until(world, "rotate")
    assert [(a["kind"], a["reason"]) for a in run["actions"]] == [("rotate", "rotation-due")]
    new = world.token("alice")
    assert new != old
    assert world.token_authenticates(old) and world.token_authenticates(new)  # the overlap
    world.set_policy(defaults={"rotation_period": "1h"})  # no second rotation while we watch the first retire
    run = reconcile_until(world, "retire", timeout=30)
    assert ("retire", "grace-ended") in [(a["kind"], a["reason"]) for a in run["actions"]]
    world.wait_until_rejected(old)
    assert world.token_authenticates(world.token("alice"))
    assert events(world, "alice") == [("issue", "joiner"), ("rotate", "rotation-due"), ("retire", "grace-ended")]


def test_exposed_token_is_revoked_now_and_replaced_on_the_next_run(world: World):
    world.write_people(ALICE, BOB)
    world.reconcile()
    exposed = world.token("alice")
    (alice,) = [c for c in credentials(world) if c["owner"] == "alice"]
    assert alice["scopes"] == [f"{world.ns('team-a')}:ClusterRole/edit"] and alice["state"] == "active"
    done = world.syncd("token", "revoke", alice["fingerprint"][:20], "--reason", "exposed", "--config",
                       str(world.config), "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["confirmed_rejections"] == 1
    assert not world.token_authenticates(exposed)
    assert exposed not in done.stdout + done.stderr
    assert world.token_authenticates(world.token("bob"))  # nobody else is touched
    run = world.reconcile()
    assert [(a["kind"], a["reason"]) for a in run["actions"]] == [("repair", "drift")]
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    (revoked,) = [c for c in credentials(world, "--all") if c["state"] == "revoked"]
    assert revoked["revoke_reason"] == "exposed" and revoked["rejected_at"]


def test_revoking_a_person_removes_all_access_at_once(world: World):
    world.write_people(ALICE)
    world.reconcile()
    done = world.syncd("token", "revoke", "alice", "--reason", "left", "--config", str(world.config))
    assert done.returncode == 0, done.stderr
    assert world.ours("rolebindings", person_key("1001")) == []
    assert world.ours("serviceaccounts", person_key("1001")) == []
    assert ("revoke", "left") in events(world, "alice")


def test_unknown_revoke_target_is_a_clear_error(world: World):
    world.write_people(ALICE)
    world.reconcile()
    done = world.syncd("token", "revoke", "sha256:ffff", "--reason", "exposed", "--config", str(world.config))
    assert done.returncode == 65 and "no live credential or person matches" in done.stderr


def test_ghosts_are_swept(world: World):
    world.write_people(ALICE, BOB)
    world.reconcile()
    ns = world.system_namespace
    # A token Secret no record explains, left under our labels.
    world.control_plane.kubectl("create", "secret", "generic", "syncd-1001-stray", "-n", ns)
    world.label_ours("secret", "syncd-1001-stray", ns, "1001", "syncd.io/token=true")
    # Bob's ServiceAccount deleted by hand: his bindings outlive it, his token dies with it.
    world.control_plane.kubectl("delete", "serviceaccount", f"syncd-{person_key('1002')}", "-n", ns)
    run = world.reconcile()
    assert sorted((a["kind"], a["reason"], a["username"]) for a in run["actions"]) == [
        ("repair", "drift", "bob"), ("retire", "stale", "alice")]
    assert [s["metadata"]["name"] for s in world.ours("secrets", "1001")] != [] and all(
        s["metadata"]["name"] != "syncd-1001-stray" for s in world.ours("secrets", "1001"))
    assert world.can("bob", "list", "pods", world.ns("team-b")) == "yes"
    assert world.reconcile()["actions"] == []


def test_report_only_sweep_lists_orphans_without_removing_them(world: World):
    world.configure(sweep={"orphans": "report"})
    world.write_people(ALICE)
    world.reconcile()
    world.control_plane.kubectl("create", "serviceaccount", "syncd-ghost", "-n", world.system_namespace)
    world.label_ours("serviceaccount", "syncd-ghost", world.system_namespace, "ghost")
    run = world.reconcile()
    assert run["actions"] == [] and [(h["kind"], h["person_id"]) for h in run["held"]] == [("orphan", "ghost")]
    assert world.ours("serviceaccounts", "ghost")


def test_exec_credential_plugin_serves_kubectl(world: World):
    world.configure(delivery={"mode": "exec", "exec_command": str(world.directory / "syncd-exec")})
    # The exec command must run syncd from this checkout, as an installed console script would.
    import sys
    (world.directory / "syncd-exec").write_text(f"#!/bin/sh\nexec {sys.executable} -m syncd \"$@\"\n")
    (world.directory / "syncd-exec").chmod(0o755)
    world.write_people(ALICE)
    world.reconcile()
    config = world.kubeconfig("alice").read_text()
    assert "exec:" in config and world.token("alice") not in config
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    done = world.syncd("credential", "--token-file", str(world.folder("alice") / "dev.token"))
    credential = json.loads(done.stdout)
    assert credential["kind"] == "ExecCredential" and credential["apiVersion"] == "client.authentication.k8s.io/v1"
    assert credential["status"]["expirationTimestamp"].endswith("Z")


def test_ledger_export_and_verify_find_tampering(world: World):
    world.write_people(ALICE, BOB)
    world.reconcile()
    world.write_people(BOB)
    world.reconcile()
    exported = world.syncd("ledger", "export", "--config", str(world.config)).stdout.splitlines()
    lines = [json.loads(line) for line in exported]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(lines, lines[1:], strict=False))
    assert world.syncd("ledger", "verify", "--config", str(world.config)).returncode == 0
    with sqlite3.connect(world.directory / "ledger.db") as db:
        db.execute("UPDATE event SET username = 'mallory' WHERE seq = 2")
    done = world.syncd("ledger", "verify", "--config", str(world.config))
    assert done.returncode == 65 and "breaks at event 2" in done.stderr
