"""Use, end to end on a real control plane of its own that audits to a syncd the test starts (its webhook) and to a
file syncd follows: a person's requests with their delivered kubeconfig and real kubectl show up in `syncd usage`
within seconds, denied ones as denied."""

from __future__ import annotations

import base64
import json
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from syncd.core.anomaly import FIRST_USE
from syncd.core.model import fingerprint, token_claims
from tests.conftest import ControlPlane, free_port, self_signed_certificate, started_control_plane, write_yaml
from tests.daemon.conftest import RunningDaemon, start_daemon  # noqa: F401  (the fixture, for these tests too)
from tests.integration.conftest import World

AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
                # every test's syncd has a namespace of its own: audit every ServiceAccount, syncd keeps its own
                "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}]}


class AuditReceiver:
    """Where this module's API server sends its audit events: a port, a TLS certificate and a sender token, fixed
    before the API server starts; each test runs its own `syncd audit serve` there."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.cert, self.key = self_signed_certificate(directory, "audit")
        self.token = secrets.token_hex(24)
        self.token_file = directory / "audit-sender.token"
        self.token_file.write_text(self.token)
        self.webhook_config = directory / "audit-webhook.kubeconfig"
        write_yaml(self.webhook_config, {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "syncd", "cluster": {"server": f"https://127.0.0.1:{self.port}/audit",
                                                       "certificate-authority": str(self.cert)}}],
            "users": [{"name": "kube-apiserver", "user": {"token": self.token}}],
            "contexts": [{"name": "default", "context": {"cluster": "syncd", "user": "kube-apiserver"}}],
            "current-context": "default"})
        self.policy = directory / "audit-policy.yaml"
        write_yaml(self.policy, AUDIT_POLICY)
        self.log = directory / "log" / "audit.log"  # the same events, written by the log backend too

    def post(self, body: bytes, token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"https://127.0.0.1:{self.port}/audit", content=body, headers=headers,
                          verify=ssl.create_default_context(cafile=str(self.cert)), timeout=10).status_code


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> AuditReceiver:
    return AuditReceiver(tmp_path_factory.mktemp("audit"))


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory, receiver: AuditReceiver) -> Iterator[ControlPlane]:
    """A control plane of this module's own (the session's shared one does not audit)."""
    with started_control_plane(tmp_path_factory.mktemp("kube-audit"), f"--audit-policy-file={receiver.policy}",
                               f"--audit-webhook-config-file={receiver.webhook_config}",
                               "--audit-webhook-batch-max-wait=1s", f"--audit-log-path={receiver.log}",
                               "--audit-log-format=json") as started:
        yield started


def configure_audit(world: World, receiver: AuditReceiver, flush_interval: str) -> None:
    world.configure(audit={"port": receiver.port, "tls_cert": str(receiver.cert), "tls_key": str(receiver.key),
                           "flush_interval": flush_interval, "senders": [{"cluster": "dev",
                                                                          "token_file": str(receiver.token_file)}]})


def start_audit_serve(world: World, receiver: AuditReceiver, flush_interval: str) -> subprocess.Popen:
    configure_audit(world, receiver, flush_interval)
    process = subprocess.Popen([sys.executable, "-m", "syncd", "audit", "serve", "--config", str(world.config)],
                               env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"syncd audit serve exited:\n{process.communicate()[1]}"
        try:
            socket.create_connection(("127.0.0.1", receiver.port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "syncd audit serve does not listen after 60 s"
            time.sleep(0.1)
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr


@pytest.fixture
def audit_serve(world: World, receiver: AuditReceiver) -> Iterator[subprocess.Popen]:
    process = start_audit_serve(world, receiver, "1s")
    yield process
    stop(process)


def usage(world: World, who: str) -> list[dict]:
    done = world.syncd("usage", who, "--config", str(world.config), "--output", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]["days"]


def wait_for_usage(world: World, who: str, enough, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        days = usage(world, who)
        if enough(days):
            return days
        assert time.monotonic() < deadline, f"usage after {timeout} s: {days}"
        time.sleep(0.5)


def test_a_persons_requests_and_denied_requests_show_in_syncd_usage(world: World, audit_serve: subprocess.Popen):
    world.write_people({"id": "u-1", "username": "alice", "groups": "developers"})
    world.reconcile()
    kubeconfig = world.kubeconfig("alice")
    for _ in range(3):
        world.control_plane.kubectl("get", "pods", "-n", world.ns("team-a"), kubeconfig=kubeconfig)
    denied = world.control_plane.kubectl("get", "pods", "-n", world.ns("team-b"), kubeconfig=kubeconfig, check=False)
    assert "forbidden" in denied.stderr.lower()

    days = wait_for_usage(world, "alice", lambda days: days and days[0]["namespaces"].get(world.ns("team-b")))
    [day] = days
    assert day["cluster"] == "dev" and day["requests"] >= 4
    assert day["denied"] == 1
    assert day["namespaces"][world.ns("team-a")] == 3 and day["verbs"]["list"] == 4
    assert day["resources"]["pods"] == 4 and day["source_ips"] == ["127.0.0.1"]
    assert any(agent.startswith("kubectl/") for agent in day["user_agents"])

    listed = world.syncd("token", "list", "--config", str(world.config), "--output", "json")
    [credential] = json.loads(listed.stdout)
    assert credential["last_used"] == day["last_use"]


def test_a_sender_without_the_right_token_is_rejected_and_changes_nothing(world: World, receiver: AuditReceiver,
                                                                           audit_serve: subprocess.Popen):
    world.write_people({"id": "u-2", "username": "bob", "groups": "developers"})
    world.reconcile()
    forged = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{
        "stage": "ResponseComplete", "verb": "delete", "user": {"username": f"system:serviceaccount:"
                                                                             f"{world.system_namespace}:syncd-u-2"},
        "responseStatus": {"code": 200}, "stageTimestamp": "2026-01-01T00:00:00Z"}]}).encode()
    assert receiver.post(forged, None) == 401
    assert receiver.post(forged, "not-" + receiver.token) == 403
    assert receiver.post(b"{not json", receiver.token) == 400
    world.control_plane.kubectl("get", "pods", "-n", world.ns("team-a"), kubeconfig=world.kubeconfig("bob"))
    days = wait_for_usage(world, "bob", lambda days: days)
    assert all(day["day"] != "2026-01-01" and "delete" not in day["verbs"] for day in days)


def test_use_accepted_before_sigterm_is_written_to_the_ledger(world: World, receiver: AuditReceiver):
    world.write_people({"id": "u-3", "username": "carol", "groups": "developers"})
    world.reconcile()
    process = start_audit_serve(world, receiver, "1h")  # no flush but the one at stop
    event = {"stage": "ResponseComplete", "verb": "watch", "responseStatus": {"code": 200},
             "user": {"username": f"system:serviceaccount:{world.system_namespace}:syncd-u-3"},
             "stageTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [event, event]}).encode()
    assert receiver.post(body, receiver.token) == 200
    assert usage(world, "carol") == []
    stop(process)
    [day] = usage(world, "carol")
    assert day["verbs"]["watch"] == 2


def anomalies(world: World, kind: str) -> list[dict]:
    done = world.syncd("ledger", "log", "--config", str(world.config), "--output", "json")
    assert done.returncode == 0, done.stderr
    return [event for event in json.loads(done.stdout) if event["action"] == "anomaly" and event["reason"] == kind]


def wait_for_anomaly(world: World, kind: str, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not (found := anomalies(world, kind)):
        assert time.monotonic() < deadline, f"no {kind} anomaly after {timeout} s"
        time.sleep(0.5)
    return found


def test_a_denied_burst_and_a_new_user_agent_are_anomalies_recorded_counted_and_alerted(
        world: World, receiver: AuditReceiver, start_daemon):  # noqa: F811
    world.write_people({"id": "u-4", "username": "dave", "groups": "developers"})
    world.reconcile()
    alerts = world.directory / "alerts.jsonl"
    configure_audit(world, receiver, "1s")
    world.configure(usage={"denied_burst": 5, "alert_command": [
        sys.executable, "-c", f"import sys; open({str(alerts)!r}, 'a').write(sys.stdin.read() + '\\n')"]})
    daemon: RunningDaemon = start_daemon()
    kubeconfig = world.kubeconfig("dave")
    world.control_plane.kubectl("get", "pods", "-n", world.ns("team-a"), kubeconfig=kubeconfig)
    [day] = wait_for_usage(world, "dave", lambda days: days)  # the credential's first use: what it is known by
    first_use = datetime.fromisoformat(day["first_use"])
    for _ in range(8):
        denied = world.control_plane.kubectl("get", "pods", "-n", world.ns("team-b"), kubeconfig=kubeconfig,
                                             check=False)
        assert "forbidden" in denied.stderr.lower()
    while datetime.now(UTC) <= first_use + FIRST_USE:  # a new user agent, no longer part of the first use
        time.sleep(0.5)
    cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    trust = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    probe = httpx.get(f"{cluster['server']}/api/v1/namespaces/{world.ns('team-a')}/pods", verify=trust, timeout=30,
                      headers={"Authorization": f"Bearer {world.token('dave')}", "User-Agent": "probe/1.0"})
    assert probe.status_code == 200

    [burst] = wait_for_anomaly(world, "denied-burst")
    [agent] = wait_for_anomaly(world, "new-user-agent")
    assert (burst["person_id"], burst["cluster"], burst["result"]) == ("u-4", "dev", "flagged")
    assert agent["error"] == "user agent probe/1.0"
    assert anomalies(world, "new-source-ip") == []
    assert daemon.metric("syncd_anomalies_total", kind="denied-burst") == 1
    assert daemon.metric("syncd_anomalies_total", kind="new-user-agent") == 1
    sent = daemon.wait_until(lambda: alerts.exists() and len(alerts.read_text().splitlines()) == 2, "two alerts")
    assert sent
    kinds = sorted(json.loads(line)["kind"] for line in alerts.read_text().splitlines())
    assert kinds == ["denied-burst", "new-user-agent"]
    assert daemon.metric("syncd_anomaly_alerts_total", result="ok") == 2
    assert [e for e in daemon.log_events() if e.get("event") == "flag a burst of denied requests"]
    assert daemon.stop() == 0


def test_a_revoked_tokens_use_the_api_server_accepted_is_an_anomaly(world: World, receiver: AuditReceiver):
    world.write_people({"id": "u-5", "username": "erin", "groups": "developers"})
    world.reconcile()
    token, kept = world.token("erin"), world.keep_copy("erin")
    process = start_audit_serve(world, receiver, "1s")
    world.control_plane.kubectl("get", "pods", "-n", world.ns("team-a"), kubeconfig=kept)
    wait_for_usage(world, "erin", lambda days: days)
    revoked = world.syncd("token", "revoke", "--config", str(world.config), "erin", "--reason", "manual")
    assert revoked.returncode == 0, revoked.stderr
    # Right after the revocation the API server answers 401 (not use: no user) or, from its token cache, 403 (the
    # bindings went first) within the grace: neither is an anomaly. Whether it accepted the token later is not up to
    # the test, so the accepted use is an event as the API server would send it, over real HTTP.
    world.control_plane.kubectl("get", "pods", "-n", world.ns("team-a"), kubeconfig=kept, check=False)
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    accepted = {"stage": "ResponseComplete", "verb": "list", "responseStatus": {"code": 200},
                "user": {"username": f"system:serviceaccount:{world.system_namespace}:syncd-u-5"},
                "sourceIPs": ["127.0.0.1"], "userAgent": "kubectl/v1.20.0", "stageTimestamp": later}
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [accepted, accepted]}).encode()
    assert receiver.post(body, receiver.token) == 200
    [flagged] = wait_for_anomaly(world, "use-after-revocation")
    assert (flagged["person_id"], flagged["fingerprint"]) == ("u-5", fingerprint(token))
    stop(process)
    assert len(anomalies(world, "use-after-revocation")) == 1


def follow_audit_log(world: World, receiver: AuditReceiver) -> subprocess.Popen:
    """`syncd audit serve` following the API server's audit log file alone (no webhook listener)."""
    world.configure(audit={"flush_interval": "1s", "poll_interval": "200ms",
                           "files": [{"cluster": "dev", "path": str(receiver.log)}]})
    return subprocess.Popen([sys.executable, "-m", "syncd", "audit", "serve", "--config", str(world.config)],
                            env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_audit_log_file_is_followed_and_a_restart_counts_nothing_twice(world: World, receiver: AuditReceiver):
    world.write_people({"id": "u-4", "username": "dave", "groups": "developers"})
    world.reconcile()
    kubeconfig = world.kubeconfig("dave")
    assert "jti" not in token_claims((kubeconfig.parent / "dev.token").read_text())  # v1.20: use is per person
    process = follow_audit_log(world, receiver)
    for _ in range(2):
        world.control_plane.kubectl("get", "pods", "-n", world.ns("team-a"), kubeconfig=kubeconfig)
    wait_for_usage(world, "dave", lambda days: days and days[0]["resources"].get("pods") == 2)
    stop(process)
    [day] = usage(world, "dave")
    assert day["resources"] == {"pods": 2}  # and kubectl's discovery requests, naming no resource

    world.control_plane.kubectl("get", "configmaps", "-n", world.ns("team-a"), kubeconfig=kubeconfig)
    process = follow_audit_log(world, receiver)  # a restart reads on from where the ledger says
    try:
        [day] = wait_for_usage(world, "dave", lambda days: days and days[0]["resources"].get("configmaps"))
    finally:
        stop(process)
    assert day["resources"] == {"pods": 2, "configmaps": 1}  # the pods were not read again
