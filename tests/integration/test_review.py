"""`syncd review` on the real control plane: privileged scopes judged from the live rules of the roles bound (the
API server's own `edit` and `view`, a Role with `*`), each with the policy rules that grant it and the token's
expiry, as JSON, CSV and HTML; `token list` shows each credential's purpose. The ledger is only read."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import yaml

from tests.conftest import free_port, write_yaml
from tests.integration.conftest import World

ALICE = {"id": "1001", "username": "alice", "groups": "developers"}
BOB = {"id": "1002", "username": "bob", "groups": "sre"}
CAROL = {"id": "1003", "username": "carol <script>", "groups": "ops"}


def review(world: World, *args: str) -> str:
    done = world.syncd("review", "--config", str(world.config), *args)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_review_flags_privileged_scopes_from_live_rules_with_purpose_and_expiry(world: World):
    world.control_plane.kubectl("create", "role", "star", "-n", world.ns("team-b"), "--verb=*", "--resource=*")
    world.set_policy(extra_rules=({"name": "ops star", "match": {"groups": ["ops"]},
                                   "grant": [{"cluster": "dev", "namespaces": [world.ns("team-b")], "role": "star",
                                              "role_kind": "Role"}]},))
    world.write_people(ALICE, BOB, CAROL)
    world.reconcile()
    ledger = world.directory / "ledger.db"
    before = ledger.read_bytes()

    data = json.loads(review(world, "--output", "json"))
    by = {a["username"]: a for a in data["access"]}
    assert set(by) == {"alice", "bob", "carol <script>"}
    alice, bob, carol = by["alice"], by["bob"], by["carol <script>"]
    assert (alice["privileged"], alice["purpose"]) == (True, ["developers"])
    assert {"secrets read", "pods/exec"} <= set(alice["scopes"][0]["why"])
    assert (bob["privileged"], bob["purpose"], bob["scopes"][0]["why"]) == (False, ["sre"], [])
    assert carol["privileged"] is True and carol["scopes"][0]["granted_by"] == ["ops star"]
    assert carol["scopes"][0]["why"][:2] == ["all verbs", "all resources"]
    tokens = {t["owner"]: t for t in json.loads(world.syncd("token", "list", "--config", str(world.config),
                                                            "--output", "json").stdout)}
    for name, access in by.items():
        assert access["expires_at"] == tokens[name]["expires_at"] and datetime.fromisoformat(access["expires_at"])
        assert tokens[name]["purpose"] == access["purpose"]
        assert access["last_used"] is None and access["idle"] is None  # idle_after is not given yet

    rows = {r["username"]: r for r in csv.DictReader(io.StringIO(review(world, "--output", "csv"), newline=""))}
    assert (rows["alice"]["privileged"], rows["alice"]["granted_by"]) == ("yes", "developers")
    assert (rows["bob"]["privileged"], rows["bob"]["granted_by"]) == ("no", "sre")
    assert rows["carol <script>"]["privileged"] == "yes" and rows["alice"]["expires_at"] == alice["expires_at"]

    page = review(world, "--output", "html")
    assert page.count("<script>") == 1 and "carol &lt;script&gt;" in page
    assert "ops star" in page and alice["expires_at"] in page
    assert ledger.read_bytes() == before, "the review wrote to the ledger"


def test_a_cluster_that_cannot_be_read_shows_privilege_unknown(world: World):
    world.write_people(BOB)
    world.reconcile()
    dead = yaml.safe_load(world.control_plane.admin_kubeconfig.read_text())
    for entry in dead["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    write_yaml(world.directory / "dead.kubeconfig", dead)
    world.configure(clusters=[world.settings["clusters"][0] | {"kubeconfig": str(world.directory / "dead.kubeconfig"),
                                                               "timeout": "5s"}])
    (bob,) = json.loads(review(world, "--output", "json", "--cluster", "dev"))["access"]
    assert bob["privileged"] is None and "cluster dev" in bob["scopes"][0]["note"]
