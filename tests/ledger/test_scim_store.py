"""Pushed SCIM resources on every ledger backend: upsert, per-tenant, per-source and targeted reads in a stable order,
counts, delete."""

from __future__ import annotations

from syncd.adapters.ledger import ScimResource, ScimStore
from tests.ledger.conftest import Ledger


def test_scim_store_upserts_reads_and_deletes(ledger: Ledger):
    store = ScimStore(ledger.database)
    store.put("okta", "idp", ScimResource("User", "u2", {"userName": "bob"}))
    store.put("okta", "idp", ScimResource("User", "u1", {"userName": "ann"}))
    store.put("okta", "idp", ScimResource("Group", "g1", {"displayName": "devs", "members": [{"value": "u1"}]}))
    store.put("entra", "idp", ScimResource("User", "u1", {"userName": "carl"}))  # ids are per tenant
    store.put("other", "hr", ScimResource("User", "u9", {"userName": "dora"}))
    store.put("okta", "idp", ScimResource("User", "u1", {"userName": "ann", "active": False}))  # replaced whole

    assert store.tenant_resources("okta") == [
        ScimResource("Group", "g1", {"displayName": "devs", "members": [{"value": "u1"}]}),
        ScimResource("User", "u1", {"userName": "ann", "active": False}),
        ScimResource("User", "u2", {"userName": "bob"})]
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

    store.delete("okta", "User", "u2")
    store.delete("okta", "User", "missing")
    assert [r.id for r in store.tenant_resources("okta")] == ["g1", "u1"]
    assert [r.body["userName"] for r in store.tenant_resources("entra")] == ["carl"]
    assert [r.id for r in store.source_resources("hr")] == ["u9"]


def test_deleting_a_user_rewrites_its_groups_in_the_same_transaction(ledger: Ledger):
    store = ScimStore(ledger.database)
    store.put("okta", "idp", ScimResource("User", "u1", {"userName": "ann"}))
    store.put("entra", "idp", ScimResource("User", "u1", {"userName": "carl"}))
    store.put("okta", "idp", ScimResource("Group", "g1", {"displayName": "devs", "members": [{"value": "u1"}]}))
    store.delete_user("okta", "idp", "u1", [ScimResource("Group", "g1", {"displayName": "devs"})])
    assert store.tenant_resources("okta") == [ScimResource("Group", "g1", {"displayName": "devs"})]
    assert [r.body["userName"] for r in store.tenant_resources("entra")] == ["carl"]
    store.delete_user("okta", "idp", "missing", [])
    assert len(store.tenant_resources("okta")) == 1
