"""A SCIM endpoint per test: our app under uvicorn on a free loopback port, over a World on the real control plane."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from syncd.config import load_settings
from syncd.runtime.engine import Engine
from syncd.runtime.wiring import pushed_resources
from syncd.scim.app import ScimApp, create_app
from tests.conftest import write_yaml
from tests.integration.conftest import World, world  # noqa: F401  (the fixture, re-exported)

TOKEN = "okta-tenant-token-0123456789abcdef"
OTHER_TOKEN = "entra-tenant-token-0123456789abcdef"
SCIM_JSON = {"Content-Type": "application/scim+json"}


def write_secret(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def configure_scim(w: World, **scim: object) -> None:
    """One push source `idp` fed by two tenants (okta, entra); `scim` overrides settings of the section."""
    write_secret(w.directory / "okta.token", TOKEN + "\n")
    write_secret(w.directory / "entra.token", OTHER_TOKEN)
    w.settings["sources"] = [{"name": "idp", "type": "scim", "mode": "push"}]
    w.settings["scim"] = {
        "tenants": [{"name": "okta", "source": "idp", "token_file": "okta.token"},
                    {"name": "entra", "source": "idp", "token_file": "entra.token"}],
        "max_body_bytes": 65536,
    } | scim
    w.settings["tokens"] = w.settings.get("tokens", {}) | {"confirm_revocation_timeout": "30s"}
    write_yaml(w.config, w.settings)


@dataclass
class Endpoint:
    """Our SCIM app served by uvicorn in this process, with its engine (for `settle`)."""

    app: ScimApp
    engine: Engine
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scim/v2"

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def settle(self, timeout: float = 60) -> None:
        """Wait until every change so far is reconciled."""
        assert self.app.reconciler.wait_idle(timeout), f"reconciles still running after {timeout} s"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.app.reconciler.close()
        self.engine.close()


def start_endpoint(config: Path) -> Endpoint:
    settings = load_settings(config)
    engine = Engine.from_settings(settings)
    app = create_app(engine, settings, pushed_resources(engine.database))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Endpoint(app, engine, server, thread, port)


@pytest.fixture
def scim(world: World) -> Iterator[Endpoint]:  # noqa: F811
    configure_scim(world)
    endpoint = start_endpoint(world.config)
    try:
        yield endpoint
    finally:
        endpoint.stop()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert "127.0.0.1" in os.environ["NO_PROXY"]
