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
