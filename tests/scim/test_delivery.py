"""Pushed people get their own delivery folder, and a leaver whose files cannot be removed stops nobody else."""

from __future__ import annotations

import pytest

from syncd.core.model import person_key
from tests.conftest import write_yaml
from tests.integration.conftest import World
from tests.scim.conftest import OTHER_TOKEN, Endpoint, configure_scim, start_endpoint
from tests.scim.test_idp_shapes import GROUP, USER, bindings, patch, send

pytestmark = pytest.mark.kube


def push_developers(client, *names: str) -> tuple[dict[str, str], str]:
    """These users in a `developers` group: their ids by name, and the group's id."""
    ids = {name: send(client, "POST", "/Users", {"schemas": [USER], "userName": name}, expect=201)["id"]
           for name in names}
    group = send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers",
                                             "members": [{"value": i} for i in ids.values()]}, expect=201)
    return ids, group["id"]


def test_one_username_from_two_tenants_is_two_people_with_two_folders(world: World):
    # Two identity providers, each feeding a source of its own (within one source a userName is unique).
    configure_scim(world)
    world.settings["sources"].append({"name": "idp2", "type": "scim", "mode": "push"})
    world.settings["scim"]["tenants"][1]["source"] = "idp2"
    write_yaml(world.config, world.settings)
    scim = start_endpoint(world.config)
    try:
        okta_sam = push_developers(scim.client(), "sam")[0]["sam"]
        entra_sam = push_developers(scim.client(OTHER_TOKEN), "sam")[0]["sam"]
        scim.settle()
    finally:
        scim.stop()
    assert world.folder(okta_sam) != world.folder(entra_sam)
    for pid in (okta_sam, entra_sam):
        expected = f"system:serviceaccount:{world.system_namespace}:syncd-{person_key(pid)}"
        assert world.token_user(world.token(pid)) == expected


def test_a_leaver_whose_files_cannot_be_removed_does_not_stop_the_next_one(world: World, scim: Endpoint):
    client = scim.client()
    ids, group = push_developers(client, "ann", "ben", "cat")
    scim.settle()
    first, second = sorted((ids["ann"], ids["ben"]))  # the run revokes in id order: the broken one goes first
    token_path = world.folder(first) / "dev.token"
    token_path.unlink()
    (token_path / "in-the-way").mkdir(parents=True)
    patch(client, f"/Groups/{group}", *({"op": "remove", "path": f'members[value eq "{pid}"]'}
                                        for pid in (first, second)))
    scim.settle()
    (report,) = scim.app.reconciler.reports[-1:]
    assert sorted(a.person_id for a in report.outcome.applied + [f for f, _ in report.outcome.failed]) == [
        first, second]
    assert [a.person_id for a, _ in report.outcome.failed] == [first]
    assert bindings(world, first) == [] and bindings(world, second) == []
    assert len(bindings(world, ids["cat"])) == 1
