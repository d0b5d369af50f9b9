"""The leader election's decisions, without a database: acquire, renew, expire, take over, follow, release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.core.leadership import LeaseRecord, Step, after, decide, leads_until, released

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(seconds=15)


def test_nobody_holds_it_so_the_first_replica_acquires_it():
    assert decide(None, "a", NOW) is Step.ACQUIRE
    assert decide(LeaseRecord("", None), "a", NOW) is Step.ACQUIRE
    assert after(None, Step.ACQUIRE, "a", NOW, TTL) == LeaseRecord("a", NOW + TTL, 1)


def test_the_holder_renews_it_without_a_transition_even_past_its_expiry():
    held = LeaseRecord("a", NOW + timedelta(seconds=5), 3)
    assert decide(held, "a", NOW) is Step.RENEW
    assert after(held, Step.RENEW, "a", NOW, TTL) == LeaseRecord("a", NOW + TTL, 3)
    assert decide(held, "a", NOW + timedelta(minutes=1)) is Step.RENEW  # nobody took it meanwhile


def test_another_replica_follows_a_live_lease():
    held = LeaseRecord("a", NOW + timedelta(seconds=5), 3)
    assert decide(held, "b", NOW) is Step.FOLLOW
    assert decide(held, "b", NOW + timedelta(seconds=4, milliseconds=999)) is Step.FOLLOW
    assert after(held, Step.FOLLOW, "b", NOW, TTL) == held


def test_an_expired_lease_is_taken_over_and_counts_a_transition():
    held = LeaseRecord("a", NOW, 3)
    assert decide(held, "b", NOW) is Step.TAKE_OVER
    assert after(held, Step.TAKE_OVER, "b", NOW, TTL) == LeaseRecord("b", NOW + TTL, 4)


def test_a_holder_stopping_lets_its_lease_expire_now_and_leaves_anothers_alone():
    held = LeaseRecord("a", NOW + TTL, 3)
    assert released(held, "a", NOW) == LeaseRecord("a", NOW, 3)
    assert decide(released(held, "a", NOW), "b", NOW) is Step.TAKE_OVER
    assert released(held, "b", NOW) == held


def test_a_replica_leads_no_longer_than_the_lease_it_renewed():
    assert leads_until(100.0, TTL) == 115.0
