"""Pushed SCIM resources on every ledger backend: versioned writes checked in their transaction, unique keys per
source, members as rows, per-tenant, per-source and targeted reads in a stable order, counts, deletes."""

from __future__ import annotations

import pytest

from syncd.adapters.ledger import ScimRecord, ScimResource, ScimStore
from syncd.errors import StaleVersion, ValueTaken
from tests.ledger.conftest import Ledger


def user(resource_id: str, name: str, **body: object) -> ScimRecord:
    return ScimRecord("User", resource_id, {"userName": name, **body}, unique_key=name.lower())


def group(resource_id: str, name: str, *members: str) -> ScimRecord:
    return ScimRecord("Group", resource_id, {"displayName": name, "members": [{"value": m} for m in members]},
                      unique_key=name.lower(), display=name, members=frozenset(members))


def test_scim_store_creates_replaces_reads_and_deletes(ledger: Ledger):
    store = ScimStore(ledger.database)
    store.create("okta", "idp", user("u2", "bob"))
    store.create("okta", "idp", user("u1", "ann"))
    store.create("okta", "idp", group("g1", "devs", "u1"))
    store.create("entra", "idp", user("u1", "carl"))  # ids are per tenant
    store.create("other", "hr", ScimRecord("User", "u9", {"userName": "dora"}, external_key="x-9"))
    before, after = store.replace("okta", "User", "u1", lambda stored: user("u1", "ann", active=False))
    assert (before.version, after) == (1, ScimResource("User", "u1", {"userName": "ann", "active": False}, 2))

    assert store.find("okta", ["User", "Group"]) == [
        ScimResource("Group", "g1", {"displayName": "devs", "members": [{"value": "u1"}]}),
        ScimResource("User", "u1", {"userName": "ann", "active": False}, 2),
        ScimResource("User", "u2", {"userName": "bob"})]
    assert [r.id for r in store.find("okta", ["User"], "unique_key", "bob")] == ["u2"]
    assert [r.id for r in store.find("other", ["User"], "external_key", "x-9")] == ["u9"]
    assert store.get("okta", "User", "u1") == after and store.get("okta", "User", "nobody") is None
    assert store.groups_of("okta", ["u1", "u2"]) == {"u1": [("g1", "devs")]}
    pushed = store.source_resources("idp")
    assert [r.resource_type for r in pushed] == ["Group", "User", "User", "User"]
    assert sorted((r.id, r.body["userName"]) for r in pushed[1:]) == [("u1", "ann"), ("u1", "carl"), ("u2", "bob")]

    # A targeted read: every group, only the users named (whichever tenant pushed them).
    assert [(r.resource_type, r.id) for r in store.source_resources("idp", users=["u1", "nobody"])] == [
        ("Group", "g1"), ("User", "u1"), ("User", "u1")]
    many = ["u1", *(f"gone-{n}" for n in range(70_000))]  # more ids than one query may carry
    assert [(r.resource_type, r.id) for r in store.source_resources("idp", users=many)] == [
        ("Group", "g1"), ("User", "u1"), ("User", "u1")]
    assert store.count_users("idp") == 3 and store.count_users("none") == 0

    assert store.delete("okta", "User", "u2")[0].id == "u2"
    assert store.delete("okta", "User", "missing") is None
    assert [r.id for r in store.find("okta", ["User", "Group"])] == ["g1", "u1"]
    assert [r.body["userName"] for r in store.find("entra", ["User"])] == ["carl"]
    assert [r.id for r in store.source_resources("hr")] == ["u9"]


def test_a_write_must_find_the_version_it_read_and_unique_keys_hold_per_source(ledger: Ledger):
    store = ScimStore(ledger.database)
    store.create("okta", "idp", user("u1", "ann"))
    with pytest.raises(ValueTaken):
        store.create("okta", "idp", user("u2", "ANN"))
    with pytest.raises(ValueTaken):  # another tenant feeding the same source
        store.create("entra", "idp", user("u2", "ann"))
    store.create("other", "hr", user("u2", "ann"))  # another source
    store.create("okta", "idp", group("g1", "devs"))
    with pytest.raises(ValueTaken):
        store.create("okta", "idp", group("g2", "Devs"))
    store.create("okta", "idp", user("u3", "cat"))
    with pytest.raises(ValueTaken):  # a rename onto a taken name
        store.replace("okta", "User", "u3", lambda stored: user("u3", "ann"))

    store.replace("okta", "User", "u1", lambda stored: user("u1", "ann", title="x"), expected=1)
    with pytest.raises(StaleVersion):  # written meanwhile: nothing is written back
        store.replace("okta", "User", "u1", lambda stored: user("u1", "ann", title="stale"), expected=1)
    with pytest.raises(StaleVersion):
        store.delete("okta", "User", "u1", expected=1)
    assert store.get("okta", "User", "u1") == ScimResource("User", "u1", {"userName": "ann", "title": "x"}, 2)
    assert store.replace("okta", "User", "nobody", lambda stored: user("nobody", "x")) is None


def test_deleting_a_user_rewrites_its_groups_in_the_same_transaction(ledger: Ledger):
    store = ScimStore(ledger.database)
    store.create("okta", "idp", user("u1", "ann"))
    store.create("entra", "idp2", user("u1", "carl"))
    store.create("okta", "idp", group("g1", "devs", "u1"))
    store.create("entra", "idp2", group("g1", "devs", "u1"))  # a group of that name in another source
    before, left = store.delete("okta", "User", "u1", leave=lambda stored: group("g1", "devs"))
    assert (before.id, [(g.id, g.version) for g in left]) == ("u1", [("g1", 2)])
    assert store.find("okta", ["User", "Group"]) == [
        ScimResource("Group", "g1", {"displayName": "devs", "members": []}, 2)]
    assert store.groups_of("okta", ["u1"]) == {} and store.groups_of("entra", ["u1"]) == {"u1": [("g1", "devs")]}
    assert [r.body["userName"] for r in store.find("entra", ["User"])] == ["carl"]
