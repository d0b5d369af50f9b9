"""The daemon's watch of a real slapd (syncprov): each change reaches the real control plane through a targeted run
within seconds, with its reason in the ledger; the cookie kept in the ledger resumes a restarted watch."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from syncd.adapters.ldap import LdapSource
from syncd.app.daemon.watch import SourceWatch
from syncd.config import LdapSourceSettings, load_settings
from syncd.core.model import person_key
from syncd.runtime.engine import Engine, RunReport
from tests.integration.conftest import World
from tests.ldap.conftest import Directory
from tests.ldap.slapd import Slapd

pytestmark = pytest.mark.kube

TIMEOUT = 30.0  # generous: the machine is shared; a wait, not a timing assertion
DOWN = 10.0  # seconds slapd is away in the outage scenario


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


@contextmanager
def watching(world: World, full: bool = True, watch: dict | None = None, **source: str
             ) -> Iterator[tuple[Engine, list[RunReport], SourceWatch]]:
    """An engine (with its full reconcile done, unless not `full`) and the source's watch running on it, with
    `watch` settings and `source` settings merged in."""
    world.configure(sources=[world_source(world) | source | {"watch": {"mode": "auto"} | (watch or {})}])
    engine = Engine.from_settings(load_settings(world.config))
    reports: list[RunReport] = []
    (source,) = [s for s in engine.settings.sources if isinstance(s, LdapSourceSettings)]
    watch = SourceWatch(engine, source, lambda: True, lambda report, _seconds: reports.append(report))
    try:
        if full:
            engine.reconcile()
        watch.start()
        wait_for(lambda: watch.state == "connected", "watch connected")
        yield engine, reports, watch
    finally:
        watch.stop()
        engine.close()


def world_source(world: World) -> dict:
    import yaml

    return yaml.safe_load(world.config.read_text())["sources"][0]


def bindings(world: World, directory: Directory, dn: str) -> list[dict]:
    return world.ours("rolebindings", person_key(directory.entry_uuid(dn)))


def reasons(reports: list[RunReport]) -> list[tuple[str, str, str]]:
    return [(str(a.kind), str(a.reason), a.username) for r in reports if r.plan for a in r.plan.actions]


def test_a_deleted_person_loses_access_within_seconds(ldap_world: World, directory: Directory):
    alice = directory.person("alice")
    directory.group("developers", alice, directory.person("bob"))
    key = person_key(directory.entry_uuid(alice))
    with watching(ldap_world) as (_, reports, _watch):
        assert ldap_world.ours("rolebindings", key)
        directory.server.delete(alice)
        wait_for(lambda: not ldap_world.ours("rolebindings", key), "alice's RoleBindings gone")
        wait_for(lambda: ("revoke", "leaver", "alice") in reasons(reports), "its reason reported")
    assert ldap_world.can("bob", "create", "deployments", ldap_world.ns("team-a")) == "yes"


def test_a_locked_person_is_revoked_as_disabled(ldap_world: World, directory: Directory):
    alice = directory.person("alice")
    directory.group("developers", alice)
    with watching(ldap_world) as (_, reports, _watch):
        directory.lock(alice)
        wait_for(lambda: not bindings(ldap_world, directory, alice), "alice's RoleBindings gone")
        wait_for(lambda: ("revoke", "disabled", "alice") in reasons(reports), "its reason reported")


def test_removing_a_nested_group_from_its_parent_rescopes_its_members(ldap_world: World, directory: Directory):
    alice, bob = directory.person("alice"), directory.person("bob")
    directory.group("developers", directory.group("inner", alice), bob)
    with watching(ldap_world) as (_, reports, _watch):
        assert ldap_world.can("alice", "create", "deployments", ldap_world.ns("team-a")) == "yes"
        directory.leave("developers", directory.group_dn("inner"))
        wait_for(lambda: not bindings(ldap_world, directory, alice), "alice's RoleBindings gone")
        wait_for(lambda: ("revoke", "no-entitlement", "alice") in reasons(reports), "its reason reported")
    assert ldap_world.can("bob", "create", "deployments", ldap_world.ns("team-a")) == "yes"


def test_a_rename_keeps_the_person(ldap_world: World, directory: Directory):
    directory.group("developers", directory.person("alice"))
    with watching(ldap_world) as (_, reports, _watch):
        directory.move("alice", "alice.archer", "contractors")
        wait_for(lambda: ("rescope", "rename", "alice.archer") in reasons(reports), "alice renamed")


def test_a_restarted_watch_resumes_from_its_cookie_without_a_full_read(ldap_world: World, directory: Directory,
                                                                       monkeypatch: pytest.MonkeyPatch):
    alice = directory.person("alice")
    directory.group("developers", alice, directory.person("bob"))
    with watching(ldap_world) as (engine, reports, _watch):
        wait_for(lambda: engine.read_model.watch_cursors("directory").keys() == {"people", "groups"}, "cookies kept")
    directory.server.delete(alice)  # while no watch runs
    full_reads = []
    monkeypatch.setattr(LdapSource, "read", lambda self: full_reads.append(self) or pytest.fail("a full read"))
    with watching(ldap_world, full=False) as (_, reports, _watch):
        wait_for(lambda: ("revoke", "leaver", "alice") in reasons(reports), "alice revoked after the restart")
    assert full_reads == []


@pytest.fixture
def own_directory(own_slapd: Slapd, ldap_world: World) -> Directory:
    """A directory on a slapd of this test's own (it is stopped or frozen), which `ldap_world` reads."""
    directory = Directory(own_slapd, "own").create()
    ldap_world.configure(sources=[directory.source_settings()])
    return directory


