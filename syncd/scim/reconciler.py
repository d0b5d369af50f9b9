"""Targeted reconciles of the people SCIM changes touch, off the request path.

Requests only queue person ids; worker threads take everything queued for a source at once and reconcile just
those people through the engine's usual lock and apply path. A lone change (one person queued, and one in the
source's last run) is reconciled at once; when changes come faster, a source's runs start at most every
`batch_interval`, so that a burst of pushes gathers into few runs. Several workers let one run wait for its
revoked tokens to be rejected while the next plans and applies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from syncd.errors import SyncdError

log = structlog.get_logger("syncd.scim")


class Reconciles(Protocol):
    """What SCIM needs of the engine (`syncd.runtime.engine.Engine` is one): a run of one source covering only
    these people, and its report."""

    def reconcile(self, source: str, *, only: frozenset[str]) -> Sequence[Any]: ...


class Reconciler:
    def __init__(self, engine: Reconciles, batch_interval: float, workers: int = 2,
                 on_report: Callable[[Any], None] | None = None) -> None:
        self.engine = engine
        self.batch_interval = batch_interval  # seconds between the starts of one source's runs, at least
        self.on_report = on_report  # called from a worker thread after each run (the daemon's metrics)
        self._pending: dict[str, set[str]] = {}
        self._started: dict[str, float] = {}  # source -> when its last run started (monotonic)
        self._last_size: dict[str, int] = {}  # source -> how many people its last run covered
        self._busy = 0
        self._closed = False
        self._changed = threading.Condition()
        self.reports: list[Any] = []  # the latest runs, for tests and metrics
        self._threads = [threading.Thread(target=self._work, name=f"scim-reconcile-{n}", daemon=True)
                         for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, source: str, people: frozenset[str]) -> None:
        with self._changed:
            self._pending.setdefault(source, set()).update(people)
            self._changed.notify_all()  # workers and wait_idle share the condition: wake a worker for sure

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or running (bounded by `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=120)

    def _due(self) -> tuple[str | None, float | None]:
        """A source whose queued people may start a run now, or how long until one may (None: nothing queued)."""
        now, wait = time.monotonic(), None
        for source, people in self._pending.items():
            if len(people) == 1 and self._last_size.get(source, 1) == 1:
                return source, None
            remaining = self._started.get(source, -self.batch_interval) + self.batch_interval - now
            if remaining <= 0:
                return source, None
            wait = remaining if wait is None else min(wait, remaining)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._closed:
                    source, wait = self._due()
                    if source is not None:
                        break
                    self._changed.wait(wait)
                if self._closed:
                    return
                assert source is not None
                people = self._pending.pop(source)
                self._started[source], self._last_size[source] = time.monotonic(), len(people)
                self._busy += 1
            try:
                self._run(source, frozenset(people))
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()

    def _run(self, source: str, people: frozenset[str]) -> None:
        try:
            (report,) = self.engine.reconcile(source, only=people)
        except SyncdError as error:
            log.error("fail a targeted reconcile", source=source, people=len(people), error=str(error))
            return
        except Exception:  # a worker must outlive any one run
            log.exception("fail a targeted reconcile", source=source, people=len(people))
            return
        self.reports = [*self.reports[-99:], report]
        if self.on_report is not None:
            self.on_report(report)
