"""A known, active person who lost every entitling group: revoke (reason no-entitlement)."""

from tests.unit.plan.builders import account, cluster, kinds, known, person, plan


def test_lost_every_group_is_revoked():
    result = plan((person(groups=("sales",)),), (known(),), cluster(account()))
    assert kinds(result) == [("revoke", "no-entitlement", "1001")]


def test_lost_objects_with_no_ledger_record_are_revoked_too():
    result = plan((person(groups=("sales",)),), (), cluster(account()))
    assert kinds(result) == [("revoke", "no-entitlement", "1001")]
