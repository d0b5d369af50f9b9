"""Use, as the audit webhook receives it (or a follower reads it from an audit log file), on its way to the ledger: a
bounded queue the receiver offers batches to without ever waiting, one thread that aggregates them in memory, and a
flush into the ledger every few seconds (one transaction) and on close. A batch read from a file carries the file's
cursor, written in the same transaction as the use read up to there."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from syncd.core.usage import Aggregator, DayUsage, UsageKey, Use
from syncd.errors import SyncdError

log = structlog.get_logger("syncd.usage")


Cursors = Mapping[str, bytes]  # an audit log file's path -> where its follower stopped


class UsageJournal(Protocol):
    def record_usage(self, days: Mapping[UsageKey, DayUsage], cursors: Cursors | None = None) -> None: ...


class UsageRecorder:
    def __init__(self, journal: UsageJournal, *, flush_interval: float, queue_batches: int) -> None:
        self.journal = journal
        self.flush_interval = flush_interval
        self._batches: queue.Queue[tuple[Sequence[Use], Cursors] | None] = queue.Queue(maxsize=queue_batches)
        self._aggregator = Aggregator()
        self._cursors: dict[str, bytes] = {}  # of the batches aggregated and not yet written
        self._thread = threading.Thread(target=self._run, name="usage", daemon=True)
        self._thread.start()

    def offer(self, uses: Sequence[Use]) -> bool:
        """Queue a batch for aggregation; False, and nothing queued, when the queue is full."""
        try:
            self._batches.put_nowait((uses, {}))
        except queue.Full:
            return False
        return True

    def put(self, uses: Sequence[Use], cursors: Cursors) -> None:
        """Queue a batch read from a file, waiting while the queue is full (a file can wait; nothing is dropped);
        `cursors` are written with the use of this batch and of every batch before it."""
        self._batches.put((uses, cursors))

    def close(self) -> None:
        """Aggregate every batch queued so far and write it all to the ledger (once: closing again does nothing)."""
        if not self._thread.is_alive():
            return
        self._batches.put(None)  # after every batch already queued
        self._thread.join()

    def _run(self) -> None:
        due = time.monotonic() + self.flush_interval
        while True:
            try:
                batch = self._batches.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                batch = ((), {})
            if batch is None:
                self._flush()
                return
            uses, cursors = batch
            self._aggregator.add(uses)
            self._cursors.update(cursors)
            if time.monotonic() >= due:
                self._flush()
                due = time.monotonic() + self.flush_interval

    def _flush(self) -> None:
        days, cursors = self._aggregator.drain(), self._cursors
        if not days and not cursors:
            return
        self._cursors = {}
        try:
            self.journal.record_usage(days, cursors)
        except SyncdError as error:  # kept in memory for the next flush: its size is bounded by credentials x days
            log.error("fail to record use; try again at the next flush", days=len(days), error=str(error))
            self._aggregator.restore(days)
            self._cursors = {**cursors, **self._cursors}
            return
        log.debug("record use", days=len(days), requests=sum(day.requests for day in days.values()))
