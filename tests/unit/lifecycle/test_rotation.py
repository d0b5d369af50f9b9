"""When a token is renewed: a refresh near its expiry, else a rotation on the policy's rotation period."""

from datetime import timedelta

from syncd.core.lifecycle import Lifecycle
from syncd.core.model import Access, Kind, Reason
from tests.unit.plan.builders import CLUSTER, EDIT_A, NOW, credential

ACCESS = Access(CLUSTER, frozenset({EDIT_A}), token_ttl=timedelta(days=30), rotation_period=timedelta(days=7))
MONTH_LONG = credential(issued=NOW, ttl=timedelta(days=30))


def test_a_token_younger_than_the_rotation_period_is_kept():
    """No renewal before the rotation period and before refresh_at."""
    assert Lifecycle().renewal(MONTH_LONG, ACCESS, NOW + timedelta(days=6)) is None


def test_a_token_as_old_as_the_rotation_period_is_rotated():
    """Rotation is due once rotation_period has passed since the token was issued."""
    assert Lifecycle().renewal(MONTH_LONG, ACCESS, NOW + timedelta(days=7)) == (Kind.ROTATE, Reason.ROTATION_DUE)


def test_a_token_due_for_both_is_refreshed():
    """A refresh wins over a rotation: one new token either way, and expiry is the more urgent reason."""
    assert Lifecycle().renewal(MONTH_LONG, ACCESS, NOW + timedelta(days=25)) == (Kind.REFRESH, Reason.EXPIRING)


def test_the_rotation_period_is_the_policys_access():
    """rotation_due reads the period it is given, not a setting."""
    assert Lifecycle.rotation_due(MONTH_LONG, timedelta(days=1), NOW + timedelta(days=1))
    assert not Lifecycle.rotation_due(MONTH_LONG, timedelta(days=2), NOW + timedelta(days=1))
