"""Objects under our labels with no person behind them, in the ledger or the source: remove them."""

from tests.unit.plan.builders import account, cluster, kinds, known, person, plan


def test_labelled_service_account_with_nobody_behind_it_is_an_orphan():
    result = plan((person(),), (known(),), cluster(account(), account("9999")))
    assert kinds(result) == [("orphan", "orphan", "9999")]
    assert result.actions[0].token_secrets == ("syncd-9999-abcde",)


def test_objects_of_another_sources_people_are_not_orphans():
    result = plan((person(),), (known(), known("9999", "zed", source="scim")), cluster(account(), account("9999")))
    assert kinds(result) == []


def test_targeted_runs_do_not_sweep_orphans():
    result = plan((person(),), (known(),), cluster(account(), account("9999")), only=frozenset({"1001"}))
    assert kinds(result) == []
