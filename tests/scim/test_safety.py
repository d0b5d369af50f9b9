"""A mass deactivation pushed one request at a time is held by the safety limits: recorded, not applied."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import World
from tests.scim.conftest import configure_scim, start_endpoint
from tests.scim.test_idp_shapes import GROUP, USER, bindings, patch, send

pytestmark = pytest.mark.kube


def test_deactivations_beyond_the_limit_are_held_until_allowed(world: World):
    world.settings["safety"] = {"max_revocations": 2}
    configure_scim(world)
    scim = start_endpoint(world.config)
    try:
        client = scim.client()
        ids = [send(client, "POST", "/Users", {"schemas": [USER], "userName": f"dev{n}"}, expect=201)["id"]
               for n in range(4)]
        send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers",
                                         "members": [{"value": i} for i in ids]}, expect=201)
        scim.settle()
        assert all(bindings(world, i) for i in ids)

        for person in ids[:3]:  # one request, one run at a time: the window adds them up
            patch(client, f"/Users/{person}", {"op": "replace", "value": {"active": False}})
            scim.settle()
        assert bindings(world, ids[0]) == [] and bindings(world, ids[1]) == []
        assert bindings(world, ids[2]), "the third deactivation went past max_revocations and was applied"
        assert world.can("dev2", "create", "deployments", world.ns("team-a")) == "yes"
        assert bindings(world, ids[3])
    finally:
        scim.stop()

    log = json.loads(world.syncd("ledger", "log", "--config", str(world.config), "--person", "dev2",
                                 "--output", "json").stdout)
    held = [e for e in log if e["result"] == "held"]
    assert [(e["action"], e["reason"]) for e in held] == [("revoke", "disabled")]
    assert "max_revocations" in held[0]["error"]

    # A human allows it; the full run revokes the one held.
    run = world.reconcile("--source", "idp", "--allow-mass-revocation")
    assert [(a["kind"], a["reason"]) for a in run["actions"]] == [("revoke", "disabled")]
    assert bindings(world, ids[2]) == [] and bindings(world, ids[3])

    # What the human allowed is not counted again: the next single deactivation is an ordinary leaver.
    scim = start_endpoint(world.config)
    try:
        patch(scim.client(), f"/Users/{ids[3]}", {"op": "replace", "value": {"active": False}})
        scim.settle()
        (report,) = scim.app.reconciler.reports[-1:]
        assert [h.why for h in report.plan.held] == []
        assert bindings(world, ids[3]) == []
    finally:
        scim.stop()


def test_a_pushed_mass_deactivation_is_held_then_allowed_and_a_later_leaver_is_ordinary(world: World):
    configure_scim(world)  # the default limits: 50 people, 25% of the holders
    scim = start_endpoint(world.config)
    try:
        client = scim.client()
        ids = [send(client, "POST", "/Users", {"schemas": [USER], "userName": f"dev{n}"}, expect=201)["id"]
               for n in range(30)]
        send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers",
                                         "members": [{"value": i} for i in ids]}, expect=201)
        scim.settle()
        mass, staying = ids[:15], ids[15:]
        for person in mass:  # an IdP sends a mass deactivation one request at a time
            patch(client, f"/Users/{person}", {"op": "replace", "value": {"active": False}})
        scim.settle()
        revoked = [p for p in mass if not bindings(world, p)]
        assert len(revoked) <= 7, revoked  # a quarter of the 30 holders at most; the rest is held
    finally:
        scim.stop()

    run = world.reconcile("--source", "idp", "--allow-mass-revocation")
    assert len([a for a in run["actions"] if a["kind"] == "revoke"]) == 15 - len(revoked)
    assert not any(bindings(world, p) for p in mass)

    # After the approval, single deactivations are ordinary leavers, revoked at once, one run each.
    scim = start_endpoint(world.config)
    try:
        for person in staying[:3]:
            patch(scim.client(), f"/Users/{person}", {"op": "replace", "value": {"active": False}})
            scim.settle()
            (report,) = scim.app.reconciler.reports[-1:]
            assert [h.why for h in report.plan.held] == [] and bindings(world, person) == []
        assert all(bindings(world, p) for p in staying[3:])
        assert scim.engine.read_model.held_revocations("idp") == frozenset()
    finally:
        scim.stop()
