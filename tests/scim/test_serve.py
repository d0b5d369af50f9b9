"""`syncd serve` runs the endpoint alone, over TLS when given a certificate."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port, self_signed_certificate, write_yaml
from tests.integration.conftest import World
from tests.scim.conftest import TOKEN, configure_scim
from tests.scim.test_idp_shapes import GROUP, USER

pytestmark = pytest.mark.kube



def test_syncd_serve_over_tls_reconciles_a_push(world: World):
    self_signed_certificate(world.directory)
    port = free_port()
    configure_scim(world, port=port, tls_cert="tls.crt", tls_key="tls.key")
    assert world.syncd("config", "check", "--config", str(world.config)).returncode == 0
    server = subprocess.Popen([sys.executable, "-m", "syncd", "serve", "--config", str(world.config)],
                              env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with contextlib.ExitStack() as stack:
        stack.callback(server.terminate)
        trust = ssl.create_default_context(cafile=world.directory / "tls.crt")
        client = stack.enter_context(httpx.Client(base_url=f"https://127.0.0.1:{port}/scim/v2", verify=trust,
                                                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30))
        deadline = time.monotonic() + 60
        while True:
            try:
                assert client.get("/ServiceProviderConfig").status_code == 200
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "syncd serve did not listen within 60 s"
                time.sleep(0.2)
        uid = client.post("/Users", json={"schemas": [USER], "userName": "dana"}).json()["id"]
        assert client.post("/Groups", json={"schemas": [GROUP], "displayName": "developers",
                                            "members": [{"value": uid}]}).status_code == 201
        deadline = time.monotonic() + 30
        while not world.kubeconfig("dana").exists():
            assert time.monotonic() < deadline, "the push was not reconciled within 30 s"
            time.sleep(0.2)
        assert world.can("dana", "create", "deployments", world.ns("team-a")) == "yes"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/scim/v2/ServiceProviderConfig", timeout=5)  # unknown CA
    _, stderr = server.communicate(timeout=30)
    assert TOKEN not in stderr
    assert '"event": "create a SCIM User"' in stderr


def test_config_refuses_a_tenant_feeding_no_push_source(world: World):
    configure_scim(world)
    world.settings["scim"]["tenants"][0]["source"] = "hr"
    write_yaml(world.config, world.settings)
    done = world.syncd("config", "check", "--config", str(world.config))
    assert done.returncode == 78 and "no scim source with mode: push" in done.stderr
