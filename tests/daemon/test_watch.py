"""`syncd run` watching a real slapd (content sync): /readyz and the metrics show the watch's state and the age of
its last message; a leaver goes through a watch run; a frozen server shows as reconnecting, then connected again."""

from __future__ import annotations

import signal

import pytest

from syncd.core.model import person_key
from tests.integration.conftest import World
from tests.ldap.conftest import Directory, own_slapd  # noqa: F401  (a slapd of this test's own, to freeze)
from tests.ldap.slapd import Slapd

pytestmark = pytest.mark.kube

WATCH = {"mode": "auto", "keepalive": "1s", "backoff": "1s", "max_backoff": "2s"}


def watch_state(daemon) -> dict:
    return daemon.get_json("/readyz")[1]["watches"]["directory"]


def test_readyz_and_metrics_show_the_watch_and_a_leaver_goes_through_it(ldap_world: World, directory: Directory,
                                                                          start_daemon):
    alice = directory.person("alice")
    directory.group("developers", alice, directory.person("bob"))
    key = person_key(directory.entry_uuid(alice))
    ldap_world.configure(sources=[directory.source_settings(watch=WATCH)])
    daemon = start_daemon()
    daemon.wait_until(lambda: ldap_world.ours("rolebindings", key), "alice issued")
    state = daemon.wait_until(lambda: (s := watch_state(daemon))["state"] == "connected" and s, "watch connected")
    assert isinstance(state["last_message_age_seconds"], float) and state["last_message_age_seconds"] >= 0
    assert daemon.metric("syncd_watch_state", source="directory", state="connected") == 1
    assert daemon.metric("syncd_watch_state", source="directory", state="reconnecting") == 0
    assert daemon.metric("syncd_watch_last_message_age_seconds", source="directory") >= 0

    directory.server.delete(alice)
    daemon.wait_until(lambda: not ldap_world.ours("rolebindings", key), "alice's RoleBindings gone")
    (revoked,) = daemon.wait_until(daemon.revocations, "the revocation recorded")
    assert (revoked["username"], revoked["reason"]) == ("alice", "leaver")
    daemon.wait_until(lambda: daemon.metric("syncd_runs_total", job="watch", source="directory", result="ok"),
                      "a watch run counted")
    assert ldap_world.can("bob", "create", "deployments", ldap_world.ns("team-a")) == "yes"
    assert daemon.stop() == 0


def test_a_mass_delete_is_quarantined_whole_until_allowed_then_leavers_are_ordinary(ldap_world: World,
                                                                                     directory: Directory,
                                                                                     start_daemon):
    dns = [directory.person(f"p{n:02}") for n in range(70)]
    directory.group("developers", *dns)
    keys = [person_key(directory.entry_uuid(dn)) for dn in dns]
    ldap_world.configure(sources=[directory.source_settings(watch=WATCH)])
    daemon = start_daemon()
    daemon.wait_until(lambda: all(ldap_world.ours("rolebindings", key) for key in keys), "everyone issued",
                      timeout=180)
    daemon.wait_until(lambda: watch_state(daemon)["state"] == "connected", "watch connected")

    directory.server.delete(*dns[:60])  # an OU emptied by mistake, in one ldapdelete
    daemon.wait_until(lambda: daemon.get_json("/readyz")[1]["held_revocations"] == {"directory": 60},
                      "the 60 held", timeout=120)
    assert daemon.metric("syncd_quarantined_revocations", source="directory") == 60
    (warned,) = [e for e in daemon.log_events() if e.get("event", "").startswith("quarantine revocations")]
    assert (warned["job"], warned["held"]) == ("watch:directory", 60)
    assert daemon.revocations() == []
    assert all(ldap_world.ours("rolebindings", key) for key in keys)

    ldap_world.reconcile("--allow-mass-revocation")  # a human allows it, beside the running daemon
    assert not any(ldap_world.ours("rolebindings", key) for key in keys[:60])
    directory.server.delete(dns[60])  # then an ordinary leaver: revoked by the watch, not held
    daemon.wait_until(lambda: not ldap_world.ours("rolebindings", keys[60]), "the ordinary leaver revoked")
    daemon.wait_until(lambda: daemon.get_json("/readyz")[1]["held_revocations"] == {"directory": 0},
                      "no hold left")
    assert all(ldap_world.ours("rolebindings", key) for key in keys[61:])
    assert daemon.stop() == 0


def test_a_frozen_slapd_shows_as_reconnecting_then_connected(ldap_world: World, own_slapd: Slapd,  # noqa: F811
                                                             start_daemon):
    directory = Directory(own_slapd, "frozen").create()
    directory.group("developers", directory.person("alice"))
    ldap_world.configure(sources=[directory.source_settings(watch=WATCH, timeout="2s")])
    daemon = start_daemon()
    daemon.wait_until(lambda: watch_state(daemon)["state"] == "connected", "watch connected")
    own_slapd.signal(signal.SIGSTOP)
    try:
        daemon.wait_until(lambda: watch_state(daemon)["state"] == "reconnecting", "readyz shows the reconnect")
        assert daemon.metric("syncd_watch_state", source="directory", state="reconnecting") == 1
    finally:
        own_slapd.signal(signal.SIGCONT)
    daemon.wait_until(lambda: watch_state(daemon)["state"] == "connected", "watch connected again")
    assert daemon.stop() == 0
