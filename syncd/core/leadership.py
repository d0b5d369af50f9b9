"""Leader election for the scheduled jobs, as pure decisions: who may hold a lease, and for how long this replica may
act as its holder. The lease itself lives in the ledger database or in a Kubernetes Lease; both follow these rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True)
class LeaseRecord:
    """A lease as it stands: its holder ('' for nobody) until `expires_at`, and how often it changed hands."""

    holder: str
    expires_at: datetime | None
    transitions: int = 0


class Step(StrEnum):
    ACQUIRE = "acquire"  # nobody holds it
    RENEW = "renew"  # we hold it: extend it
    TAKE_OVER = "take-over"  # its holder let it expire
    FOLLOW = "follow"  # someone else holds it


def decide(current: LeaseRecord | None, me: str, now: datetime) -> Step:
    """What replica `me` does with the lease at `now` (the clock the lease's expiry is written in)."""
    if current is None or not current.holder:
        return Step.ACQUIRE
    if current.holder == me:
        return Step.RENEW
    if current.expires_at is None or now >= current.expires_at:
        return Step.TAKE_OVER
    return Step.FOLLOW


def after(current: LeaseRecord | None, step: Step, me: str, now: datetime, ttl: timedelta) -> LeaseRecord | None:
    """The lease once `step` is taken: held by `me` for `ttl` from `now`, or unchanged when following."""
    if step is Step.FOLLOW:
        return current
    transitions = current.transitions if current is not None else 0
    return LeaseRecord(me, now + ttl, transitions + (step is not Step.RENEW))


def released(current: LeaseRecord, me: str, now: datetime) -> LeaseRecord:
    """A holder stopping hands the lease over at once: it expires now. Another's lease is left alone."""
    return LeaseRecord(current.holder, now, current.transitions) if current.holder == me else current


def leads_until(started: float, ttl: timedelta) -> float:
    """Until when (monotonic seconds) a replica that renewed in a transaction begun at `started` may act as leader:
    the lease's expiry was computed from a later moment, so this never outlasts it."""
    return started + ttl.total_seconds()
