"""Sweeps set to `report` list what they found as held instead of acting on it."""

from syncd.core.settings import SweepSettings as Sweep
from tests.unit.plan.builders import account, cluster, kinds, known, person, plan


def test_orphans_reported_not_removed():
    result = plan((person(),), (known(),), cluster(account(), account("9999")), sweep=Sweep(orphans="report"))
    assert kinds(result) == []
    assert [(str(h.action.kind), h.why) for h in result.held] == [("orphan", "reported only (sweep.orphans: report)")]


def test_stale_tokens_reported_not_removed():
    result = plan((person(),), (known(),), cluster(account(secrets=("syncd-1001-abcde", "x"))),
                  sweep=Sweep(stale_tokens="report"))
    assert kinds(result) == [] and [str(h.action.reason) for h in result.held] == ["stale"]


def test_drift_reported_not_repaired_but_a_missing_token_is_still_reissued():
    drift = plan((person(),), (known(),), cluster(account(bindings=())), sweep=Sweep(drift="report"))
    assert kinds(drift) == [] and [str(h.action.reason) for h in drift.held] == ["drift"]
    missing = plan((person(),), (known(),), cluster(account(secrets=())), sweep=Sweep(drift="report"))
    assert kinds(missing) == [("repair", "drift", "1001")]
