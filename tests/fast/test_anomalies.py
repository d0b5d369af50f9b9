"""Anomalies through the audit webhook receiver in this process (the real ASGI app, the real recorder and the real
ledger on SQLite): each is one ledger event, a metric and an alert_command run, whatever the command does."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.adapters.ledger import Database, Journal, ReadModel
from syncd.app.daemon.audit import AuditApp, Sender, usage_recorder
from syncd.app.daemon.metrics import Metrics
from syncd.config import AuditSenderSettings, AuditSettings, UsageSettings
from syncd.core.model import Identity
from syncd.core.usage import DayUsage
from syncd.ports import Event, NewCredential
from syncd.runtime.usage import UsageLedger, UsageRecorder
from tests.fast.audit import event_list, post_audit
from tests.fast.conftest import make_settings

TOKEN = "dev-sender-token"
ALICE = Identity("alice", "alice")


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(at: datetime | None = None, *, code: int = 200, ip: str = "10.0.0.7", agent: str = "kubectl/v1.20") -> dict:
    moment = stamp(at or datetime.now(UTC))
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete",
            "verb": "list", "user": {"username": "system:serviceaccount:syncd:syncd-alice"}, "sourceIPs": [ip],
            "userAgent": agent, "objectRef": {"resource": "pods", "namespace": "team-a"},
            "responseStatus": {"code": code}, "requestReceivedTimestamp": moment, "stageTimestamp": moment}


@dataclass
class Receiver:
    app: AuditApp
    recorder: UsageRecorder
    metrics: Metrics
    read_model: ReadModel

    def post(self, *events: dict) -> None:
        assert post_audit(self.app, event_list(*events), TOKEN) == 200

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def anomalies(self) -> list[tuple[str, str, str | None]]:
        """(kind, detail, fingerprint) of each anomaly event in the ledger."""
        return [(row.reason, row.error or "", row.fingerprint) for row in self.read_model.events()
                if row.action == "anomaly"]

    def wait_for(self, check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check()):
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
            time.sleep(0.05)
        return found


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with Database(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


@pytest.fixture
def start(tmp_path: Path, database: Database) -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start_receiver(**usage: Any) -> Receiver:
        settings = make_settings(tmp_path, audit=AuditSettings(
            senders=[AuditSenderSettings(cluster="dev", token_file=tmp_path / "dev")], flush_interval=3600),
            usage=UsageSettings(**usage))
        ledger, metrics = UsageLedger(Journal(database), ReadModel(database)), Metrics()
        recorder = usage_recorder(settings, lambda: ledger, metrics)
        app = AuditApp(settings.audit, [Sender("dev", TOKEN.encode())],  # type: ignore[arg-type]
                       {"dev": "system:serviceaccount:syncd:syncd-"}, recorder, metrics)
        started.append(Receiver(app, recorder, metrics, ReadModel(database)))
        return started[-1]

    yield start_receiver
    for receiver in started:
        receiver.recorder.close()


def issue_and_revoke(database: Database) -> str:
    """Alice's only credential on dev, issued an hour ago and revoked now; its fingerprint."""
    journal, now = Journal(database), datetime.now(UTC)
    token = NewCredential("syncd-alice-x", "sha256:aa", now - timedelta(hours=1), now + timedelta(hours=1))
    journal.record_token("hr", ALICE, "dev", frozenset(), token, kubeconfig="", grace=None, reason="join")
    journal.record_revocation(None, Event("alice", "alice", "revoke", "manual", cluster="dev"), remove_access=True)
    return "sha256:aa"


def test_use_after_revocation_is_one_ledger_event_naming_the_token_even_across_a_restart(start, database: Database):
    fingerprint = issue_and_revoke(database)
    later = datetime.now(UTC) + timedelta(seconds=30)
    receiver = start()
    receiver.post(event(later), event(later + timedelta(seconds=1)))
    receiver.recorder.close()
    again = start()
    again.post(event(later + timedelta(seconds=2)))
    again.recorder.close()
    [(kind, detail, named)] = receiver.anomalies()
    assert (kind, named) == ("use-after-revocation", fingerprint) and "revoked at" in detail
    assert receiver.sample("syncd_anomalies_total", kind="use-after-revocation") == 1
    [row] = [row for row in receiver.read_model.events() if row.action == "anomaly"]
    assert (row.person_id, row.username, row.cluster, row.result) == ("alice", "alice", "dev", "flagged")
    assert receiver.read_model.verify() is None


