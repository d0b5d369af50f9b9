"""A known person whose account is disabled in the source: revoke (reason disabled)."""

from tests.unit.plan.builders import account, cluster, kinds, known, person, plan


def test_disabled_account_is_revoked():
    assert kinds(plan((person(active=False),), (known(),), cluster(account()))) == [("revoke", "disabled", "1001")]
