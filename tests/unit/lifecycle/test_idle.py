"""When an access is idle: no use recorded for `usage.idle_after` since the later of its last use and its grant."""

from datetime import timedelta

from syncd.core.lifecycle import Lifecycle
from syncd.core.model import KnownAccess
from tests.unit.plan.builders import CLUSTER, NOW, credential

IDLE_AFTER = timedelta(days=30)
LIFECYCLE = Lifecycle(idle_after=IDLE_AFTER)


def access(granted_days_ago: int | None) -> KnownAccess:
    granted = None if granted_days_ago is None else NOW - timedelta(days=granted_days_ago)
    return KnownAccess(CLUSTER, frozenset(), credential(), granted_at=granted)


def test_without_idle_after_no_access_is_ever_idle():
    """usage.idle_after unset: never idle, however old and unused."""
    assert Lifecycle().idle_since(access(400), None, NOW) is None


def test_a_joiner_is_not_idle_at_once():
    """Granted just now, never used: idleness counts from the grant."""
    assert LIFECYCLE.idle_since(access(0), None, NOW) is None


def test_an_access_never_used_is_idle_once_idle_after_passed_since_its_grant():
    assert LIFECYCLE.idle_since(access(30), None, NOW) == NOW - IDLE_AFTER


def test_an_access_used_lately_is_not_idle():
    assert LIFECYCLE.idle_since(access(90), NOW - timedelta(days=29), NOW) is None


def test_an_access_is_idle_once_idle_after_passed_since_its_last_use():
    last_use = NOW - timedelta(days=31)
    assert LIFECYCLE.idle_since(access(90), last_use, NOW) == last_use


def test_a_resumed_access_counts_from_its_new_grant_not_from_its_old_use():
    """Use from before a suspension is older than the access given back: the new grant is what counts."""
    assert LIFECYCLE.idle_since(access(1), NOW - timedelta(days=60), NOW) is None


def test_an_access_whose_grant_and_use_are_unknown_is_never_idle():
    assert LIFECYCLE.idle_since(access(None), None, NOW) is None
