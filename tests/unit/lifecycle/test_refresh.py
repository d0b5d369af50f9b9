"""When a token is refreshed: past `tokens.refresh_at` of its lifetime."""

from datetime import timedelta

from syncd.core.lifecycle import Lifecycle
from syncd.core.settings import TokenSettings
from tests.unit.plan.builders import NOW, credential

EIGHT_HOURS = credential(issued=NOW, ttl=timedelta(hours=8))


def test_a_token_before_80_percent_of_its_life_is_not_refreshed():
    """Refresh is not due before refresh_at (default 0.8) of the lifetime."""
    assert not Lifecycle().refresh_due(EIGHT_HOURS, NOW + timedelta(hours=6, minutes=23))


def test_a_token_at_80_percent_of_its_life_is_refreshed():
    """Refresh is due from refresh_at of the lifetime on."""
    assert Lifecycle().refresh_due(EIGHT_HOURS, NOW + timedelta(hours=6, minutes=24))


def test_refresh_at_comes_from_the_token_settings():
    """A lower refresh_at makes the refresh due earlier."""
    assert Lifecycle(TokenSettings(refresh_at=0.5)).refresh_due(EIGHT_HOURS, NOW + timedelta(hours=4))
