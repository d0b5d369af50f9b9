"""The fenced apply lock and the leader lease on a real PostgreSQL: a holder whose lock connection dies, or whose
lease another process took over, writes nothing more; the leader lease is acquired, renewed, followed, taken over
once expired and handed over on release."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from syncd.adapters.ledger import LedgerLeaderLease
from syncd.adapters.ledger.database import APPLY_LOCK_KEY
from syncd.errors import LeaseLost
from syncd.ports import Event
from tests.conftest import PostgresServer
from tests.ledger.conftest import Ledger

ALICE = Event("p1", "alice", "issue", "joiner", cluster="dev")
# pg_locks shows a bigint advisory key as its high and low 32 bits.
APPLY_LOCK_ROW = (f"locktype = 'advisory' AND classid = {APPLY_LOCK_KEY >> 32} "
                  f"AND objid = {APPLY_LOCK_KEY & 0xFFFFFFFF} AND objsubid = 1")


def wait_for(check: Callable[[], object], what: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return result


def lock_holder(ledger: Ledger) -> int | None:
    """The backend pid holding the apply lock, if any."""
    with ledger.database.engine.connect() as connection:
        return connection.execute(text(f"SELECT pid FROM pg_locks WHERE {APPLY_LOCK_ROW} AND granted")).scalar()  # noqa: S608


def terminate(ledger: Ledger, pid: int) -> None:
    with ledger.database.engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def events(ledger: Ledger) -> int:
    return ledger.read_model.last_seq()


@pytest.fixture
def two(postgres: PostgresServer) -> Iterator[tuple[Ledger, Ledger]]:
    url = postgres.new_database()
    with Ledger.open(url) as first, Ledger.open(url) as second:
        yield first, second


def test_a_holder_whose_lock_connection_dies_writes_nothing_more(two: tuple[Ledger, Ledger]):
    a, b = two
    with a.database.exclusive():
        a.journal.record("run-a", ALICE)
        a.journal.check_lease()  # held: an action whose intent is begun goes ahead
        terminate(b, wait_for(lambda: lock_holder(b), "a holds the apply lock"))
        # The heartbeat notices within a second or so; from then on every fenced write fails, writing nothing, and
        # an action whose intent was begun with others' stops before its first external write.
        lease = a.database._apply_lease
        assert lease is not None
        wait_for(lease.lost.is_set, "the heartbeat notices the lock connection died", timeout=10)
        with pytest.raises(LeaseLost):
            a.journal.check_lease()
        with pytest.raises(LeaseLost):
            a.journal.record("run-a", ALICE)
        assert events(a) == 1
    with b.database.exclusive():  # the lock is free again; the next holder writes on
        b.journal.record("run-b", ALICE)
    assert events(b) == 2


def test_a_holder_whose_lease_was_taken_over_fails_its_next_write_at_once(two: tuple[Ledger, Ledger]):
    a, b = two
    taken = threading.Event()
    with a.database.exclusive():
        run_id = a.journal.start_run("hr", dry_run=False)
        terminate(b, wait_for(lambda: lock_holder(b), "a holds the apply lock"))

        def take_over() -> None:
            with b.database.exclusive():
                taken.set()
                b.journal.record("run-b", ALICE)

        thread = threading.Thread(target=take_over)
        thread.start()
        wait_for(taken.is_set, "b takes the lock over")
        # Whether or not a's heartbeat noticed yet: the epoch is b's now, and a's write is refused.
        with pytest.raises(LeaseLost):
            a.journal.begin_intents(run_id, [ALICE])
        thread.join()
        a.journal.lose_lease(run_id)  # its own run's row only, unfenced
    assert events(b) == 1 and b.read_model.interrupted_intents() == []
    with b.database.engine.connect() as connection:
        assert connection.execute(text("SELECT result FROM run WHERE id = :id"), {"id": run_id}).scalar() \
            == "lost-lease"


def test_a_run_that_recorded_its_lost_lease_is_not_marked_interrupted_by_the_new_holder(two: tuple[Ledger, Ledger]):
    """The old holder records `lost-lease` while the new holder looks for dead runs: whichever commits first, the
    run ends up `lost-lease` (the new holder once overwrote it with `interrupted`, a row it had read as running)."""
    a, b = two
    with a.database.exclusive():
        run_id = a.journal.start_run("hr", dry_run=False)
    with a.database.engine.connect() as old_holder:
        old_holder.execute(text("UPDATE run SET result = 'lost-lease' WHERE id = :id"), {"id": run_id})
        found: list = []
        thread = threading.Thread(target=lambda: found.extend(b.journal.interrupt_dead_runs("run-b")))
        thread.start()
        wait_for(lambda: waiting_for_a_lock(b), "the new holder waits for the old holder's row")
        old_holder.commit()
        thread.join()
    assert found == []
    with b.database.engine.connect() as connection:
        assert connection.execute(text("SELECT result FROM run WHERE id = :id"), {"id": run_id}).scalar() \
            == "lost-lease"


def waiting_for_a_lock(ledger: Ledger) -> bool:
    with ledger.database.engine.connect() as connection:
        return bool(connection.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar())


def test_each_holder_of_the_apply_lock_takes_the_next_epoch(two: tuple[Ledger, Ledger]):
    a, b = two
    epochs = []
    for ledger in (a, b, a):
        with ledger.database.exclusive():
            epochs.append(ledger.database._apply_lease.epoch)  # type: ignore[union-attr]
            ledger.journal.record("run", ALICE)  # the holder's own writes go through
    assert epochs == [epochs[0], epochs[0] + 1, epochs[0] + 2]


def test_the_leader_lease_is_acquired_followed_renewed_taken_over_and_released(two: tuple[Ledger, Ledger]):
    ttl = timedelta(seconds=2)
    a, b = LedgerLeaderLease(two[0].database), LedgerLeaderLease(two[1].database)
    assert a.step("a", ttl).holder == "a"
    assert b.step("b", ttl).holder == "a"  # b follows
    renewed = a.step("a", ttl)
    assert renewed.holder == "a" and renewed.transitions == 1
    # a stops renewing: once its lease expires, b takes over.
    taken = wait_for(lambda: (record := b.step("b", ttl)).holder == "b" and record, "b takes over", timeout=10)
    assert taken.transitions == 2  # type: ignore[union-attr]
    assert a.step("a", ttl).holder == "b"  # a follows now
    b.release("b")
    assert a.step("a", ttl).holder == "a"  # released: taken at once


def test_on_sqlite_the_one_process_leads(tmp_path):
    with Ledger.open(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        assert LedgerLeaderLease(ledger.database).step("a", timedelta(seconds=2)).holder == "a"
