"""Bad requests get a 4xx SCIM error; nothing is stored and nobody loses access. No input gives a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.adapters.ledger import ScimStore
from tests.integration.conftest import World
from tests.scim.conftest import SCIM_JSON, TOKEN, Endpoint, configure_scim, start_endpoint
from tests.scim.test_idp_shapes import GROUP, PATCH, USER, send

pytestmark = pytest.mark.kube
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


@pytest.fixture
def alice(world: World, scim: Endpoint) -> tuple[str, str]:
    """alice, a developer with access; returns her user and group ids."""
    client = scim.client()
    uid = send(client, "POST", "/Users", {"schemas": [USER], "userName": "alice"}, expect=201)["id"]
    gid = send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers",
                                           "members": [{"value": uid}]}, expect=201)["id"]
    scim.settle()
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    return uid, gid


def assert_scim_error(response, status: int, scim_type: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    if scim_type:
        assert body["scimType"] == scim_type


def test_bad_requests_are_refused_and_change_nothing(world: World, scim: Endpoint, alice: tuple[str, str]):
    uid, gid = alice
    client = scim.client()
    before = {kind: send(client, "GET", f"/{kind}") for kind in ("Users", "Groups")}
    database, ledger = scim.engine.database, scim.engine.read_model

    def recorded() -> tuple:
        """What the ledger database holds: pushed resources, events, credentials and their states."""
        return (ScimStore(database).source_resources("idp"), [e.seq for e in ledger.events()],
                [(c.id, c.state) for c, _, _ in ledger.credentials(include_revoked=True)])

    stored = recorded()
    deactivate = json.dumps({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]})

    def request(method: str, url: str, content: str | bytes | None = None, **kwargs):
        return client.request(method, url, content=content, headers=SCIM_JSON | kwargs.pop("headers", {}), **kwargs)

    assert_scim_error(request("POST", "/Users", "{not json"), 400)
    assert_scim_error(request("PATCH", f"/Users/{uid}", '{"Operations": [{"op": "replace"'), 400)
    assert_scim_error(request("POST", "/Users", json.dumps({"schemas": [GROUP], "displayName": "x"})), 400)
    assert_scim_error(request("POST", "/Users", json.dumps({"schemas": [USER]})), 400)  # no userName
    assert_scim_error(request("PATCH", f"/Users/{uid}", json.dumps({"schemas": [USER], "active": False})), 400)
    assert_scim_error(request("PATCH", f"/Users/{uid}", json.dumps(
        {"schemas": [PATCH], "Operations": [{"op": "explode", "path": "active", "value": False}]})), 400)
    assert_scim_error(request("PATCH", f"/Users/{uid}", json.dumps(
        {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": "maybe"}]})), 400)
    huge = json.dumps({"schemas": [USER], "userName": "mallory", "displayName": "x" * 70000})
    assert_scim_error(request("POST", "/Users", huge), 413)
    assert_scim_error(request("GET", "/Users", params={"filter": 'userName eq "unterminated'}), 400, "invalidFilter")
    assert_scim_error(request("GET", "/Users", params={"filter": "userName zz 1"}), 400, "invalidFilter")
    assert_scim_error(request("POST", "/Users", json.dumps({"schemas": [USER], "userName": "ALICE"})), 409,
                      "uniqueness")
    assert_scim_error(request("GET", "/Users/does-not-exist"), 404)
    assert_scim_error(request("PATCH", "/Users/does-not-exist", deactivate), 404)
    assert_scim_error(request("DELETE", "/Groups/does-not-exist"), 404)
    assert_scim_error(request("POST", "/Users", "<user/>", headers={"Content-Type": "application/xml"}), 415)
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}):
        anonymous = scim.client(token=None)
        response = anonymous.request("PATCH", f"/Users/{uid}", content=deactivate, headers=SCIM_JSON | headers)
        assert_scim_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert_scim_error(anonymous.get("/Users", headers=headers), 401)
        assert_scim_error(anonymous.delete(f"/Groups/{gid}", headers=headers), 401)
    # Discovery needs no token.
    anonymous = scim.client(token=None)
    for path in ("/ServiceProviderConfig", "/ResourceTypes", "/Schemas"):
        assert anonymous.get(path).status_code == 200

    scim.settle()
    assert {kind: send(client, "GET", f"/{kind}") for kind in ("Users", "Groups")} == before
    assert recorded() == stored  # nothing stored, no run, no event, nothing revoked
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"


def test_paging_is_stable_and_projects_attributes(scim: Endpoint, alice: tuple[str, str]):
    client = scim.client()
    for n in range(5):
        send(client, "POST", "/Users", {"schemas": [USER], "userName": f"user{n}", "displayName": f"U{n}"},
             expect=201)
    everyone = [u["id"] for u in send(client, "GET", "/Users")["Resources"]]
    assert len(everyone) == 6
    pages = [send(client, "GET", "/Users", startIndex=start, count=2) for start in (1, 3, 5)]
    assert [u["id"] for page in pages for u in page["Resources"]] == everyone
    assert {page["totalResults"] for page in pages} == {6}
    projected = send(client, "GET", "/Users", attributes="userName", count=1)["Resources"][0]
    assert set(projected) == {"schemas", "id", "userName"}
    beyond = send(client, "GET", "/Users", startIndex=7, count=2)
    assert (beyond["totalResults"], beyond.get("Resources", [])) == (6, [])
    counted = send(client, "GET", "/Users", count=0)
    assert (counted["totalResults"], counted.get("Resources", [])) == (6, [])
    matching = [u["id"] for u in send(client, "GET", "/Users", filter='userName sw "user"')["Resources"]]
    filtered = send(client, "GET", "/Users", filter='userName sw "user"', startIndex=2, count=2)
    assert [u["id"] for u in filtered["Resources"]] == matching[1:3] and filtered["totalResults"] == 5
    by_name = send(client, "GET", "/Users", filter='userName sw "user"', sortBy="userName", sortOrder="descending")
    assert [u["userName"] for u in by_name["Resources"]] == [f"user{n}" for n in range(4, -1, -1)]
    excluded = send(client, "GET", "/Users", excludedAttributes="displayName")["Resources"]
    assert all("displayName" not in u for u in excluded)


_PATHS = st.sampled_from([
    None, "active", "userName", "displayName", "name.givenName", "emails", 'emails[type eq "work"].value',
    "members", 'members[value eq "x"]', "members[value eq", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:"
    "User:manager", "urn:unknown:thing", "meta.version", "id", "groups", "", "..", "emails[", "x" * 300,
])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["False", "True", "work", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["value", "display", "$ref", "type", "primary", "active", "name.givenName", "members",
                         "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "userName", "x"]),
        inner, max_size=3),
    max_leaves=8,
)
_OPERATION = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "Add", "Replace", "Remove", "move", 3, None])},
    optional={"path": _PATHS, "value": _JSON},
)
_BODY = st.one_of(
    st.fixed_dictionaries({"schemas": st.just([PATCH]), "Operations": st.lists(_OPERATION, max_size=3)}),
    st.fixed_dictionaries({"schemas": st.sampled_from([[PATCH], [], ["x"], None]), "Operations": _JSON}),
    _JSON,
)


def test_fuzzed_patch_bodies_never_get_a_5xx(scim: Endpoint, alice: tuple[str, str]):
    uid, gid = alice
    client = scim.client()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=_BODY, target=st.sampled_from([f"/Users/{uid}", f"/Groups/{gid}"]))
    def check(body, target):
        response = client.request("PATCH", target, content=json.dumps(body), headers=SCIM_JSON)
        assert response.status_code < 500, f"{body!r} -> {response.status_code} {response.text}"
        if response.status_code >= 400:
            assert response.json()["schemas"] == [ERROR]

    check()
    scim.settle()


def test_bodies_nested_too_deep_get_a_400_and_the_server_keeps_serving(world: World):
    # The body limit must let 100,000 brackets through to show that nesting alone is refused.
    configure_scim(world, max_body_bytes=1_048_576)
    endpoint = start_endpoint(world.config)
    try:
        client = endpoint.client()
        user = {"schemas": [USER], "userName": "deep"}
        legal = json.dumps(user | {"title": "[" * 1000}).encode()  # brackets in strings do not count
        for body in (b"[" * 100_000, b'{"a":' * 100_000, legal[:-1] + b', "x": ' + b"[" * 30_000 + b"}"):
            assert len(body) < 1_048_576
            for method, url in (("POST", "/Users"), ("PATCH", "/Users/x"), ("PUT", "/Groups/x")):
                assert_scim_error(client.request(method, url, content=body, headers=SCIM_JSON), 400, "invalidSyntax")
        assert send(client, "POST", "/Users", json.loads(legal), expect=201)["userName"] == "deep"
        assert [u["userName"] for u in send(client, "GET", "/Users")["Resources"]] == ["deep"]
    finally:
        endpoint.stop()
