"""Which people a credentials run plans: a refresh, a rotation or a retirement due now."""

from datetime import timedelta

from syncd.core.lifecycle import Lifecycle, shortest_rotation
from syncd.core.policy import Policy
from tests.unit.plan.builders import NOW, POLICY, credential, known

FRESH = credential(issued=NOW - timedelta(hours=1), ttl=timedelta(hours=8))


def test_nobody_with_fresh_tokens_is_due():
    """Tokens young enough for both refresh and rotation need no run."""
    assert Lifecycle().due([known(cred=FRESH)], POLICY, NOW) == frozenset()


def test_a_person_whose_token_needs_a_refresh_is_due():
    """A token past refresh_at makes its person due."""
    old = credential(issued=NOW - timedelta(hours=7), ttl=timedelta(hours=8))
    assert Lifecycle().due([known(cred=old)], POLICY, NOW) == {"1001"}


def test_a_person_whose_token_is_past_the_shortest_rotation_period_is_due():
    """Any token older than the policy's shortest rotation period makes its person due (the planner decides)."""
    policy = Policy.model_validate({"defaults": {"rotation_period": "2h"}, "rules": []})
    assert Lifecycle().due([known(cred=credential(issued=NOW - timedelta(hours=2)))], policy, NOW) == {"1001"}


def test_a_person_with_an_old_token_past_its_grace_window_is_due():
    """A retiring token whose retire_at has come makes its person due."""
    old = credential(NOW - timedelta(hours=2), secret="syncd-1001-old", retire_at=NOW)
    assert Lifecycle().due([known(cred=FRESH, retiring=(old,))], POLICY, NOW) == {"1001"}


def test_a_person_with_an_old_token_without_retire_time_is_due():
    """A retiring token with no retire_at is due at once."""
    old = credential(NOW - timedelta(hours=2), secret="syncd-1001-old")
    assert Lifecycle().due([known(cred=FRESH, retiring=(old,))], POLICY, NOW) == {"1001"}


def test_a_person_with_an_old_token_within_its_grace_window_is_not_due():
    """A retiring token before its retire_at waits."""
    old = credential(NOW - timedelta(hours=2), secret="syncd-1001-old", retire_at=NOW + timedelta(minutes=1))
    assert Lifecycle().due([known(cred=FRESH, retiring=(old,))], POLICY, NOW) == frozenset()


def test_the_shortest_rotation_is_the_least_of_the_defaults_and_every_grant():
    """A grant's rotation_period shorter than the defaults' wins; the defaults count when no grant is shorter."""
    grant = {"cluster": "dev", "namespaces": ["a"], "role": "edit"}
    policy = Policy.model_validate({"defaults": {"rotation_period": "30d"}, "rules": [
        {"name": "r", "match": {"everyone": True}, "grant": [grant | {"rotation_period": "7d"}, grant]}]})
    assert shortest_rotation(policy) == timedelta(days=7)
    assert shortest_rotation(POLICY) == timedelta(days=90)
