"""The scim pull source polls a real SCIM server over HTTP: scim2-server's own app under uvicorn, with a token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from scim2_models import UnauthorizedException
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.utils import load_default_provider

from tests.conftest import write_yaml
from tests.integration.conftest import World
from tests.scim.conftest import SCIM_JSON, write_secret
from tests.scim.test_idp_shapes import GROUP, PATCH, USER

pytestmark = pytest.mark.kube
REMOTE_TOKEN = "remote-directory-token-0123456789"


class TokenApp(ASGIApplication):
    def check_auth(self, request) -> None:  # type: ignore[no-untyped-def]
        if request.header("Authorization") != f"Bearer {REMOTE_TOKEN}":
            raise UnauthorizedException


@pytest.fixture
def remote() -> Iterator[str]:
    app = TokenApp(AsyncInMemoryStorage(), load_default_provider())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v2"
    server.should_exit = True
    thread.join(timeout=30)


def test_pull_source_reads_every_page_and_follows_leavers(world: World, remote: str):
    directory = httpx.Client(base_url=remote, headers={"Authorization": f"Bearer {REMOTE_TOKEN}"} | SCIM_JSON)
    ids = [directory.post("/Users", json={"schemas": [USER], "userName": f"p{n}"}).json()["id"] for n in range(5)]
    directory.post("/Groups", json={"schemas": [GROUP], "displayName": "developers",
                                    "members": [{"value": i} for i in ids]})
    write_secret(world.directory / "remote.token", REMOTE_TOKEN)
    world.settings["sources"] = [{"name": "directory", "type": "scim", "mode": "pull", "url": remote,
                                  "token_file": "remote.token", "page_size": 2}]
    write_yaml(world.config, world.settings)

    run = world.reconcile()
    assert sorted(a["username"] for a in run["actions"]) == [f"p{n}" for n in range(5)]
    assert world.can("p4", "create", "deployments", world.ns("team-a")) == "yes"

    directory.patch(f"/Users/{ids[4]}", json={"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"active": False}}]})
    run = world.reconcile()
    assert [(a["username"], a["kind"], a["reason"]) for a in run["actions"]] == [("p4", "revoke", "disabled")]

    # A server that refuses us (wrong token) is a source unavailable: exit 69, nothing revoked.
    write_secret(world.directory / "remote.token", "wrong-token-0123456789")
    world.reconcile(expect=69)
    assert world.can("p3", "create", "deployments", world.ns("team-a")) == "yes"
