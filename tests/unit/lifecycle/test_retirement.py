"""Which old tokens retire: grace ended, Secret vanished, or a token Secret no record explains."""

from datetime import timedelta

from syncd.core.lifecycle import Lifecycle, Retirement
from syncd.core.model import KnownAccess, Reason
from tests.unit.plan.builders import CLUSTER, EDIT_A, NOW, account, credential

ACTIVE = credential(secret="syncd-1001-new")
OLD = credential(NOW - timedelta(hours=7), secret="syncd-1001-old", retire_at=NOW)


def access(*retiring) -> KnownAccess:
    return KnownAccess(CLUSTER, frozenset({EDIT_A}), ACTIVE, tuple(retiring))


def test_an_old_token_whose_grace_ended_retires():
    """A retiring token whose retire_at has come is retired (grace-ended)."""
    due = Lifecycle.retirements(access(OLD), account(secrets=("syncd-1001-new", "syncd-1001-old")), NOW)
    assert due == [Retirement(Reason.GRACE_ENDED, ("syncd-1001-old",))]


def test_an_old_token_within_its_grace_window_stays():
    """A retiring token before its retire_at is left alone."""
    due = Lifecycle.retirements(access(OLD), account(secrets=("syncd-1001-new", "syncd-1001-old")),
                                NOW - timedelta(seconds=1))
    assert due == []


def test_an_old_token_whose_secret_vanished_retires():
    """A retiring token whose Secret is gone is retired (vanished) in the ledger, whatever its window."""
    due = Lifecycle.retirements(access(OLD), account(secrets=("syncd-1001-new",)), NOW - timedelta(hours=1))
    assert due == [Retirement(Reason.VANISHED, ("syncd-1001-old",))]


def test_token_secrets_no_record_explains_retire():
    """Token Secrets neither the active nor a retiring credential explains are stale, retired together."""
    due = Lifecycle.retirements(access(), account(secrets=("syncd-1001-new", "syncd-1001-x", "syncd-1001-a")), NOW)
    assert due == [Retirement(Reason.STALE, ("syncd-1001-a", "syncd-1001-x"))]


def test_the_active_token_never_retires_here():
    """The delivered token is replaced by a renewal, never retired as stale."""
    assert Lifecycle.retirements(access(), account(secrets=("syncd-1001-new",)), NOW) == []


def test_with_nothing_known_every_observed_token_secret_is_stale():
    """No ledger record: each observed token Secret is unexplained."""
    assert Lifecycle.retirements(None, account(secrets=("s1",)), NOW) == [Retirement(Reason.STALE, ("s1",))]
