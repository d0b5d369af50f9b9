"""Joiners, movers and leavers from a real slapd, through `syncd reconcile` (and `Engine.poll`) on the real
control plane."""

from __future__ import annotations

import json

import pytest

from syncd.config import load_settings
from syncd.core.model import person_key
from syncd.runtime.engine import Engine
from tests.integration.conftest import World
from tests.ldap.conftest import Directory
from tests.ldap.slapd import Slapd

pytestmark = pytest.mark.kube


def kinds(run: dict) -> list[tuple[str, str, str]]:
    return [(a["kind"], a["reason"], a["username"]) for a in run["actions"]]


def test_joiner_appears_and_gets_a_credential(ldap_world: World, directory: Directory):
    directory.group("developers", directory.person("alice"))
    run = ldap_world.reconcile()
    assert kinds(run) == [("issue", "joiner", "alice")]
    assert ldap_world.can("alice", "create", "deployments", ldap_world.ns("team-a")) == "yes"
    (account,) = ldap_world.ours("serviceaccounts", person_key(directory.entry_uuid(directory.dn("alice"))))
    assert account["metadata"]["annotations"]["syncd.io/username"] == "alice"
    assert ldap_world.reconcile()["result"] == "no-op"


def test_added_to_a_group_is_rescoped(ldap_world: World, directory: Directory):
    alice = directory.person("alice")
    directory.group("developers", alice)
    directory.group("sre", directory.person("bob"))
    ldap_world.reconcile()
    directory.join("sre", alice)
    run = ldap_world.reconcile()
    assert kinds(run) == [("rescope", "mover", "alice")]
    assert ldap_world.can("alice", "list", "pods", ldap_world.ns("team-b")) == "yes"
    assert ldap_world.can("alice", "create", "deployments", ldap_world.ns("team-a")) == "yes"


def test_moved_to_another_ou_and_renamed_is_still_the_same_person(ldap_world: World, directory: Directory):
    directory.group("developers", directory.person("alice"))
    ldap_world.reconcile()
    token = ldap_world.token("alice")
    directory.move("alice", "alice.archer", "contractors")  # memberof-refint follows the new DN
    run = ldap_world.reconcile()
    assert kinds(run) == [("rescope", "rename", "alice.archer")]
    assert ldap_world.token("alice.archer") == token
    assert ldap_world.can("alice.archer", "create", "deployments", ldap_world.ns("team-a")) == "yes"


def test_disabled_account_is_revoked(ldap_world: World, directory: Directory):
    alice = directory.person("alice")
    directory.group("developers", alice, directory.person("bob"))
    ldap_world.reconcile()
    token = ldap_world.token("alice")
    directory.lock(alice)
    run = ldap_world.reconcile()
    assert kinds(run) == [("revoke", "disabled", "alice")]
    assert run["confirmed_rejections"] == 1
    assert not ldap_world.token_authenticates(token)
    assert ldap_world.can("bob", "create", "deployments", ldap_world.ns("team-a")) == "yes"


def test_deleted_person_is_revoked_on_the_next_full_run(ldap_world: World, directory: Directory):
    alice, bob = directory.person("alice"), directory.person("bob")
    directory.group("developers", alice, bob)
    ldap_world.reconcile()
    token = ldap_world.token("bob")
    directory.server.delete(bob)
    run = ldap_world.reconcile()
    assert kinds(run) == [("revoke", "leaver", "bob")]
    ldap_world.wait_until_rejected(token)


def test_people_who_lose_every_entitling_group_are_revoked(ldap_world: World, directory: Directory):
    alice, bob = directory.person("alice"), directory.person("bob")
    directory.group("developers", alice, bob)
    ldap_world.reconcile()
    directory.leave("developers", bob)
    assert kinds(ldap_world.reconcile()) == [("revoke", "no-entitlement", "bob")]


def test_slapd_stopped_revokes_nothing_and_says_why(world: World, own_slapd: Slapd):
    directory = Directory(own_slapd, "stopped").create()
    directory.group("developers", directory.person("alice"))
    world.configure(sources=[directory.source_settings()])
    world.reconcile()
    own_slapd.stop()
    done = world.syncd("reconcile", "--config", str(world.config))
    assert done.returncode == 69, done.stderr
    assert "source directory: no directory server could be reached" in done.stderr
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"


def test_a_directory_that_suddenly_returns_nobody_revokes_nothing(ldap_world: World, directory: Directory):
    people = [directory.person(name) for name in ("alice", "bob")]
    directory.group("developers", *people)
    ldap_world.reconcile()
    directory.server.delete(directory.group_dn("developers"), *people)
    done = ldap_world.syncd("reconcile", "--config", str(ldap_world.config), "--output", "json")
    assert done.returncode == 4, done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert run["actions"] == [] and {h["username"] for h in run["held"]} == {"alice", "bob"}
    assert "--allow-mass-revocation" in done.stderr
    assert ldap_world.can("alice", "create", "deployments", ldap_world.ns("team-a")) == "yes"
    run = ldap_world.reconcile("--allow-mass-revocation")
    assert sorted(kinds(run)) == [("revoke", "leaver", "alice"), ("revoke", "leaver", "bob")]


def test_source_test_command_binds_counts_and_maps_a_sample(ldap_world: World, directory: Directory):
    directory.group("developers", directory.person("alice"))
    directory.person("bob")
    done = ldap_world.syncd("source", "test", "--config", str(ldap_world.config), "--output", "json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert (result["people"], result["groups"]) == (2, 1)
    assert result["sample"]["username"] == "alice" and result["sample"]["groups"] == ["developers"]
    text = ldap_world.syncd("source", "test", "--config", str(ldap_world.config)).stdout
    assert "people: 2, groups: 1" in text and "sample: alice" in text
    assert result["watch"] == "syncrepl" and "watch: syncrepl" in text  # slapd with syncprov offers content sync


def test_poll_reconciles_just_the_changed_people(ldap_world: World, directory: Directory):
    alice, bob, carol = (directory.person(name) for name in ("alice", "bob", "carol"))
    directory.group("developers", alice, carol)
    directory.group("sre", carol)
    ldap_world.configure(sources=[directory.source_settings(incremental={"attribute": "entryCSN"})])
    engine = Engine.from_settings(load_settings(ldap_world.config))
    try:
        (full,) = engine.reconcile()
        assert {a.username for a in full.plan.actions} == {"alice", "carol"}
        assert engine.poll("directory") is None
        directory.join("sre", bob)
        report = engine.poll("directory")
        assert [(a.kind, a.reason, a.username) for a in report.plan.actions] == [("issue", "joiner", "bob")]
        directory.lock(alice)
        report = engine.poll("directory")
        assert [(a.kind, a.reason, a.username) for a in report.plan.actions] == [("revoke", "disabled", "alice")]
        directory.server.delete(directory.group_dn("sre"), carol)  # a poll cannot see deletions
        report = engine.poll("directory")
        assert report is None or not report.plan.actions
        assert ldap_world.can("carol", "list", "pods", ldap_world.ns("team-b")) == "yes"
        (full,) = engine.reconcile()
        assert sorted((a.kind, a.reason, a.username) for a in full.plan.actions) == [
            ("revoke", "leaver", "carol"), ("revoke", "no-entitlement", "bob")]
    finally:
        engine.close()
