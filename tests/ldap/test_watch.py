"""The daemon's watch of a real slapd (syncprov): each change reaches the real control plane through a targeted run
within seconds, with its reason in the ledger; the cookie kept in the ledger resumes a restarted watch."""

from __future__ import annotations

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

pytestmark = pytest.mark.kube

TIMEOUT = 30.0  # generous: the machine is shared; a wait, not a timing assertion


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {TIMEOUT}s: {what}")
        time.sleep(0.1)


@contextmanager
def watching(world: World, full: bool = True) -> Iterator[tuple[Engine, list[RunReport]]]:
    """An engine (with its full reconcile done, unless not `full`) and the source's watch running on it."""
    world.configure(sources=[world_source(world) | {"watch": {"mode": "auto"}}])
    engine = Engine.from_settings(load_settings(world.config))
    reports: list[RunReport] = []
    (source,) = [s for s in engine.settings.sources if isinstance(s, LdapSourceSettings)]
    watch = SourceWatch(engine, source, lambda: True, lambda report, _seconds: reports.append(report))
    try:
        if full:
            engine.reconcile()
        watch.start()
        wait_for(lambda: watch.state == "connected", "watch connected")
        yield engine, reports
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
    with watching(ldap_world) as (_, reports):
        assert ldap_world.ours("rolebindings", key)
        directory.server.delete(alice)
        wait_for(lambda: not ldap_world.ours("rolebindings", key), "alice's RoleBindings gone")
        wait_for(lambda: ("revoke", "leaver", "alice") in reasons(reports), "its reason reported")
    assert ldap_world.can("bob", "create", "deployments", ldap_world.ns("team-a")) == "yes"


def test_a_locked_person_is_revoked_as_disabled(ldap_world: World, directory: Directory):
    alice = directory.person("alice")
    directory.group("developers", alice)
    with watching(ldap_world) as (_, reports):
        directory.lock(alice)
        wait_for(lambda: not bindings(ldap_world, directory, alice), "alice's RoleBindings gone")
        wait_for(lambda: ("revoke", "disabled", "alice") in reasons(reports), "its reason reported")


def test_removing_a_nested_group_from_its_parent_rescopes_its_members(ldap_world: World, directory: Directory):
    alice, bob = directory.person("alice"), directory.person("bob")
    directory.group("developers", directory.group("inner", alice), bob)
    with watching(ldap_world) as (_, reports):
        assert ldap_world.can("alice", "create", "deployments", ldap_world.ns("team-a")) == "yes"
        directory.leave("developers", directory.group_dn("inner"))
        wait_for(lambda: not bindings(ldap_world, directory, alice), "alice's RoleBindings gone")
        wait_for(lambda: ("revoke", "no-entitlement", "alice") in reasons(reports), "its reason reported")
    assert ldap_world.can("bob", "create", "deployments", ldap_world.ns("team-a")) == "yes"


def test_a_rename_keeps_the_person(ldap_world: World, directory: Directory):
    directory.group("developers", directory.person("alice"))
    with watching(ldap_world) as (_, reports):
        directory.move("alice", "alice.archer", "contractors")
        wait_for(lambda: ("rescope", "rename", "alice.archer") in reasons(reports), "alice renamed")


def test_a_restarted_watch_resumes_from_its_cookie_without_a_full_read(ldap_world: World, directory: Directory,
                                                                       monkeypatch: pytest.MonkeyPatch):
    alice = directory.person("alice")
    directory.group("developers", alice, directory.person("bob"))
    with watching(ldap_world) as (engine, reports):
        wait_for(lambda: engine.read_model.watch_cursors("directory").keys() == {"people", "groups"}, "cookies kept")
    directory.server.delete(alice)  # while no watch runs
    full_reads = []
    monkeypatch.setattr(LdapSource, "read", lambda self: full_reads.append(self) or pytest.fail("a full read"))
    with watching(ldap_world, full=False) as (_, reports):
        wait_for(lambda: ("revoke", "leaver", "alice") in reasons(reports), "alice revoked after the restart")
    assert full_reads == []
