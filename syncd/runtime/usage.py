"""Use, as the audit webhook receives it, on its way to the ledger: a bounded queue the receiver offers batches to
without ever waiting, one thread that aggregates them in memory, and a flush into the ledger every few seconds (one
transaction) and on close."""

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


class UsageJournal(Protocol):
    def record_usage(self, days: Mapping[UsageKey, DayUsage]) -> None: ...


class UsageRecorder:
    def __init__(self, journal: UsageJournal, *, flush_interval: float, queue_batches: int) -> None:
        self.journal = journal
        self.flush_interval = flush_interval
        self._batches: queue.Queue[Sequence[Use] | None] = queue.Queue(maxsize=queue_batches)
        self._aggregator = Aggregator()
        self._thread = threading.Thread(target=self._run, name="usage", daemon=True)
        self._thread.start()

    def offer(self, uses: Sequence[Use]) -> bool:
        """Queue a batch for aggregation; False, and nothing queued, when the queue is full."""
        try:
            self._batches.put_nowait(uses)
        except queue.Full:
            return False
        return True

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
                batch = ()
            if batch is None:
                self._flush()
                return
            self._aggregator.add(batch)
            if time.monotonic() >= due:
                self._flush()
                due = time.monotonic() + self.flush_interval

    def _flush(self) -> None:
        days = self._aggregator.drain()
        if not days:
            return
        try:
            self.journal.record_usage(days)
        except SyncdError as error:  # kept in memory for the next flush: its size is bounded by credentials x days
            log.error("fail to record use; try again at the next flush", days=len(days), error=str(error))
            self._aggregator.restore(days)
            return
        log.debug("record use", days=len(days), requests=sum(day.requests for day in days.values()))
