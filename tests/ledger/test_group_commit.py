"""Group commit, on every backend: threads writing at once share commits, the hash chain stays exact, every caller
returns with its own writes committed, and a write that fails in a group fails alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import event as sa_event

from syncd.adapters.ledger.group_commit import GroupTransaction
from syncd.adapters.ledger.tables import RunRow
from syncd.errors import LedgerError
from syncd.ports import Event
from tests.ledger.conftest import Ledger


def joiner(n: int) -> Event:
    return Event(f"p{n}", f"user{n}", "issue", "joiner", cluster="dev")


def count_commits(ledger: Ledger) -> list[int]:
    commits = [0]
    sa_event.listen(ledger.database.engine, "commit", lambda _connection: commits.__setitem__(0, commits[0] + 1))
    return commits


def wait_for(condition: Callable[[], bool]) -> None:
    event = threading.Event()
    while not condition():
        event.wait(0.001)


class HeldLeader:
    """A write that stays in its transaction until released: whatever is written meanwhile queues behind it, and is
    then committed as one group, in the order it was queued."""

    def __init__(self, ledger: Ledger, pool: ThreadPoolExecutor) -> None:
        self.ledger, self.pool = ledger, pool
        self.inside, self.release = threading.Event(), threading.Event()

    def __enter__(self) -> HeldLeader:
        self.done = self.pool.submit(self.ledger.database.write, self._held)
        self.inside.wait()
        return self

    def _held(self, tx: GroupTransaction) -> None:
        tx.session.add(RunRow(id="held", source="hr", started_at=datetime.now(UTC), dry_run=False))
        tx.session.flush()
        self.inside.set()
        self.release.wait()

    def queue(self, write: Callable[[], object]) -> Future:
        queued = self.ledger.database._group_commit._grouped.waiting  # noqa: SLF001 - how many wait for the next group
        future = self.pool.submit(write)
        wait_for(lambda: self.ledger.database._group_commit._grouped.waiting > queued)  # noqa: SLF001
        return future

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.done.result()


def test_writes_queued_behind_a_commit_are_committed_together_in_their_order(ledger: Ledger):
    commits = count_commits(ledger)
    with ThreadPoolExecutor(8) as pool:
        with HeldLeader(ledger, pool) as leader:
            writes = [leader.queue(lambda n=n: ledger.journal.record("run1", joiner(n))) for n in range(6)]
        for write in writes:
            write.result()
    assert commits[0] == 2  # the held leader's, then one for the six
    assert ledger.read_model.verify() is None
    assert [(e.seq, e.person_id) for e in ledger.read_model.events()] == [(n + 1, f"p{n}") for n in range(6)]


def test_a_write_failing_in_a_group_fails_alone(ledger: Ledger):
    run_id = ledger.journal.start_run("hr", dry_run=False)

    def chain_then_fail(tx: GroupTransaction) -> None:
        ledger.journal._record(tx, run_id, joiner(99))  # noqa: SLF001 - moves the chain's head, then is rolled back
        tx.session.add(RunRow(id=run_id, source="hr", started_at=datetime.now(UTC), dry_run=False))  # run_id is taken
        tx.session.flush()

    with ThreadPoolExecutor(8) as pool:
        with HeldLeader(ledger, pool) as leader:
            first = leader.queue(lambda: ledger.journal.record(run_id, joiner(1)))
            failing = leader.queue(lambda: ledger.database.write(chain_then_fail))
            intent = leader.queue(lambda: ledger.journal.begin_intents(run_id, [joiner(2)]))
            last = leader.queue(lambda: ledger.journal.record(run_id, joiner(3)))
        first.result(), last.result()
        with pytest.raises(LedgerError, match="ledger write failed: IntegrityError"):
            failing.result()
        assert [type(i) for i in intent.result()] == [int]
    assert ledger.read_model.verify() is None
    assert [(e.seq, e.person_id) for e in ledger.read_model.events()] == [(1, "p1"), (2, "p3")]


def test_many_threads_at_once_keep_an_exact_chain_and_see_their_own_writes(ledger: Ledger, ledger_url: str):
    threads, each = 16, 15
    seen_own: list[bool] = []

    def writer(t: int) -> None:
        for n in range(each):
            person = f"t{t}-{n}"
            ledger.journal.record("run1", Event(person, person, "issue", "joiner", cluster="dev"))
            seen_own.append(len(other.read_model.events(person=person)) == 1)  # committed: another engine sees it

    with Ledger.open(ledger_url) as other, ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(writer, t) for t in range(threads)]:
            done.result()
    events = ledger.read_model.events()
    assert ledger.read_model.verify() is None
    assert [e.seq for e in events] == list(range(1, threads * each + 1))
    assert all(seen_own) and len(seen_own) == threads * each
    for t in range(threads):  # each writer's events in the order it wrote them
        assert [e.person_id for e in events if e.person_id.startswith(f"t{t}-")] == [f"t{t}-{n}" for n in range(each)]


def test_a_group_without_a_failing_write_takes_no_savepoint(ledger: Ledger):
    statements: list[str] = []
    sa_event.listen(ledger.database.engine, "before_cursor_execute",
                    lambda _c, _cursor, statement, *_: statements.append(statement))
    with ThreadPoolExecutor(8) as pool:
        with HeldLeader(ledger, pool) as leader:
            writes = [leader.queue(lambda n=n: ledger.journal.record("run1", joiner(n))) for n in range(6)]
        for write in writes:
            write.result()
    assert not [s for s in statements if "SAVEPOINT" in s.upper()]
    assert [e.person_id for e in ledger.read_model.events()] == [f"p{n}" for n in range(6)]
