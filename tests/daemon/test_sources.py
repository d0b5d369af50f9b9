"""`syncd run` with an LDAP source (incremental polls of a real slapd) and with the SCIM endpoint (real HTTP)."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest

from syncd.core.model import person_key
from tests.conftest import free_port, self_signed_certificate
from tests.integration.conftest import World
from tests.ldap.conftest import Directory
from tests.scim.conftest import TOKEN, configure_scim
from tests.scim.test_idp_shapes import GROUP, PATCH, USER

pytestmark = pytest.mark.kube

POLL = 3  # seconds between incremental polls in these tests
SLACK = 12  # a run (plan, apply, ledger) on 2 busy cores, and the test's own polling


def test_ldap_leaver_is_revoked_by_the_next_poll(ldap_world: World, directory: Directory, start_daemon):
    alice, bob = directory.person("alice"), directory.person("bob")
    directory.group("developers", alice, bob)
    # Polls every POLL seconds; the full read runs at start and then not for an hour.
    ldap_world.configure(sources=[directory.source_settings(
        incremental={"attribute": "entryCSN", "poll_interval": f"{POLL}s", "full_interval": "1h"})])
    daemon = start_daemon()
    daemon.wait_until(lambda: ldap_world.kubeconfig("alice").exists() and ldap_world.kubeconfig("bob").exists(),
                      "the full read at start issues both")
    daemon.wait_until(lambda: (daemon.metric("syncd_runs_total", job="poll", source="directory", result="no-op")
                               or 0) >= 1, "a poll finds nothing changed")
    token = ldap_world.token("alice")

    directory.lock(alice)
    locked = time.monotonic()
    daemon.wait_until(lambda: daemon.revocations(), "the poll revokes the leaver", timeout=POLL + SLACK)
    assert time.monotonic() - locked <= POLL + SLACK
    (revoked,) = daemon.revocations()
    assert (revoked["username"], revoked["reason"], revoked["result"]) == ("alice", "disabled", "ok")
    daemon.wait_until(lambda: not ldap_world.token_authenticates(token), "the leaver's token is rejected")
    assert daemon.metric("syncd_actions_total", kind="revoke", reason="disabled", result="ok") == 1
    assert daemon.metric("syncd_runs_total", job="poll", source="directory", result="ok") == 1
    assert daemon.metric("syncd_runs_total", job="reconcile", source="directory", result="ok") == 1  # at start only
    assert ldap_world.can("bob", "create", "deployments", ldap_world.ns("team-a")) == "yes"
    assert daemon.stop() == 0


def send(client: httpx.Client, method: str, url: str, body: dict, expect: int) -> dict:
    answer = client.request(method, url, json=body, headers={"Content-Type": "application/scim+json"})
    assert answer.status_code == expect, answer.text
    return answer.json()


def test_scim_deactivation_is_applied_at_once(world: World, start_daemon):
    scim_port = free_port()
    cert, key = self_signed_certificate(world.directory)
    configure_scim(world, port=scim_port, tls_cert=cert.name, tls_key=key.name)
    # Scheduled runs are an hour apart: whatever happens below is the push's own doing.
    daemon = start_daemon(jobs={"reconcile": {"every": "1h"}, "credentials": {"every": "1h"}})
    client = httpx.Client(base_url=f"https://127.0.0.1:{scim_port}/scim/v2", timeout=30,
                          verify=ssl.create_default_context(cafile=cert),
                          headers={"Authorization": f"Bearer {TOKEN}"})
    with client:
        ids = {name: send(client, "POST", "/Users", {"schemas": [USER], "userName": name, "active": True}, 201)["id"]
               for name in ("dana", "erin", "fay")}
        send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers",
                                         "members": [{"value": uid} for uid in ids.values()]}, 201)
        daemon.wait_until(lambda: all(world.kubeconfig(name).exists() for name in ids), "the pushes are reconciled",
                          timeout=30)
        tokens = {name: world.token(name) for name in ids}

        pushed = time.monotonic()
        user = send(client, "PATCH", f"/Users/{ids['dana']}",
                    {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}, 200)
        assert user["active"] is False
        user = send(client, "PUT", f"/Users/{ids['erin']}",
                    {"schemas": [USER], "userName": "erin", "active": False}, 200)
        assert user["active"] is False
        daemon.wait_until(lambda: not world.token_authenticates(tokens["dana"])
                          and not world.token_authenticates(tokens["erin"]), "both deactivations apply", timeout=30)
        assert time.monotonic() - pushed < 30  # at once, not at the next scheduled run an hour away
        assert sorted((e["username"], e["reason"]) for e in daemon.revocations()) == [
            ("dana", "disabled"), ("erin", "disabled")]
        assert world.token_authenticates(tokens["fay"])

        assert client.get("/Users", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    daemon.wait_until(lambda: (daemon.metric("syncd_actions_total", kind="revoke", reason="disabled", result="ok")
                               or 0) == 2, "the pushed runs are counted")
    assert daemon.metric("syncd_actions_total", kind="issue", reason="joiner", result="ok") == 3
    assert daemon.metric("syncd_runs_total", job="scim", source="idp", result="ok") >= 2
    assert daemon.metric("syncd_scim_requests_total", status="201") == 4
    assert daemon.metric("syncd_scim_requests_total", status="200") == 2
    assert daemon.metric("syncd_scim_requests_total", status="401") == 1
    assert daemon.get("/scim/v2/Users")[0] == 404  # SCIM is served on its own port only
    status, ready = daemon.get_json("/readyz")
    assert status == 200 and ready["sources"]["idp"] == "ok"
    assert TOKEN not in daemon.log_text()
    assert daemon.stop() == 0


def test_a_scim_leaver_held_by_the_window_is_revoked_once_the_window_moves_on(world: World, start_daemon):
    scim_port = free_port()
    configure_scim(world, port=scim_port)
    world.configure(safety={"max_revocations": 2, "targeted_window": "30s"})
    # Full runs are an hour apart: only the credentials job (every 2 s) can try the held leaver again.
    daemon = start_daemon(jobs={"reconcile": {"every": "1h"}, "credentials": {"every": "2s"}})
    deactivate = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}
    with httpx.Client(base_url=f"http://127.0.0.1:{scim_port}/scim/v2", timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        ids = [send(client, "POST", "/Users", {"schemas": [USER], "userName": f"dev{n}"}, 201)["id"]
               for n in range(4)]
        send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "developers",
                                         "members": [{"value": uid} for uid in ids]}, 201)
        daemon.wait_until(lambda: all(world.kubeconfig(f"dev{n}").exists() for n in range(4)), "all get access")
        for n in range(3):  # one request at a time: the third is one past max_revocations within the window
            send(client, "PATCH", f"/Users/{ids[n]}", deactivate, 200)
            daemon.wait_until(lambda n=n: len(daemon.ledger_events(person=f"dev{n}")) >= 2, f"dev{n} is judged")
    held = [e for e in daemon.ledger_events(person="dev2") if e["result"] == "held"]
    assert [(e["action"], e["reason"]) for e in held] == [("revoke", "disabled")]
    assert world.can("dev2", "create", "deployments", world.ns("team-a")) == "yes"
    assert daemon.get_json("/readyz")[1]["held_revocations"] == {"idp": 1}
    assert daemon.metric("syncd_quarantined_revocations", source="idp") == 1

    daemon.wait_until(lambda: [e for e in daemon.revocations() if e["username"] == "dev2"],
                      "the held leaver is revoked once the window no longer holds him", timeout=90)
    assert world.ours("rolebindings", person_key(ids[2])) == []
    assert [e["result"] for e in daemon.ledger_events(person="dev2") if e["action"] == "revoke"] == ["held", "ok"]
    daemon.wait_until(lambda: daemon.get_json("/readyz")[1]["held_revocations"] == {"idp": 0}, "the hold is over")
    assert daemon.metric("syncd_quarantined_revocations", source="idp") == 0
    assert world.can("dev3", "create", "deployments", world.ns("team-a")) == "yes"
    assert daemon.stop() == 0
