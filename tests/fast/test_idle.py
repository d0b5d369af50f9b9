"""Idle access on fakes under a controlled clock: suspended (bindings, token and files gone, the suspension in the
ledger), kept suspended by every later run, given back after `resume`; use recorded lately keeps access; report only
changes nothing; the daemon's gauge counts idle accesses per cluster."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.app.daemon.metrics import Metrics
from syncd.core.model import RoleKind, Scope, person_key
from syncd.core.usage import DayUsage
from syncd.errors import InputError
from tests.fakes import FakeSource, person
from tests.fast.conftest import TEAM_A, Rig, fake_clusters, make_engine, make_settings

EDIT_A = Scope(TEAM_A, RoleKind.CLUSTER_ROLE, "edit")
ALICE, BOB = person("1", "alice", "developers"), person("2", "bob", "developers")
# Past idle_after (30m) since anyone's grant in these tests, before any refresh of their 1h tokens (at 48m).
LATER = datetime.now(UTC) + timedelta(minutes=40)


def idle_rig(tmp_path: Path, action: str, **safety: object) -> Iterator[Rig]:
    source, clusters = FakeSource("hr"), fake_clusters("dev")
    settings = make_settings(tmp_path, clusters=tuple(clusters), usage={"idle_after": "30m", "idle_action": action},
                             safety={"max_revocations": 5, "max_revocation_percent": 100} | safety)
    with make_engine(settings, source, clusters) as engine:
        yield Rig(engine, source, clusters, tmp_path)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from idle_rig(tmp_path, "suspend")


def suspended(rig: Rig) -> list[tuple[str, str]]:
    return [(name, cluster) for _, name, cluster, _ in rig.engine.read_model.suspensions()]


def used(rig: Rig, who: str, at: datetime) -> None:
    rig.engine.parts.journal.record_usage({(person_key(who), "dev", at.date(), ""): DayUsage(at, at, requests=1)})


def test_an_idle_access_is_suspended_and_stays_suspended_until_resumed(rig: Rig):
    rig.source.set(ALICE)
    rig.reconcile()
    token = rig.token(ALICE)
    report = rig.reconcile(now=LATER)
    assert rig.actions(report) == [("revoke", "idle", "alice", "dev")]
    assert rig.dev.bindings_of("1") == set() and not rig.dev.token_authenticates(token) and rig.token(ALICE) is None
    assert suspended(rig) == [("alice", "dev")]
    for _ in range(2):  # the source still entitles alice: nothing is given back
        again = rig.reconcile(now=LATER + timedelta(minutes=5))
        assert not again.plan.actions and not again.plan.held
    assert rig.engine.sweep()[0].plan.actions == ()
    assert rig.engine.resume("alice", None, "back from leave") == ("1", "alice", ["dev"])
    assert suspended(rig) == []
    assert rig.actions(rig.reconcile()) == [("issue", "joiner", "alice", "dev")]
    assert rig.dev.bindings_of("1") == {EDIT_A} and rig.dev.token_authenticates(rig.token(ALICE))
    events = [(e.action, e.reason) for e in rig.engine.read_model.events(person="alice")]
    assert events == [("issue", "joiner"), ("revoke", "idle"), ("confirm-revocation", "token-rejected"),
                      ("resume", "back from leave"), ("issue", "joiner")]


def test_an_access_used_lately_is_not_suspended(rig: Rig):
    rig.source.set(ALICE, BOB)
    rig.reconcile()
    used(rig, "2", LATER - timedelta(minutes=5))
    report = rig.reconcile(now=LATER)
    assert rig.actions(report) == [("revoke", "idle", "alice", "dev")]
    assert suspended(rig) == [("alice", "dev")] and rig.dev.bindings_of("2") == {EDIT_A}


def test_a_mass_idle_suspension_is_held_until_allowed(tmp_path: Path):
    rig = next(idle_rig(tmp_path, "suspend", max_revocations=1))
    rig.source.set(ALICE, BOB)
    rig.reconcile()
    held = rig.reconcile(now=LATER)
    assert not held.plan.actions and [h.unsafe for h in held.plan.held] == [True, True]
    assert suspended(rig) == [] and rig.dev.bindings_of("1") == {EDIT_A}
    allowed = rig.reconcile(now=LATER, allow_mass_revocation=True)
    assert len(allowed.plan.actions) == 2 and suspended(rig) == [("alice", "dev"), ("bob", "dev")]
    rig.engine.close()


def test_report_only_revokes_nothing(tmp_path: Path):
    rig = next(idle_rig(tmp_path, "report"))
    rig.source.set(ALICE)
    rig.reconcile()
    report = rig.reconcile(now=LATER)
    assert not report.plan.actions and [idle.username for idle in report.plan.idle] == ["alice"]
    assert rig.dev.bindings_of("1") == {EDIT_A} and suspended(rig) == []
    rig.engine.close()


def test_resume_refuses_a_name_two_suspended_people_share(rig: Rig):
    rig.source.set(ALICE, person("3", "alice", "developers"))
    rig.reconcile()
    rig.reconcile(now=LATER)
    with pytest.raises(InputError, match="several suspended people"):
        rig.engine.resume("alice", None, "back")
    assert rig.engine.resume("3", "dev", "back") == ("3", "alice", ["dev"])
    with pytest.raises(InputError, match="no suspended access"):
        rig.engine.resume("3", None, "again")


def test_the_gauge_counts_idle_accesses_per_cluster_from_full_runs(tmp_path: Path):
    rig = next(idle_rig(tmp_path, "report"))
    rig.source.set(ALICE, BOB)
    rig.reconcile()
    metrics = Metrics()
    metrics.record_run("reconcile", rig.reconcile(now=LATER), None)
    assert metrics.registry.get_sample_value("syncd_idle_credentials", {"cluster": "dev"}) == 2
    metrics.record_run("credentials", rig.reconcile(only=frozenset({"1"})), None)  # targeted: counts nobody
    assert metrics.registry.get_sample_value("syncd_idle_credentials", {"cluster": "dev"}) == 2
    metrics.record_run("reconcile", rig.reconcile(), None)
    assert metrics.registry.get_sample_value("syncd_idle_credentials", {"cluster": "dev"}) == 0
    rig.engine.close()
