"""The request shapes Okta and Entra ID really send, replayed over HTTP. Each step checks what is stored and
what it did to the person's access on the real control plane."""

from __future__ import annotations

import json

import pytest

from syncd.core.model import person_key
from tests.integration.conftest import World
from tests.scim.conftest import OTHER_TOKEN, SCIM_JSON, Endpoint, start_endpoint

pytestmark = pytest.mark.kube

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def send(client, method: str, url: str, body: dict | None = None, expect: int = 200, **params) -> dict:
    response = client.request(method, url, content=json.dumps(body) if body is not None else None,
                              headers=SCIM_JSON, params=params or None)
    assert response.status_code == expect, f"{method} {url}: {response.status_code} {response.text}"
    if response.status_code != 204:
        assert response.headers["content-type"].startswith("application/scim+json")
        return response.json()
    return {}


def patch(client, url: str, *operations: dict, expect: int = 200) -> dict:
    return send(client, "PATCH", url, {"schemas": [PATCH], "Operations": list(operations)}, expect=expect)


def bindings(world: World, person_id: str) -> list[dict]:
    return world.ours("rolebindings", person_key(person_id))


def test_okta_lifecycle(world: World, scim: Endpoint):
    okta = scim.client()
    team_a = world.ns("team-a")
    # Okta looks the user up (case-insensitively) before creating them.
    assert send(okta, "GET", "/Users", filter='userName eq "alice@example.org"')["totalResults"] == 0
    alice = send(okta, "POST", "/Users", {
        "schemas": [USER], "userName": "alice@example.org", "password": "Okta-S3cret!",
        "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [{"primary": True, "value": "alice@example.org", "type": "work"}],
        "displayName": "Alice Liddell", "locale": "en-US", "externalId": "00u1", "groups": [], "active": True,
    }, expect=201)
    uid = alice["id"]
    assert "password" not in alice and alice["active"] is True
    found = send(okta, "GET", "/Users", filter='userName eq "ALICE@example.ORG"')
    assert [u["id"] for u in found["Resources"]] == [uid]
    assert "Okta-S3cret!" not in (world.directory / "ledger.db").read_bytes().decode(errors="replace")

    # Group push: create, then add members.
    developers = send(okta, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers", "members": []},
                      expect=201)
    gid = developers["id"]
    patch(okta, f"/Groups/{gid}", {"op": "add", "path": "members",
                                   "value": [{"value": uid, "display": "alice@example.org"}]})
    scim.settle()
    assert world.can("alice@example.org", "create", "deployments", team_a) == "yes"
    assert [b["metadata"]["namespace"] for b in bindings(world, uid)] == [team_a]

    # A full PUT update keeps access and is stored as sent.
    alice = send(okta, "PUT", f"/Users/{uid}", {
        "schemas": [USER], "id": uid, "userName": "alice@example.org", "displayName": "Alice L.",
        "name": {"givenName": "Alice", "familyName": "L."}, "externalId": "00u1",
        "emails": [{"primary": True, "value": "alice@example.org", "type": "work"}], "active": True,
    })
    assert alice["displayName"] == "Alice L."

    # Group push removes a member by filter, then replaces the member list whole.
    patch(okta, f"/Groups/{gid}", {"op": "remove", "path": f'members[value eq "{uid}"]'})
    assert "members" not in send(okta, "GET", f"/Groups/{gid}")
    scim.settle()
    assert bindings(world, uid) == []
    patch(okta, f"/Groups/{gid}", {"op": "replace", "path": "members", "value": [{"value": uid}]})
    scim.settle()
    assert world.can("alice@example.org", "create", "deployments", team_a) == "yes"
    kept = world.keep_copy("alice@example.org")
    token = world.token("alice@example.org")

    # Deactivation: replace with no path. She stays readable; her bindings and token die.
    alice = patch(okta, f"/Users/{uid}", {"op": "replace", "value": {"active": False}})
    assert alice["active"] is False
    scim.settle()
    assert bindings(world, uid) == []
    world.wait_until_rejected(token)
    done = world.control_plane.kubectl("auth", "can-i", "get", "pods", "-n", team_a, kubeconfig=kept, check=False)
    assert done.stdout.strip() != "yes"
    assert send(okta, "GET", f"/Users/{uid}")["active"] is False

    # Reactivation gives access again.
    patch(okta, f"/Users/{uid}", {"op": "replace", "value": {"active": True}})
    scim.settle()
    assert world.can("alice@example.org", "create", "deployments", team_a) == "yes"

    # DELETE of a group nothing links to.
    unlinked = send(okta, "POST", "/Groups", {"schemas": [GROUP], "displayName": "unlinked"}, expect=201)
    send(okta, "DELETE", f"/Groups/{unlinked['id']}", expect=204)
    send(okta, "GET", f"/Groups/{unlinked['id']}", expect=404)

    # What was pushed survives a restart: a new endpoint on the same ledger serves it.
    scim.stop()
    again = start_endpoint(world.config)
    try:
        client = again.client()
        stored = send(client, "GET", f"/Users/{uid}")
        assert (stored["displayName"], stored["active"], stored["externalId"]) == ("Alice L.", True, "00u1")
        assert [m["value"] for m in send(client, "GET", f"/Groups/{gid}")["members"]] == [uid]
        assert send(client, "GET", "/Groups", filter='displayName eq "unlinked"')["totalResults"] == 0
        # Versions go on from where they were, so ETags never repeat.
        assert patch(client, f"/Users/{uid}", {"op": "replace", "path": "title", "value": "Engineer"}
                     )["meta"]["version"] != stored["meta"]["version"]
    finally:
        again.stop()
        scim.stop = lambda: None  # already stopped


