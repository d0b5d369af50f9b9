"""Exports and group names as real directories write them, through `syncd reconcile` on the real control plane."""

from __future__ import annotations

import pytest

from syncd.core.model import person_key
from tests.integration.conftest import World

pytestmark = pytest.mark.kube

LDIF_PERSON = """dn: uid={uid},ou=people,dc=example,dc=org
entryUUID: {id}
uid: {uid}
mail: {uid}@example.org
memberOf: {group}
"""


def write_ldif(world: World, *people: dict[str, str]) -> None:
    # As ldapsearch -LLL and export tools write it: a version line, a comment, and escaped group DNs.
    text = "version: 1\n\n# people\n" + "\n".join(LDIF_PERSON.format(**p) for p in people)
    (world.directory / "people.ldif").write_text(text)


def test_a_leaver_removed_from_an_ldif_export_loses_access(world: World):
    world.configure(sources=[{"name": "hr", "type": "file", "path": "people.ldif", "id_attribute": "entryUUID",
                              "username_attribute": "uid", "groups_attribute": "memberOf"}])
    world.set_policy(extra_rules=({"name": "escaped", "match": {"groups": ["dev,elopers"]},
                                   "grant": [{"cluster": "dev", "namespaces": [world.ns("team-b")], "role": "view"}]},))
    alice = {"id": "e-1", "uid": "alice", "group": "cn=developers,ou=groups,dc=example,dc=org"}
    bob = {"id": "e-2", "uid": "bob", "group": r"cn=dev\,elopers,ou=groups,dc=example,dc=org"}
    write_ldif(world, alice, bob)
    run = world.reconcile()
    assert sorted((a["kind"], a["username"]) for a in run["actions"]) == [("issue", "alice"), ("issue", "bob")]
    assert world.can("bob", "list", "pods", world.ns("team-b")) == "yes"

    write_ldif(world, alice)
    run = world.reconcile()
    assert [(a["kind"], a["reason"], a["username"]) for a in run["actions"]] == [("revoke", "leaver", "bob")]
    assert world.ours("rolebindings", person_key("e-2")) == []
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"


def test_group_names_match_the_policy_whatever_their_case(world: World):
    world.write_people({"id": "1001", "username": "alice", "groups": "Developers"})
    run = world.reconcile()
    assert [(a["kind"], a["username"]) for a in run["actions"]] == [("issue", "alice")]
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
