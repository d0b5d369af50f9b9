"""Two `syncd run` replicas on one PostgreSQL ledger serve SCIM as one server: whatever one is told, the other
answers; a duplicate is refused by either; neither writes back a stale copy; concurrent writes are all kept."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import PostgresServer, free_port
from tests.daemon.conftest import RunningDaemon
from tests.integration.conftest import World
from tests.scim.conftest import TOKEN, configure_scim
from tests.scim.test_idp_shapes import GROUP, PATCH, USER, bindings, patch, send

pytestmark = pytest.mark.kube

QUIET = {"reconcile": {"every": "1h"}, "credentials": {"every": "1h"}, "sweep": {"every": "1h"}}


def start_replica(world: World, start_daemon: Callable[..., RunningDaemon]) -> tuple[RunningDaemon, httpx.Client]:
    """One more `syncd run` on the world's config and ledger, its SCIM endpoint on a port of its own."""
    port = free_port()
    world.configure(scim=world.settings["scim"] | {"port": port})
    daemon = start_daemon(jobs=QUIET)
    return daemon, httpx.Client(base_url=f"http://127.0.0.1:{port}/scim/v2", timeout=30,
                                headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def shared(world: World, postgres: PostgresServer) -> World:
    configure_scim(world)
    world.configure(ledger={"url": postgres.new_database()})
    return world


def test_two_replicas_answer_as_one_server_and_never_write_back_a_stale_copy(shared: World, start_daemon):
    world = shared
    a, on_a = start_replica(world, start_daemon)
    lee = send(on_a, "POST", "/Users", {"schemas": [USER], "userName": "lee", "active": True}, expect=201)["id"]
    developers = send(on_a, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers",
                                                "members": [{"value": lee}]}, expect=201)["id"]
    a.wait_until(lambda: len(bindings(world, lee)) == 1, "the joiner is issued")
    # B starts once lee exists: a replica that copied the resources at start held lee, active, from then on.
    b, on_b = start_replica(world, start_daemon)

    # Round robin: what one replica created, the other reads, changes and deletes.
    sam = send(on_a, "POST", "/Users", {"schemas": [USER], "userName": "sam"}, expect=201)["id"]
    assert send(on_b, "GET", f"/Users/{sam}")["userName"] == "sam"
    assert send(on_b, "GET", "/Users", filter='userName eq "SAM"')["Resources"][0]["id"] == sam
    patch(on_b, f"/Groups/{developers}", {"op": "add", "path": "members", "value": [{"value": sam}]})
    assert [g["value"] for g in send(on_a, "GET", f"/Users/{sam}")["groups"]] == [developers]
    send(on_b, "DELETE", f"/Users/{sam}", expect=204)
    send(on_a, "GET", f"/Users/{sam}", expect=404)
    assert [m["value"] for m in send(on_a, "GET", f"/Groups/{developers}")["members"]] == [lee]
    # A duplicate is refused by the other replica too (userName case-insensitively, group displayName).
    assert send(on_b, "POST", "/Users", {"schemas": [USER], "userName": "LEE"}, expect=409)["scimType"] == "uniqueness"
    send(on_b, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers"}, expect=409)
    # ETags are the database's: both replicas give the same one, and a stale one is refused by either.
    etag = send(on_a, "GET", f"/Users/{lee}")["meta"]["version"]
    assert send(on_b, "GET", f"/Users/{lee}")["meta"]["version"] == etag

    # The leaver: deactivated through A, access gone; then B is told of a new display name.
    patch(on_a, f"/Users/{lee}", {"op": "replace", "value": {"active": False}})
    a.wait_until(lambda: bindings(world, lee) == [], "the deactivation removes the RoleBinding")
    renamed = patch(on_b, f"/Users/{lee}", {"op": "replace", "path": "displayName", "value": "Lee L."})
    assert (renamed["active"], renamed["displayName"]) == (False, "Lee L.")
    title = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}
    response = on_a.request("PATCH", f"/Users/{lee}", json=title,
                            headers={"If-Match": etag, "Content-Type": "application/scim+json"})
    assert response.status_code == 412
    run = world.reconcile()  # the next full reconcile, beside both replicas
    assert [action["kind"] for action in run["actions"] if action["username"] == "lee"] == []
    assert bindings(world, lee) == []
    assert [e["action"] for e in a.ledger_events(person=lee)].count("issue") == 1


def test_concurrent_patches_of_one_user_through_both_replicas_are_all_kept(shared: World, start_daemon):
    world = shared
    _, on_a = start_replica(world, start_daemon)
    _, on_b = start_replica(world, start_daemon)
    uid = send(on_a, "POST", "/Users", {"schemas": [USER], "userName": "kim"}, expect=201)["id"]
    failures: list[str] = []

    def add_numbers(client: httpx.Client, replica: str) -> None:
        for n in range(15):
            add = {"op": "add", "path": "phoneNumbers", "value": [{"value": f"+1-555-{replica}-{n:04d}"}]}
            answer = client.request("PATCH", f"/Users/{uid}", json={"schemas": [PATCH], "Operations": [add]},
                                    headers={"Content-Type": "application/scim+json"})
            if answer.status_code != 200:
                failures.append(f"{replica}: {answer.status_code} {answer.text}")

    threads = [threading.Thread(target=add_numbers, args=(client, name))
               for client, name in ((on_a, "a"), (on_b, "b"), (on_a, "c"), (on_b, "d"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    kept = {p["value"] for p in send(on_b, "GET", f"/Users/{uid}")["phoneNumbers"]}
    assert len(kept) == 60, f"{60 - len(kept)} writes lost"
    assert send(on_a, "GET", f"/Users/{uid}")["meta"]["version"] == 'W/"61"'
