"""The daemon's long-lived watch of an LDAP source: the changes the directory reports, gathered while they keep
coming (`watch.gather_quiet`, at most `watch.gather_max_delay`), go through one targeted run (the same path a SCIM
push takes), so that the safety thresholds see a burst whole. The watch's cookie is kept in the ledger once the run
applied it, so a restart resumes where it stopped. A lost connection reconnects with backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from syncd.adapters.ldap import LdapSource
from syncd.adapters.ldap.dirsync import DirSyncWatch
from syncd.adapters.ldap.watch import Batch, Watch
from syncd.config import LdapSourceSettings
from syncd.errors import SyncdError
from syncd.runtime.engine import Engine, RunReport

log = structlog.get_logger("syncd.daemon")

WAIT = 1.0  # longest a watch waits for a message before checking whether it should stop


class SourceWatch:
    """One source's watch on a thread of its own. `state`: starting, connected, resyncing (a refresh or full read
    under way), reconnecting, standby (not the leader), polling (the server offers no content sync)."""

    def __init__(self, engine: Engine, settings: LdapSourceSettings, leads: Callable[[], bool],
                 on_report: Callable[[RunReport, float], None]) -> None:
        self.engine = engine
        self.settings = settings
        self.name = settings.name
        self.leads = leads
        self.on_report = on_report
        self.state = "starting"
        self.last_message: float | None = None  # time.monotonic() of the last message from the server
        self._opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)

    @property
    def last_message_age(self) -> float | None:
        return None if self.last_message is None else time.monotonic() - self.last_message

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _source(self) -> LdapSource:
        source = self.engine.sources[self.name]
        assert isinstance(source, LdapSource)
        return source

    def _mode(self) -> str:
        mode = self.settings.watch.mode
        if mode == "auto":
            mode = self._source().watch_mode()
        return mode

    def _run(self) -> None:
        delay = initial = self.settings.watch.backoff.total_seconds()
        while not self._stop.is_set():
            if not self.leads():
                self.state = "standby"
                self._stop.wait(WAIT)
                continue
            try:
                mode = self._mode()
                if mode == "poll":
                    self.state = "polling"
                    log.warning("watch the directory by polling: the server offers no content sync (RFC 4533), "
                                "persistent search or DirSync", source=self.name,
                                poll_interval=self.settings.incremental.poll_interval.total_seconds())
                    return
                self._watch(mode)
                continue  # stopped, or no longer the leader
            except SyncdError as error:
                if self._stop.is_set():
                    return  # our own close ended the stream
                if self._opened:  # it was connected: start the backoff over
                    delay, self._opened = initial, False
                self.state = "reconnecting"
                log.warning("reconnect a lost watch of the directory", source=self.name, error=str(error),
                            retry_in_seconds=delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.settings.watch.max_backoff.total_seconds())

    def _watch(self, mode: str) -> None:
        cookies = self.engine.read_model.watch_cursors(self.name)
        watch = (DirSyncWatch(self._source(), cookies, self._known, self.settings.watch.interval.total_seconds())
                 if mode == "dirsync" else Watch(self._source(), cookies, self._known, mode))
        watch.open()
        self._opened = True
        log.info("watch the directory for changes", source=self.name, mode=mode, resumed=watch.resumed)
        gather = self.settings.watch
        pending, first = Batch(), 0.0  # what is gathered, and when its first change came (monotonic)
        try:
            while not self._stop.is_set() and self.leads():
                self.state = "resyncing" if watch.resyncing else "connected"
                # Gather a burst into one run: until the directory is quiet for `gather_quiet`, at most
                # `gather_max_delay` after the first change.
                until_due = first + gather.gather_max_delay.total_seconds() - time.monotonic()
                batch = watch.next_batch(max(0.0, min(gather.gather_quiet.total_seconds(), until_due))
                                         if pending else WAIT)
                self.last_message = watch.last_heard
                if batch is not None:
                    if not pending:
                        first = time.monotonic()
                    pending.people |= batch.people
                    pending.full_read |= batch.full_read
                    pending.cookies |= batch.cookies
                    # A full read (a first refresh, a forgotten cookie) reads everyone: nothing to gather for.
                    if not pending.full_read and time.monotonic() - first < gather.gather_max_delay.total_seconds():
                        continue
                if pending and self._apply(pending):
                    pending = Batch()
        finally:
            watch.close()

    def _known(self) -> list[str]:
        """Ids of the people the ledger holds for this source."""
        return [pid for pid, person in self.engine.read_model.known_people().items() if person.source == self.name]

    def _apply(self, batch: Batch) -> bool:
        """Run what the batch asks for; keep its cookies once the source was read. False: try again."""
        started = time.monotonic()
        if batch.full_read:
            self.state = "resyncing"
            reports = self.engine.reconcile(self.name)
        elif batch.people:
            reports = self.engine.reconcile(self.name, only=frozenset(batch.people))
        else:
            reports = []
        for report in reports:
            self.on_report(report, time.monotonic() - started)
        if any(report.error is not None for report in reports):
            self._stop.wait(self.settings.watch.backoff.total_seconds())
            return False
        if batch.cookies:
            self.engine.save_watch_cursors(self.name, batch.cookies)
        return True


def source_watches(engine: Engine, leads: Callable[[], bool], on_report: Callable[[RunReport, float], None]
                   ) -> list[SourceWatch]:
    """A watch per LDAP source whose `watch.mode` is not poll."""
    return [SourceWatch(engine, source, leads, on_report) for source in engine.settings.sources
            if isinstance(source, LdapSourceSettings) and source.watch.mode != "poll"]
