"""A token past its refresh point (default 80% of its lifetime) is refreshed; earlier it is left alone."""

from datetime import timedelta

from tests.unit.plan.builders import NOW, account, cluster, credential, kinds, known, person, plan


def test_token_before_its_refresh_point_is_left_alone():
    cred = credential(issued=NOW - timedelta(hours=6, minutes=23))  # 79.8% of 8h
    assert kinds(plan((person(),), (known(cred=cred),), cluster(account()))) == []


def test_token_past_its_refresh_point_is_refreshed_with_a_new_token():
    cred = credential(issued=NOW - timedelta(hours=6, minutes=24))  # 80% of 8h
    result = plan((person(),), (known(cred=cred),), cluster(account()))
    assert kinds(result) == [("refresh", "expiring", "1001")]
    assert result.actions[0].new_token
    assert result.actions[0].create_bindings == () and result.actions[0].delete_bindings == ()


def test_expired_token_is_refreshed():
    cred = credential(issued=NOW - timedelta(days=2))
    assert kinds(plan((person(),), (known(cred=cred),), cluster(account()))) == [("refresh", "expiring", "1001")]
