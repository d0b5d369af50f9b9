"""Use, as the audit webhook receives it (or a follower reads it from an audit log file), on its way to the ledger: a
bounded queue the receiver offers batches to without ever waiting, one thread that aggregates them in memory, and a
flush into the ledger every few seconds (one transaction) and on close. A batch read from a file carries the file's
cursor, written in the same transaction as the use read up to there. The same thread checks each batch for anomalies
(`syncd.core.anomaly`) and records them, and deletes use past its retention; alerts run on a thread of their own
(`syncd.runtime.alert`)."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import structlog

from syncd.config import UsageSettings
from syncd.core.anomaly import Anomaly, AnomalyDetector, AnomalyKind, AnomalyRules, Credential, CredentialLife
from syncd.core.usage import Aggregator, DayUsage, UsageKey, Use
from syncd.errors import SyncdError
from syncd.ports import Event
from syncd.runtime.alert import AlertCommand

log = structlog.get_logger("syncd.usage")

LOOKBACK = timedelta(days=1)  # revoked credentials read for each person (besides the one revoked last)
FORGET_EVERY = 3600.0  # seconds between two deletions of use past its retention
MAX_PENDING = 1000  # anomalies found but not yet recorded (the ledger failing) at most; beyond, the oldest are lost
FLAG = {AnomalyKind.USE_AFTER_REVOCATION: "flag a use after revocation",
        AnomalyKind.DENIED_BURST: "flag a burst of denied requests",
        AnomalyKind.NEW_SOURCE_IP: "flag a new source IP",
        AnomalyKind.NEW_USER_AGENT: "flag a new user agent"}


Cursors = Mapping[str, bytes]  # an audit log file's path -> where its follower stopped


class UsageJournal(Protocol):
    def record_usage(self, days: Mapping[UsageKey, DayUsage], cursors: Cursors | None = None) -> None: ...

    def record_anomaly(self, event: Event) -> bool: ...

    def forget_usage(self, before: date) -> int: ...


class UsageReads(Protocol):
    def head(self) -> tuple[int, str]: ...

    def people_by_key(self) -> dict[str, tuple[str, str]]: ...

    def credential_lives(self, person_ids: Collection[str], since: datetime
                         ) -> dict[tuple[str, str], list[CredentialLife]]: ...

    def usage_places(self, keys: Collection[str]) -> dict[tuple[str, str], tuple[list[str], list[str]]]: ...


@dataclass(frozen=True)
class UsageLedger:
    journal: UsageJournal
    reads: UsageReads


def anomaly_rules(usage: UsageSettings) -> AnomalyRules:
    return AnomalyRules(usage.revocation_grace, usage.denied_burst, usage.denied_window)


class UsageRecorder:
    def __init__(self, ledger: Callable[[], UsageLedger], *, flush_interval: float, queue_batches: int,
                 usage: UsageSettings, on_anomaly: Callable[[dict], None] = lambda anomaly: None,
                 alert: AlertCommand | None = None) -> None:
        """`ledger` gives the ledger to use now (a daemon's reload replaces it). Each anomaly, once recorded, goes
        to `on_anomaly` and `alert` as the JSON document alert_command receives; closing the recorder closes
        `alert`."""
        self.ledger = ledger
        self.flush_interval = flush_interval
        self.retention = usage.retention
        self.on_anomaly = on_anomaly
        self.alert = alert
        self._batches: queue.Queue[tuple[Sequence[Use], Cursors] | None] = queue.Queue(maxsize=queue_batches)
        self._aggregator = Aggregator()
        self._cursors: dict[str, bytes] = {}  # of the batches aggregated and not yet written
        self._detector = AnomalyDetector(anomaly_rules(usage))
        self._pending: deque[Anomaly] = deque(maxlen=MAX_PENDING)
        self._head: tuple[int, str] | None = None  # the ledger's head when `_lives` was read: a new event voids it
        self._lives: dict[Credential, list[CredentialLife]] = {}
        self._people: dict[str, tuple[str, str]] = {}  # person key -> (id, username)
        self._people_head: tuple[int, str] | None = None
        self._forget_due = time.monotonic()
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
        """Aggregate every batch queued so far and write it all to the ledger (once: closing again does nothing);
        then run the alerts queued."""
        if not self._thread.is_alive():
            return
        self._batches.put(None)  # after every batch already queued
        self._thread.join()
        if self.alert:
            self.alert.close()

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
            if uses:
                self._check(uses)
            if time.monotonic() >= due:
                self._flush()
                due = time.monotonic() + self.flush_interval

    def _flush(self) -> None:
        ledger = self.ledger()
        self._record_anomalies(ledger.journal)
        self._forget(ledger.journal)
        days, cursors = self._aggregator.drain(), self._cursors
        if not days and not cursors:
            return
        self._cursors = {}
        try:
            ledger.journal.record_usage(days, cursors)
        except SyncdError as error:  # kept in memory for the next flush: its size is bounded by credentials x days
            log.error("fail to record use; try again at the next flush", days=len(days), error=str(error))
            self._aggregator.restore(days)
            self._cursors = {**cursors, **self._cursors}
            return
        log.debug("record use", days=len(days), requests=sum(day.requests for day in days.values()))

    def _forget(self, journal: UsageJournal) -> None:
        if time.monotonic() < self._forget_due:
            return
        before = (datetime.now(UTC) - self.retention).date()
        try:
            forgotten = journal.forget_usage(before)
        except SyncdError as error:
            log.error("fail to delete use past its retention; try again at the next flush", error=str(error))
            return
        self._forget_due = time.monotonic() + FORGET_EVERY
        if forgotten:
            log.info("delete use past its retention", before=before.isoformat(), days=forgotten)

    # Anomalies

    def _check(self, batch: Sequence[Use]) -> None:
        ledger = self.ledger()
        credentials = {(use.key, use.cluster) for use in batch}
        try:
            lives = self._credential_lives(ledger.reads, credentials)
            unknown = self._detector.unknown(credentials)
            if unknown:
                places = ledger.reads.usage_places({key for key, _ in unknown})
                for credential in unknown:
                    self._detector.remember(credential, *places.get(credential, ((), ())))
        except SyncdError as error:
            log.warning("skip the anomaly checks of a batch: the ledger cannot be read", uses=len(batch),
                        error=str(error))
            return
        for anomaly in self._detector.observe(batch, lives):
            if len(self._pending) == self._pending.maxlen:
                log.error("lose an anomaly: the ledger has not taken the ones before it",
                          kind=self._pending[0].kind, cluster=self._pending[0].cluster)
            self._pending.append(anomaly)
        self._record_anomalies(ledger.journal)

    def _credential_lives(self, reads: UsageReads, credentials: set[Credential]
                          ) -> dict[Credential, list[CredentialLife]]:
        """The tokens the ledger recorded for these credentials, read again whenever the ledger has a new event
        (every revocation has one)."""
        head = reads.head()
        if head != self._head:
            self._head, self._lives = head, {}
        missing = credentials - self._lives.keys()
        if not missing:
            return self._lives
        if any(key not in self._people for key, _ in missing) and self._people_head != head:
            self._people, self._people_head = reads.people_by_key(), head
        ids = {self._people[key][0] for key, _ in missing if key in self._people}
        lives = reads.credential_lives(ids, datetime.now(UTC) - LOOKBACK) if ids else {}
        for key, cluster in missing:
            person = self._people.get(key)
            self._lives[(key, cluster)] = lives.get((person[0], cluster), []) if person else []
        return self._lives

    def _record_anomalies(self, journal: UsageJournal) -> None:
        while self._pending:
            anomaly = self._pending[0]
            person_id, username = self._people.get(anomaly.key, (anomaly.key, anomaly.key))
            event = Event(person_id, username, "anomaly", str(anomaly.kind), cluster=anomaly.cluster,
                          result="flagged", error=anomaly.detail, fingerprint=anomaly.fingerprint)
            try:
                recorded = journal.record_anomaly(event)
            except SyncdError as error:
                log.error("fail to record an anomaly; try again with the next batch", kind=anomaly.kind,
                          error=str(error))
                return
            self._pending.popleft()
            if not recorded:
                continue  # found again after a restart: the ledger has it
            document = {"kind": str(anomaly.kind), "person_id": person_id, "username": username,
                        "cluster": anomaly.cluster, "at": anomaly.at.isoformat(), "detail": anomaly.detail,
                        "fingerprint": anomaly.fingerprint}
            log.warning(FLAG[anomaly.kind], **{name: value for name, value in document.items() if value is not None})
            self.on_anomaly(document)
            if self.alert:
                self.alert.offer(document)
