"""The audit webhook receiver in this process (the real ASGI app, no socket) over the real ledger on SQLite: senders
are told apart by their token, syncd's ServiceAccounts' events are kept per day, the rest is refused or counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.adapters.ledger import Database, Journal, ReadModel
from syncd.app.daemon.audit import AuditApp, Sender
from syncd.app.daemon.metrics import Metrics
from syncd.config import AuditSenderSettings, AuditSettings, UsageSettings
from syncd.core.usage import DayUsage, UsageKey, user_prefix
from syncd.runtime.usage import UsageLedger, UsageRecorder
from tests.fast.audit import event_list, post_audit

DEV_TOKEN, PROD_TOKEN = "dev-sender-token", "prod-sender-token"
TODAY = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def event(username: str = "system:serviceaccount:syncd:syncd-alice", code: int = 200, verb: str = "list") -> dict:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete",
            "verb": verb, "user": {"username": username}, "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.20",
            "objectRef": {"resource": "pods", "namespace": "team-a"}, "responseStatus": {"code": code},
            "requestReceivedTimestamp": TODAY, "stageTimestamp": TODAY}


@dataclass
class Receiver:
    app: AuditApp
    recorder: UsageRecorder
    metrics: Metrics
    read_model: ReadModel

    def post(self, body: bytes, token: str | None = DEV_TOKEN) -> int:
        return post_audit(self.app, body, token)

    def counted(self, result: str) -> float:
        labels = {"source": "webhook", "result": result}
        return self.metrics.registry.get_sample_value("syncd_audit_events_total", labels) or 0.0

    def requests(self, key: str = "alice") -> dict[str, int]:
        """Requests per cluster in the ledger."""
        return {cluster: day.requests for (_, cluster, _, _), day in self.read_model.usage(key)}


def receiver_over(tmp_path: Path, journal: object, *, database: Database, flush_interval: float = 3600,
                  queue_batches: int = 100, max_body: int = 8_388_608) -> Receiver:
    settings = AuditSettings(senders=[AuditSenderSettings(cluster="dev", token_file=tmp_path / "dev"),
                                      AuditSenderSettings(cluster="prod", token_file=tmp_path / "prod")],
                             max_body_bytes=max_body)
    ledger = UsageLedger(journal, ReadModel(database))  # type: ignore[arg-type]
    recorder = UsageRecorder(lambda: ledger, flush_interval=flush_interval, queue_batches=queue_batches,
                             usage=UsageSettings())
    metrics = Metrics()
    app = AuditApp(settings, [Sender("dev", DEV_TOKEN.encode()), Sender("prod", PROD_TOKEN.encode())],
                   {"dev": user_prefix("syncd"), "prod": user_prefix("syncd")}, recorder, metrics)
    return Receiver(app, recorder, metrics, ReadModel(database))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with Database(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


@pytest.fixture
def receiver(tmp_path: Path, database: Database) -> Iterator[Receiver]:
    opened = receiver_over(tmp_path, Journal(database), database=database)
    yield opened
    opened.recorder.close()


def test_accepted_events_reach_the_ledger_when_the_recorder_closes(receiver: Receiver):
    assert receiver.post(event_list(event(), event(code=403), event(verb="get"))) == 200
    receiver.recorder.close()
    [(key, day)] = receiver.read_model.usage("alice")
    assert key[:2] == ("alice", "dev")
    assert (day.requests, day.denied, day.verbs) == (3, 1, {"list": 2, "get": 1})


def test_use_is_flushed_every_interval_without_a_close(tmp_path: Path, database: Database):
    receiver = receiver_over(tmp_path, Journal(database), database=database, flush_interval=0.1)
    try:
        assert receiver.post(event_list(event())) == 200
        deadline = time.monotonic() + 10
        while receiver.requests() != {"dev": 1}:
            assert time.monotonic() < deadline, "use not flushed within 10 s"
            time.sleep(0.05)
    finally:
        receiver.recorder.close()


def test_flushes_add_up_in_the_ledger(receiver: Receiver, tmp_path: Path, database: Database):
    receiver.post(event_list(event()))
    receiver.recorder.close()
    again = receiver_over(tmp_path, Journal(database), database=database)
    again.post(event_list(event(), event()))
    again.recorder.close()
    assert receiver.requests() == {"dev": 3}


def test_each_sender_is_the_cluster_its_token_names(receiver: Receiver):
    receiver.post(event_list(event()), token=PROD_TOKEN)
    receiver.post(event_list(event(), event()), token=DEV_TOKEN)
    receiver.recorder.close()
    assert receiver.requests() == {"dev": 2, "prod": 1}


def test_a_sender_without_a_token_gets_401_and_with_a_wrong_one_403_and_nothing_is_kept(receiver: Receiver):
    assert receiver.post(event_list(event()), token=None) == 401
    assert receiver.post(event_list(event()), token="dev-sender-tokenX") == 403
    assert receiver.post(event_list(event()), token="dev-sender-toke") == 403
    receiver.recorder.close()
    assert receiver.requests() == {}
    assert receiver.counted("received") == 0


def test_other_users_are_counted_as_ignored_and_not_kept(receiver: Receiver):
    receiver.post(event_list(event("admin"), event("system:serviceaccount:kube-system:x"), event()))
    receiver.recorder.close()
    assert (receiver.counted("received"), receiver.counted("ignored"), receiver.counted("accepted")) == (3, 2, 1)
    assert receiver.requests() == {"dev": 1}


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"kind": "Event"}', b'{"kind": "EventList", "items": 3}',
                                  b"[" * 100_000])
def test_a_malformed_body_gets_400_is_counted_and_changes_nothing(receiver: Receiver, body: bytes):
    assert receiver.post(body) == 400
    receiver.recorder.close()
    assert receiver.counted("malformed") == 1 and receiver.requests() == {}


def test_an_oversized_body_gets_413_is_counted_and_changes_nothing(tmp_path: Path, database: Database):
    receiver = receiver_over(tmp_path, Journal(database), database=database, max_body=1024)
    try:
        assert receiver.post(event_list(*[event()] * 20)) == 413
    finally:
        receiver.recorder.close()
    assert receiver.counted("malformed") == 1 and receiver.requests() == {}


class StuckJournal(Journal):
    """A ledger that does not take use until released."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.recorded: list[Mapping[UsageKey, DayUsage]] = []

    def record_usage(self, days: Mapping[UsageKey, DayUsage], cursors: Mapping[str, bytes] | None = None) -> None:
        self.entered.set()
        self.release.wait()
        self.recorded.append(days)


def test_a_full_queue_drops_batches_counts_them_and_still_answers_at_once(tmp_path: Path, database: Database):
    journal = StuckJournal(database)
    receiver = receiver_over(tmp_path, journal, database=database, flush_interval=0, queue_batches=1)
    assert receiver.post(event_list(event())) == 200
    assert journal.entered.wait(10)  # the recorder is stuck writing the first batch
    assert receiver.post(event_list(event(), event())) == 200  # queued
    assert receiver.post(event_list(event(), event(), event())) == 200  # dropped
    assert (receiver.counted("accepted"), receiver.counted("dropped")) == (3, 3)
    journal.release.set()
    receiver.recorder.close()
    assert sum(day.requests for days in journal.recorded for day in days.values()) == 3
