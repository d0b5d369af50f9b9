"""The engine's behaviour on fakes: joiners, movers, leavers, safety holds, targeted runs, clusters down, the
credential lifecycle under a controlled clock, manual revocation, dry runs and the sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.core.model import RoleKind, Scope, person_key
from syncd.core.plan import Reason
from syncd.errors import SourceUnavailable
from tests.fakes import FakeIncrementalSource, FakeTargetedSource, moved, person
from tests.fast.conftest import TEAM_A, TEAM_B, Rig, fake_clusters, make_engine, make_settings

EDIT_A, VIEW_B = Scope(TEAM_A, RoleKind.CLUSTER_ROLE, "edit"), Scope(TEAM_B, RoleKind.CLUSTER_ROLE, "view")
ALICE, BOB, CAROL = person("1", "alice", "developers"), person("2", "bob", "developers"), person("3", "carol", "sre")


def test_a_joiner_gets_bindings_a_working_token_and_a_kubeconfig(rig: Rig):
    rig.source.set(ALICE)
    report = rig.reconcile()
    assert rig.actions(report) == [("issue", "joiner", "alice", "dev")]
    assert report.result == "ok" and report.writes > 0
    assert rig.dev.bindings_of("1") == {EDIT_A}
    token = rig.token(ALICE)
    assert token is not None and rig.dev.token_authenticates(token)
    assert not rig.reconcile().plan.actions, "a second run with nothing changed planned work"


def test_a_mover_is_rescoped_and_keeps_the_token(rig: Rig):
    rig.source.set(ALICE)
    rig.reconcile()
    token = rig.token(ALICE)
    rig.source.set(moved(ALICE, "sre"))
    report = rig.reconcile()
    assert ("rescope", "mover", "alice", "dev") in rig.actions(report)
    assert rig.dev.bindings_of("1") == {VIEW_B}
    assert rig.token(ALICE) == token and rig.dev.token_authenticates(token)


def test_a_leaver_loses_everything_and_the_token_is_confirmed_dead(rig: Rig):
    rig.source.set(ALICE, BOB)
    rig.reconcile()
    token = rig.token(ALICE)
    rig.source.set(BOB)
    report = rig.reconcile()
    assert rig.actions(report) == [("revoke", "leaver", "alice", "dev")]
    assert report.confirmed_rejections == 1 and not rig.dev.token_authenticates(token)
    assert rig.dev.bindings_of("1") == set() and person_key("1") not in rig.dev.observe().accounts
    assert rig.token(ALICE) is None
    assert rig.dev.bindings_of("2") == {EDIT_A}, "the leaver's run touched someone else"


def test_a_mass_revocation_is_held_until_allowed(rig: Rig):
    people = [person(str(n), f"dev{n}", "developers") for n in range(4)]
    rig.source.set(*people)
    rig.reconcile()
    rig.source.set()
    held = rig.reconcile()
    assert not held.plan.actions and len(held.plan.held) == 4
    assert all(rig.dev.bindings_of(p.id) == {EDIT_A} for p in people)
    allowed = rig.reconcile(allow_mass_revocation=True)
    assert len(allowed.plan.actions) == 4 and all(rig.dev.bindings_of(p.id) == set() for p in people)


def targeted_rig(tmp_path, people: int) -> tuple[FakeTargetedSource, dict, object]:
    everyone = [person(str(n), f"dev{n}", "developers") for n in range(people)]
    source, clusters = FakeTargetedSource("idp", *everyone), fake_clusters("dev")
    return source, clusters, make_engine(make_settings(tmp_path, source="idp"), source, clusters)


def test_a_burst_split_over_targeted_runs_is_held_whole_until_allowed(tmp_path):
    source, clusters, engine = targeted_rig(tmp_path, 20)
    with engine:
        engine.reconcile("idp")
        source.set(*(person(str(n), f"dev{n}", "developers") for n in range(15, 20)))
        (first,) = engine.reconcile("idp", only=frozenset(str(n) for n in range(12)))  # 60% of the holders
        assert not first.plan.actions and len(first.plan.held) == 12
        # The burst's tail alone would be 15%: the held part counts, so it is held too.
        (tail,) = engine.reconcile("idp", only=frozenset({"12", "13", "14"}))
        assert not tail.plan.actions and [h.unsafe for h in tail.plan.held] == [True] * 3
        # Retrying the held people does not count them twice (15 of 20 either way) and holds them still.
        (retry,) = engine.reconcile("idp", only=engine.read_model.held_revocations("idp"))
        assert not retry.plan.actions and "75%" in retry.plan.held[0].why
        assert all(clusters["dev"].bindings_of(str(n)) == {EDIT_A} for n in range(20))

        (allowed,) = engine.reconcile("idp", allow_mass_revocation=True)
        assert len(allowed.plan.revocations) == 15
        source.set(*(person(str(n), f"dev{n}", "developers") for n in range(16, 20)))
        (ordinary,) = engine.reconcile("idp", only=frozenset({"15"}))  # after the approval, an ordinary leaver
        assert [a.person_id for a in ordinary.plan.revocations] == ["15"] and not ordinary.plan.held


def test_a_slow_trickle_of_targeted_leavers_trips_the_window(tmp_path):
    source, clusters, engine = targeted_rig(tmp_path, 20)
    with engine:
        engine.reconcile("idp")
        results = []
        for n in range(8):  # one leaver per run, as an IdP or a watch sends them
            source.set(*(person(str(k), f"dev{k}", "developers") for k in range(n + 1, 20)))
            (report,) = engine.reconcile("idp", only=frozenset({str(n)}))
            results.append("revoked" if report.plan.revocations else "held")
        assert results == ["revoked"] * 5 + ["held"] * 3  # 25% of 20 may go; the window adds them up


def test_a_partial_read_revokes_nobody(rig: Rig):
    rig.source.set(ALICE, BOB)
    rig.reconcile()
    rig.source.set(BOB, problems=("people.csv: line 2: no username",))
    report = rig.reconcile()
    assert not report.plan.actions and report.problems
    assert rig.dev.bindings_of("1") == {EDIT_A}


def test_a_source_that_cannot_be_read_changes_nothing(rig: Rig):
    rig.source.set(ALICE)
    rig.reconcile()
    rig.source.fail()
    report = rig.reconcile()
    assert isinstance(report.error, SourceUnavailable) and report.result == "failed"
    assert (report.plan, report.writes) == (None, 0)
    assert rig.dev.bindings_of("1") == {EDIT_A}


def test_a_targeted_run_touches_only_its_people(tmp_path):
    source, clusters = FakeTargetedSource("idp", ALICE, BOB), fake_clusters("dev")
    with make_engine(make_settings(tmp_path, source="idp"), source, clusters) as engine:
        engine.reconcile("idp")
        source.set(moved(ALICE, "sre"), moved(BOB, "sre"))
        (report,) = engine.reconcile("idp", only=frozenset({"1"}))
        assert [a.person_id for a in report.plan.actions] == ["1"]
        assert clusters["dev"].bindings_of("1") == {VIEW_B}
        assert clusters["dev"].bindings_of("2") == {EDIT_A}


def test_a_cluster_that_is_down_is_skipped_and_caught_up_later(rig: Rig):
    rig.source.set(CAROL)
    rig.clusters["prod"].unreachable = True
    report = rig.reconcile()
    assert report.result == "failed" and "prod" in report.cluster_errors
    assert rig.actions(report) == [("issue", "joiner", "carol", "dev")]
    assert rig.dev.bindings_of("3") == {VIEW_B}
    rig.clusters["prod"].unreachable = False
    assert rig.actions(rig.reconcile()) == [("issue", "joiner", "carol", "prod")]
    assert rig.clusters["prod"].bindings_of("3") == {VIEW_B}


def test_a_server_error_fails_the_action_and_the_next_run_retries(rig: Rig):
    rig.source.set(ALICE)
    rig.dev.server_error = True
    report = rig.reconcile()
    assert [(str(a.kind), e.retryable) for a, e in report.outcome.failed] == [("issue", True)]
    assert rig.token(ALICE) is None
    rig.dev.server_error = False
    assert rig.reconcile().result == "ok" and rig.dev.bindings_of("1") == {EDIT_A}


def test_refresh_then_retire_the_old_token_after_the_grace_window(rig: Rig):
    rig.source.set(ALICE)
    rig.reconcile()
    first = rig.token(ALICE)
    soon = datetime.now(UTC) + timedelta(minutes=50)  # past 80% of a 1h token
    assert rig.actions(rig.reconcile(now=soon)) == [("refresh", "expiring", "alice", "dev")]
    second = rig.token(ALICE)
    assert second != first and rig.dev.token_authenticates(first), "the old token died within its grace window"
    after_grace = datetime.now(UTC) + timedelta(minutes=6)
    report = rig.reconcile(now=after_grace)
    assert rig.actions(report) == [("retire", "grace-ended", "alice", "dev")]
    assert not rig.dev.token_authenticates(first) and rig.dev.token_authenticates(second)


def test_rotation_is_due_after_the_rotation_period(rig: Rig):
    rig.source.set(ALICE)
    rig.reconcile()
    # A policy with a rotation period shorter than the refresh point.
    rig.engine.policy = rig.engine.policy.model_copy(update={"defaults": rig.engine.policy.defaults.model_copy(
        update={"rotation_period": timedelta(minutes=20)})})
    report = rig.reconcile(now=datetime.now(UTC) + timedelta(minutes=30))
    assert rig.actions(report) == [("rotate", "rotation-due", "alice", "dev")]


def test_a_manual_revocation_kills_one_token(rig: Rig):
    rig.source.set(ALICE, BOB)
    rig.reconcile()
    token = rig.token(ALICE)
    (row,) = [c for c, username, _ in rig.engine.read_model.credentials() if username == "alice"]
    report = rig.engine.revoke(row.fingerprint, Reason.EXPOSED)
    assert report.confirmed_rejections == 1 and not rig.dev.token_authenticates(token)
    assert rig.dev.token_authenticates(rig.token(BOB))


def test_a_dry_run_writes_nothing(rig: Rig):
    rig.source.set(ALICE)
    report = rig.reconcile(dry_run=True)
    assert rig.actions(report) == [("issue", "joiner", "alice", "dev")]
    assert (report.writes, report.run_id, rig.dev.writes) == (0, None, 0)
    assert rig.token(ALICE) is None and rig.engine.read_model.events() == []


def test_the_sweep_repairs_drift_and_removes_orphans_without_reading_the_source(rig: Rig):
    rig.source.set(ALICE)
    rig.reconcile()
    (binding,) = rig.dev.observe().accounts[person_key("1")].bindings
    rig.dev.delete_binding(binding)
    rig.dev.add_service_account("stray", **rig.dev.instance_labels)
    rig.source.fail()
    (report,) = rig.engine.sweep("hr")
    assert report.result == "ok"
    assert sorted((str(a.kind), str(a.reason)) for a in report.plan.actions) == [("orphan", "orphan"),
                                                                                 ("repair", "drift")]
    assert rig.dev.bindings_of("1") == {EDIT_A} and "stray" not in rig.dev.service_accounts


def test_a_poll_reconciles_only_the_people_changed(tmp_path):
    source, clusters = FakeIncrementalSource("ldap", ALICE, BOB), fake_clusters("dev")
    with make_engine(make_settings(tmp_path, source="ldap"), source, clusters) as engine:
        engine.reconcile("ldap")
        assert engine.poll("ldap") is None
        source.set(moved(ALICE, "sre"), BOB)
        report = engine.poll("ldap")
        assert [a.person_id for a in report.plan.actions] == ["1"]
        assert clusters["dev"].bindings_of("1") == {VIEW_B}