def counting_full_reads(monkeypatch: pytest.MonkeyPatch) -> list[LdapSource]:
    full_reads: list[LdapSource] = []
    read = LdapSource.read
    monkeypatch.setattr(LdapSource, "read", lambda self: full_reads.append(self) or read(self))
    return full_reads


def held_in_ledger(world: World) -> set[str]:
    """Usernames whose latest revoke event is held."""
    log = json.loads(world.syncd("ledger", "log", "--config", str(world.config), "--output", "json").stdout)
    latest = {e["username"]: e["result"] for e in log if e["action"] == "revoke"}
    return {username for username, result in latest.items() if result == "held"}


def test_a_mass_delete_is_held_whole_until_allowed_and_a_later_leaver_is_ordinary(ldap_world: World,
                                                                                   directory: Directory):
    uids = [f"p{n:02}" for n in range(70)]
    dns = dict(zip(uids, (directory.person(uid) for uid in uids), strict=True))
    directory.group("developers", *dns.values())
    keys = {uid: person_key(directory.entry_uuid(dn)) for uid, dn in dns.items()}
    deleted, staying = uids[:60], uids[60:]
    with watching(ldap_world) as (_, reports, _watch):
        assert all(ldap_world.ours("rolebindings", key) for key in keys.values())
        directory.server.delete(*(dns[uid] for uid in deleted))  # one ldapdelete, 60 entries

        def held() -> set[str]:
            return {h.action.username for r in reports if r.plan is not None for h in r.plan.held if h.unsafe}

        wait_for(lambda: held() == set(deleted), "all 60 deletions held")
        # Nobody lost access: the guard saw the burst whole.
        assert [a for r in reports if r.plan for a in r.plan.revocations] == []
        assert all(ldap_world.ours("rolebindings", keys[uid]) for uid in deleted)
        assert held_in_ledger(ldap_world) == set(deleted)

        # A human allows it: the full run revokes the 60.
        run = ldap_world.reconcile("--allow-mass-revocation")
        assert sorted(a["username"] for a in run["actions"] if a["kind"] == "revoke") == deleted
        assert not any(ldap_world.ours("rolebindings", keys[uid]) for uid in deleted)
        assert held_in_ledger(ldap_world) == set()

        # What the human allowed is not counted again: the next leaver is an ordinary one, revoked at once.
        directory.server.delete(dns[staying[0]])
        wait_for(lambda: not ldap_world.ours("rolebindings", keys[staying[0]]), "the ordinary leaver revoked")
        wait_for(lambda: ("revoke", "leaver", staying[0]) in reasons(reports), "its reason reported")
        assert held_in_ledger(ldap_world) == set()
    assert all(ldap_world.ours("rolebindings", keys[uid]) for uid in staying[1:])


def test_a_deletion_while_slapd_is_down_is_applied_after_reconnecting_from_the_cookie(
        ldap_world: World, own_directory: Directory, monkeypatch: pytest.MonkeyPatch):
    directory, server = own_directory, own_directory.server
    alice = directory.person("alice")
    directory.group("developers", alice, directory.person("bob"))
    key = person_key(directory.entry_uuid(alice))
    with watching(ldap_world, watch={"backoff": "1s", "max_backoff": "2s"}) as (engine, reports, watch):
        wait_for(lambda: engine.read_model.watch_cursors("directory").keys() == {"people", "groups"}, "cookies kept")
        full_reads = counting_full_reads(monkeypatch)
        stopped = time.monotonic()
        server.stop()
        wait_for(lambda: watch.state == "reconnecting", "the watch reconnecting")
        server.start(tls=False)  # up for ldapdelete only: syncd (LDAPS) still cannot reach it
        server.delete(alice)
        server.stop()
        time.sleep(max(0.0, DOWN - (time.monotonic() - stopped)))  # the outage the scenario asks for
        server.start()
        wait_for(lambda: not ldap_world.ours("rolebindings", key), "alice's RoleBindings gone")
        wait_for(lambda: ("revoke", "leaver", "alice") in reasons(reports), "its reason reported")
        assert watch.state == "connected"
    assert full_reads == []
    assert ldap_world.can("bob", "create", "deployments", ldap_world.ns("team-a")) == "yes"


def test_a_frozen_slapd_is_detected_and_the_watch_reconnects(ldap_world: World, own_directory: Directory):
    directory, server = own_directory, own_directory.server
    alice = directory.person("alice")
    directory.group("developers", alice)
    key = person_key(directory.entry_uuid(alice))
    with watching(ldap_world, watch={"keepalive": "1s", "backoff": "1s", "max_backoff": "2s"},
                  timeout="2s") as (_, reports, watch):
        server.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: watch.state == "reconnecting", "the frozen server noticed")
        finally:
            server.signal(signal.SIGCONT)
        wait_for(lambda: watch.state == "connected", "the watch connected again")
        directory.server.delete(alice)
        wait_for(lambda: not ldap_world.ours("rolebindings", key), "alice's RoleBindings gone")
