"""How long a replaced token stays valid: a refresh or rotation overlaps for the grace window; drift does not."""

from datetime import timedelta

import pytest

from syncd.core.lifecycle import Lifecycle, retire_at
from syncd.core.model import Kind
from syncd.core.settings import TokenSettings
from tests.unit.plan.builders import NOW

LIFECYCLE = Lifecycle(TokenSettings(rotation_grace=timedelta(minutes=30)))


@pytest.mark.parametrize("kind", [Kind.REFRESH, Kind.ROTATE])
def test_a_refresh_or_rotation_keeps_the_old_token_for_the_grace_window(kind: Kind):
    """The old token stays valid for tokens.rotation_grace after its successor is delivered."""
    assert LIFECYCLE.grace(kind) == timedelta(minutes=30)


@pytest.mark.parametrize("kind", [Kind.REPAIR, Kind.ISSUE])
def test_drift_or_relocation_replaces_the_old_token_at_once(kind: Kind):
    """A repair (drift, relocate) or an issue has no grace window: the token it replaces is revoked now."""
    assert LIFECYCLE.grace(kind) is None


def test_a_replaced_token_retires_when_the_grace_window_ends():
    """retire_at is now + grace when the token lives longer than that."""
    assert retire_at(NOW + timedelta(hours=8), NOW, timedelta(minutes=30)) == NOW + timedelta(minutes=30)


def test_a_replaced_token_never_retires_past_its_own_expiry():
    """retire_at is the expiry when the grace window would outlast it."""
    assert retire_at(NOW + timedelta(minutes=5), NOW, timedelta(minutes=30)) == NOW + timedelta(minutes=5)
