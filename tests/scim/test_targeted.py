"""A push reconciles only the people it touches, reading only them, never the whole source; each tenant sees only
its own resources."""

from __future__ import annotations

import pytest

from tests.integration.conftest import World
from tests.scim.conftest import OTHER_TOKEN, Endpoint
from tests.scim.test_idp_shapes import GROUP, USER, bindings, patch, send

pytestmark = pytest.mark.kube


def developers(client, *names: str) -> dict[str, str]:
    """Push these users and a `developers` group holding them; their ids by name."""
    ids = {name: send(client, "POST", "/Users", {"schemas": [USER], "userName": name}, expect=201)["id"]
           for name in names}
    send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers",
                                     "members": [{"value": i} for i in ids.values()]}, expect=201)
    return ids


def test_a_push_reconciles_only_the_people_it_touches(world: World, scim: Endpoint):
    client = scim.client()
    ids = developers(client, "alice", "bob")
    scim.settle()
    send(scim.client(OTHER_TOKEN), "GET", f"/Users/{ids['alice']}", expect=404)  # another tenant's user

    # Drift a full run would repair: bob's RoleBinding deleted by hand.
    (binding,) = bindings(world, ids["bob"])
    world.control_plane.kubectl("delete", "rolebinding", binding["metadata"]["name"],
                                "-n", binding["metadata"]["namespace"])
    runs = len(scim.app.reconciler.reports)
    patch(client, f"/Users/{ids['alice']}", {"op": "replace", "path": "displayName", "value": "Alice"})
    scim.settle()
    assert len(scim.app.reconciler.reports) == runs, "a change that cannot alter access started a run"

    patch(client, f"/Users/{ids['alice']}", {"op": "replace", "value": {"active": False}})
    scim.settle()
    runs_after = scim.app.reconciler.reports[runs:]
    assert runs_after and {a.person_id for r in runs_after for a in r.plan.actions} == {ids["alice"]}
    assert bindings(world, ids["alice"]) == []
    assert bindings(world, ids["bob"]) == [], "the targeted run went beyond the person the push touched"

    world.reconcile("--source", "idp")  # the full run repairs bob
    assert len(bindings(world, ids["bob"])) == 1


def test_a_deleted_user_loses_access_and_the_last_one_is_held(world: World, scim: Endpoint):
    # A targeted run reads only the people a push touched; a deleted one is missing from that read.
    client = scim.client()
    ids = developers(client, "alice", "bob")
    scim.settle()

    send(client, "DELETE", f"/Users/{ids['alice']}", expect=204)
    scim.settle()
    assert bindings(world, ids["alice"]) == [] and len(bindings(world, ids["bob"])) == 1

    # The source now holds nobody: as with a full read, that looks like a broken feed, not a leaver.
    send(client, "DELETE", f"/Users/{ids['bob']}", expect=204)
    scim.settle()
    (report,) = scim.app.reconciler.reports[-1:]
    assert [h.action.person_id for h in report.plan.held] == [ids["bob"]]
    assert "no people" in report.plan.held[0].why and len(bindings(world, ids["bob"])) == 1
