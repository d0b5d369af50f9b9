"""Rotation with overlap: past its rotation period a token is replaced, and the old one retires after a grace
window; a refresh due at the same time wins (it replaces the token anyway)."""

from datetime import timedelta

from tests.unit.plan.builders import NOW, account, cluster, credential, kinds, known, person, plan

NINETY_DAYS = timedelta(days=90)


def test_token_older_than_the_rotation_period_is_rotated():
    cred = credential(issued=NOW - NINETY_DAYS, ttl=timedelta(days=365))
    result = plan((person(),), (known(cred=cred),), cluster(account()))
    assert kinds(result) == [("rotate", "rotation-due", "1001")]
    assert result.actions[0].new_token


def test_token_younger_than_the_rotation_period_is_kept():
    cred = credential(issued=NOW - NINETY_DAYS + timedelta(minutes=1), ttl=timedelta(days=365))
    assert kinds(plan((person(),), (known(cred=cred),), cluster(account()))) == []


def test_refresh_wins_over_rotation_when_both_are_due():
    cred = credential(issued=NOW - NINETY_DAYS, ttl=NINETY_DAYS)
    assert kinds(plan((person(),), (known(cred=cred),), cluster(account()))) == [("refresh", "expiring", "1001")]
