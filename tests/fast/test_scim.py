"""The SCIM endpoint's behaviour on fakes: the real ASGI app in this process (no server, no socket), the real push
source over the ledger, fake clusters. A push reconciles only the people it touches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from syncd.config import ScimSettings, ScimSourceSettings, ScimTenantSettings
from syncd.core.model import person_key
from syncd.runtime.engine import Engine
from syncd.runtime.wiring import pushed_resources
from syncd.scim.app import ScimApp, create_app
from syncd.scim.source import ScimPushSource
from tests.fakes import FakeCluster
from tests.fast.conftest import fake_clusters, make_engine, make_settings
from tests.fast.test_engine import EDIT_A, VIEW_B
from tests.scim.conftest import TOKEN, write_secret
from tests.scim.test_idp_shapes import GROUP, USER, patch, send


class InProcess(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI app, so the SCIM tests' helpers drive it unchanged."""

    def __init__(self, app: ScimApp) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def forward() -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())

        return asyncio.run(forward())


@dataclass
class Push:
    app: ScimApp
    engine: Engine
    dev: FakeCluster

    def client(self) -> httpx.Client:
        return httpx.Client(transport=InProcess(self.app), base_url="http://syncd.test/scim/v2",
                            headers={"Authorization": f"Bearer {TOKEN}"})

    def settle(self) -> None:
        assert self.app.reconciler.wait_idle(30), "reconciles still running after 30 s"


@pytest.fixture
def push(tmp_path: Path) -> Iterator[Push]:
    push_source = ScimSourceSettings(name="idp", mode="push")
    tenant = ScimTenantSettings(name="okta", source="idp", token_file=write_secret(tmp_path / "okta.token", TOKEN))
    settings = make_settings(tmp_path, clusters=("dev", "prod"), sources=[push_source],
                             scim=ScimSettings(tenants=[tenant]), safety={"max_revocation_percent": 100})
    clusters = fake_clusters("dev", "prod")
    def push_source_over(ledger):  # type: ignore[no-untyped-def]
        return ScimPushSource(push_source, pushed_resources(ledger))

    with make_engine(settings, push_source_over, clusters) as engine:
        app = create_app(engine, settings, pushed_resources(engine.database))
        try:
            yield Push(app, engine, clusters["dev"])
        finally:
            app.reconciler.close()


def group(client: httpx.Client, name: str, *members: str) -> str:
    return send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": name,
                                            "members": [{"value": m} for m in members]}, expect=201)["id"]


def test_a_pushed_joiner_gets_access_and_a_deactivation_revokes_it(push: Push):
    client = push.client()
    alice = send(client, "POST", "/Users", {"schemas": [USER], "userName": "alice"}, expect=201)["id"]
    bob = send(client, "POST", "/Users", {"schemas": [USER], "userName": "bob"}, expect=201)["id"]
    group(client, "developers", alice, bob)
    push.settle()
    assert push.dev.bindings_of(alice) == push.dev.bindings_of(bob) == {EDIT_A}
    token = push.engine.delivery.read_token(push.engine.delivery.kubeconfig_path(person_key(alice), "dev"))
    assert token is not None and push.dev.token_authenticates(token)

    patch(client, f"/Users/{alice}", {"op": "replace", "value": {"active": False}})
    push.settle()
    assert push.dev.bindings_of(alice) == set() and not push.dev.token_authenticates(token)
    assert push.dev.bindings_of(bob) == {EDIT_A}
    runs = push.app.reconciler.reports
    assert {a.person_id for a in runs[-1].plan.actions} == {alice}, "the deactivation's run touched others"


def test_removing_a_group_member_rescopes_them(push: Push):
    client = push.client()
    carol = send(client, "POST", "/Users", {"schemas": [USER], "userName": "carol"}, expect=201)["id"]
    developers = group(client, "developers", carol)
    group(client, "sre", carol)
    push.settle()
    assert push.dev.bindings_of(carol) == {EDIT_A, VIEW_B}
    patch(client, f"/Groups/{developers}", {"op": "remove", "path": f'members[value eq "{carol}"]'})
    push.settle()
    assert push.dev.bindings_of(carol) == {VIEW_B}


def test_a_deleted_user_loses_access(push: Push):
    client = push.client()
    alice = send(client, "POST", "/Users", {"schemas": [USER], "userName": "alice"}, expect=201)["id"]
    bob = send(client, "POST", "/Users", {"schemas": [USER], "userName": "bob"}, expect=201)["id"]
    group(client, "developers", alice, bob)
    push.settle()
    send(client, "DELETE", f"/Users/{alice}", expect=204)
    push.settle()
    assert push.dev.bindings_of(alice) == set() and push.dev.bindings_of(bob) == {EDIT_A}