def test_entra_lifecycle(world: World, scim: Endpoint):
    entra = scim.client(OTHER_TOKEN)
    team_b = world.ns("team-b")
    assert send(entra, "GET", "/Users", filter='externalId eq "e-1"')["totalResults"] == 0
    custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
    bob = send(entra, "POST", "/Users", {
        "schemas": [USER, ENTERPRISE, custom], "externalId": "e-1", "userName": "bob@example.org", "active": True,
        "emails": [{"primary": True, "type": "work", "value": "bob@example.org"}],
        "name": {"formatted": "Bob Builder", "familyName": "Builder", "givenName": "Bob"},
        ENTERPRISE: {"department": "platform", "manager": "boss-id"},
        custom: {"CustomAttribute": "x"},
    }, expect=201)
    uid = bob["id"]
    assert custom not in bob and custom not in bob["schemas"]  # accepted, never echoed
    assert bob[ENTERPRISE]["manager"]["value"] == "boss-id"
    found = send(entra, "GET", "/Users", filter='emails[type eq "work"].value eq "bob@example.org"')
    assert [u["id"] for u in found["Resources"]] == [uid]

    carol = send(entra, "POST", "/Users", {"schemas": [USER], "userName": "carol@example.org"}, expect=201)
    sre = send(entra, "POST", "/Groups", {"schemas": [GROUP], "displayName": "sre", "externalId": "g-1"},
               expect=201)
    gid = sre["id"]
    patch(entra, f"/Groups/{gid}", {"op": "Add", "path": "members",
                                    "value": [{"value": uid, "$ref": None}, {"value": carol["id"], "$ref": None}]})
    assert "members" not in send(entra, "GET", f"/Groups/{gid}", excludedAttributes="members")
    scim.settle()
    assert world.can("bob@example.org", "get", "pods", team_b) == "yes"
    assert [b["metadata"]["namespace"] for b in bindings(world, uid)] == [team_b]

    # Dotted and URN keys inside a path-less value; the manager as a bare string.
    bob = patch(entra, f"/Users/{uid}", {"op": "Replace", "value": {
        "name.givenName": "Robert", f"{ENTERPRISE}:department": "sre", f"{ENTERPRISE}:manager": "new-boss",
        "displayName": "Robert Builder"}})
    assert bob["name"]["givenName"] == "Robert" and bob["displayName"] == "Robert Builder"
    assert bob[ENTERPRISE]["department"] == "sre" and bob[ENTERPRISE]["manager"]["value"] == "new-boss"
    bob = patch(entra, f"/Users/{uid}", {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": "third-boss"})
    assert bob[ENTERPRISE]["manager"]["value"] == "third-boss"

    # Disable with "False" as a string; re-enable with "True".
    token = world.token("bob@example.org")
    assert patch(entra, f"/Users/{uid}", {"op": "Replace", "path": "active", "value": "False"})["active"] is False
    scim.settle()
    assert bindings(world, uid) == []
    world.wait_until_rejected(token)
    assert patch(entra, f"/Users/{uid}", {"op": "Replace", "path": "active", "value": "True"})["active"] is True
    scim.settle()
    assert world.can("bob@example.org", "get", "pods", team_b) == "yes"

    # Legacy member removal: `path: members` with the leaving members in `value` removes only those.
    patch(entra, f"/Groups/{gid}", {"op": "Remove", "path": "members", "value": [{"value": uid}]})
    assert [m["value"] for m in send(entra, "GET", f"/Groups/{gid}")["members"]] == [carol["id"]]
    scim.settle()
    assert bindings(world, uid) == []
    assert world.can("bob@example.org", "get", "pods", team_b) != "yes"


def test_entra_memberships_and_filtered_adds(world: World, scim: Endpoint):
    entra = scim.client(OTHER_TOKEN)
    team_b = world.ns("team-b")
    dave = send(entra, "POST", "/Users", {"schemas": [USER], "userName": "dave@example.org"}, expect=201)
    uid = dave["id"]
    gid = send(entra, "POST", "/Groups", {"schemas": [GROUP], "displayName": "sre", "members": [{"value": uid}]},
               expect=201)["id"]

    # A user's groups (read-only) come from the groups listing it, on every read.
    membership = [{"value": gid, "display": "sre", "type": "direct", "$ref": f"{scim.url}/Groups/{gid}"}]
    assert send(entra, "GET", f"/Users/{uid}")["groups"] == membership
    assert send(entra, "GET", "/Users")["Resources"][0]["groups"] == membership
    assert send(entra, "GET", "/Users", filter='userName eq "dave@example.org"')["Resources"][0]["groups"] == membership

    # Entra adds to a filtered path that matches nothing yet: the entry the filter describes is created.
    dave = patch(entra, f"/Users/{uid}", {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value',
                                          "value": "+1 555 0100"})
    assert dave["phoneNumbers"] == [{"type": "mobile", "value": "+1 555 0100"}]
    assert dave["groups"] == membership
    dave = patch(entra, f"/Users/{uid}", {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value',
                                          "value": "+1 555 0199"})
    assert dave["phoneNumbers"] == [{"type": "mobile", "value": "+1 555 0199"}]
    scim.settle()
    assert world.can("dave@example.org", "get", "pods", team_b) == "yes"

    # A deleted user leaves its groups, in memory and in the ledger database (a restart loads it so).
    send(entra, "DELETE", f"/Users/{uid}", expect=204)
    assert "members" not in send(entra, "GET", f"/Groups/{gid}")
    scim.settle()
    restarted = start_endpoint(world.config)
    try:
        assert "members" not in send(restarted.client(OTHER_TOKEN), "GET", f"/Groups/{gid}")
    finally:
        restarted.stop()