def test_use_within_the_api_servers_token_cache_after_a_revocation_is_no_anomaly(start, database: Database):
    issue_and_revoke(database)
    receiver = start()
    receiver.post(event(datetime.now(UTC)))
    receiver.recorder.close()
    assert receiver.anomalies() == []


def test_a_denied_burst_is_one_anomaly_and_counted(start):
    receiver = start(denied_burst=5)
    now = datetime.now(UTC)
    receiver.post(*[event(now + timedelta(milliseconds=i), code=403) for i in range(12)])
    receiver.recorder.close()
    assert receiver.anomalies() == [("denied-burst", "6 denied requests within 60s", None)]
    assert receiver.sample("syncd_anomalies_total", kind="denied-burst") == 1
    assert receiver.sample("syncd_anomalies_total", kind="new-source-ip") == 0


def test_a_new_source_ip_and_user_agent_are_flagged_against_what_the_ledger_recorded_before(start):
    first = start()
    first.post(event(ip="10.0.0.7", agent="kubectl/v1.20"))
    first.recorder.close()
    second = start()  # knows only what the ledger holds
    second.post(event(ip="10.0.0.7", agent="kubectl/v1.20"), event(ip="192.0.2.1", agent="curl/8.5"))
    second.recorder.close()
    assert sorted(kind for kind, _, _ in second.anomalies()) == ["new-source-ip", "new-user-agent"]


def test_alert_command_receives_each_anomaly_as_json_on_stdin(start, tmp_path: Path):
    received = tmp_path / "alerts"
    script = f"import sys; open({str(received)!r}, 'a').write(sys.stdin.read() + '\\n')"
    receiver = start(denied_burst=1, alert_command=[sys.executable, "-c", script])
    receiver.post(event(code=403), event(code=403))
    receiver.recorder.close()
    [alert] = [json.loads(line) for line in received.read_text().splitlines()]
    assert alert["kind"] == "denied-burst" and (alert["person_id"], alert["cluster"]) == ("alice", "dev")
    assert receiver.sample("syncd_anomaly_alerts_total", result="ok") == 1


def test_a_hanging_alert_command_is_killed_after_its_timeout_and_never_holds_up_the_flusher(start):
    receiver = start(denied_burst=1, alert_timeout="1s", alert_command=[sys.executable, "-c",
                                                                        "import time; time.sleep(600)"])
    receiver.post(event(code=403), event(code=403))
    receiver.wait_for(receiver.anomalies, "the anomaly recorded while its alert runs")
    receiver.post(event())  # the recorder still takes use
    receiver.recorder.close()
    assert receiver.sample("syncd_anomaly_alerts_total", result="timeout") == 1
    [(_, day)] = receiver.read_model.usage("alice")
    assert day.requests == 3


def test_a_failing_or_missing_alert_command_is_counted_and_harms_nothing(start, tmp_path: Path):
    failing = start(denied_burst=1, alert_command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    missing = start(denied_burst=1, alert_command=[str(tmp_path / "no-such-command")])
    for receiver in (failing, missing):
        receiver.post(event(code=403), event(code=403))
        receiver.recorder.close()
        assert receiver.sample("syncd_anomaly_alerts_total", result="failed") == 1


def test_alerts_beyond_the_queue_are_dropped_and_counted(start, tmp_path: Path):
    release = tmp_path / "release"
    script = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)"
    receiver = start(denied_burst=1, alert_queue=1, alert_timeout="60s", alert_command=[sys.executable, "-c", script])
    now = datetime.now(UTC)
    for burst in range(4):  # four bursts, two minutes apart
        at = now + timedelta(minutes=2 * burst)
        receiver.post(event(at, code=403), event(at + timedelta(milliseconds=1), code=403))
    receiver.wait_for(lambda: len(receiver.anomalies()) == 4, "four anomalies recorded")
    release.touch()
    receiver.recorder.close()
    ok, dropped = (receiver.sample("syncd_anomaly_alerts_total", result=result) for result in ("ok", "dropped"))
    assert ok + dropped == 4 and dropped >= 2


def test_use_past_its_retention_is_deleted(start, database: Database):
    old, recent = date.today() - timedelta(days=40), date.today() - timedelta(days=20)
    at = datetime.now(UTC)
    Journal(database).record_usage({("alice", "dev", day, ""): DayUsage(first=at, last=at, requests=1)
                                    for day in (old, recent)})
    receiver = start(retention="30d")
    receiver.recorder.close()
    assert [key[2] for key, _ in receiver.read_model.usage("alice")] == [recent]
