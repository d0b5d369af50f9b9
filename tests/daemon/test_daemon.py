"""`syncd run` against the real control plane: systemd notify, HTTP endpoints, jobs, outages, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from syncd.core.model import person_key
from tests.conftest import free_port
from tests.integration.conftest import World
from tests.integration.test_crash import assert_converged, pending_intents, query

pytestmark = pytest.mark.kube

ALICE = {"id": "2001", "username": "alice", "groups": "developers"}
BOB = {"id": "2002", "username": "bob", "groups": "sre"}


def people_file_moved_away(world: World) -> Path:
    moved = world.directory / "people.csv.away"
    os.replace(world.directory / "people.csv", moved)
    return moved


def test_ready_endpoints_leaver_and_clean_stop(world: World, start_daemon):
    world.write_people(ALICE, BOB)
    daemon = start_daemon(jobs={"reconcile": {"every": "3s"}})

    status, body = daemon.get_json("/healthz")
    assert (status, body) == (200, {"status": "alive"})
    daemon.wait_until(lambda: world.can("alice", "create", "deployments", world.ns("team-a")) == "yes",
                      "the first reconcile at start issues alice's access")
    status, ready = daemon.wait_until(lambda: (answer := daemon.get_json("/readyz"))[1]["sources"]["hr"] != "pending"
                                      and answer, "the first run is recorded")
    assert status == 200 and ready["ledger"] == "ok" and ready["sources"] == {"hr": "ok"}

    token = world.token("bob")
    world.write_people(ALICE)  # bob leaves
    daemon.wait_until(lambda: not world.token_authenticates(token), "the leaver's token is rejected", timeout=45)
    (revoked,) = daemon.revocations()
    assert (revoked["username"], revoked["reason"], revoked["result"]) == ("bob", "leaver", "ok")
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"

    assert daemon.metric("syncd_runs_total", job="reconcile", source="hr", result="ok") >= 1
    assert daemon.metric("syncd_actions_total", kind="revoke", reason="leaver", result="ok") == 1
    assert daemon.metric("syncd_actions_total", kind="issue", reason="joiner", result="ok") == 2
    assert daemon.metric("syncd_credentials", state="active") == 1
    assert daemon.metric("syncd_credentials", state="revoked") == 1
    assert daemon.metric("syncd_last_successful_sync_timestamp_seconds", source="hr") > 0
    assert daemon.metric("syncd_run_duration_seconds_count", job="reconcile") >= 2
    assert daemon.metric("syncd_scim_requests_total", status="200") is None  # no SCIM endpoint configured

    status_line = daemon.wait_notification(lambda m: m.startswith("STATUS=last run reconcile:hr"))
    assert "action(s)" in status_line
    daemon.wait_notification(lambda m: m == "WATCHDOG=1", timeout=10)
    actions = [e for e in daemon.log_events() if e.get("event") == "revoke bob on dev (leaver)"]
    assert actions and actions[0]["result"] == "ok" and actions[0]["cluster"] == "dev"
    assert token not in daemon.log_text()

    assert daemon.stop() == 0
    assert any(e.get("event") == "stopped: ledger closed" for e in daemon.log_events())
    assert "STOPPING=1" in daemon.read_notifications()
    verify = world.syncd("ledger", "verify", "--config", str(world.config))
    assert verify.returncode == 0 and "hash chain intact" in verify.stdout


def test_source_outage_marks_it_unhealthy_and_revokes_nothing(world: World, start_daemon):
    world.write_people(ALICE, BOB)
    daemon = start_daemon(jobs={"reconcile": {"every": "2s"}})
    daemon.wait_until(lambda: daemon.get_json("/readyz")[1]["sources"]["hr"] == "ok", "the first run succeeds")
    token = world.token("bob")

    moved = people_file_moved_away(world)
    status, ready = daemon.wait_until(
        lambda: (answer := daemon.get_json("/readyz"))[0] == 503 and answer, "readyz reports the outage")
    assert ready["sources"]["hr"].startswith("unavailable: source hr: cannot read")
    daemon.wait_until(lambda: (daemon.metric("syncd_job_failures_total", job="reconcile") or 0) >= 2,
                      "the failing job backs off and retries")
    assert daemon.metric("syncd_source_up", source="hr") == 0
    assert daemon.revocations() == []
    assert world.token_authenticates(token)
    daemon.assert_alive()
    assert (daemon.get("/healthz"))[0] == 200

    os.replace(moved, world.directory / "people.csv")
    daemon.wait_until(lambda: daemon.get("/readyz")[0] == 200, "readyz recovers with the source")
    assert daemon.metric("syncd_source_up", source="hr") == 1
    assert daemon.revocations() == []
    assert daemon.stop() == 0


def test_the_sweep_job_repairs_drift_between_full_runs_without_reading_the_source(world: World, start_daemon):
    world.write_people(ALICE)
    daemon = start_daemon(jobs={"reconcile": {"every": "1h"}, "sweep": {"every": "1s"}})
    daemon.wait_until(lambda: world.can("alice", "create", "deployments", world.ns("team-a")) == "yes",
                      "the first full run grants access")
    people_file_moved_away(world)
    (binding,) = world.ours("rolebindings", person_key(ALICE["id"]))
    world.control_plane.kubectl("delete", "rolebinding", "-n", binding["metadata"]["namespace"],
                                binding["metadata"]["name"])
    daemon.wait_until(lambda: daemon.metric("syncd_actions_total", kind="repair", reason="drift", result="ok"),
                      "the sweep puts it back", timeout=30)
    assert world.ours("rolebindings", person_key(ALICE["id"]))
    assert daemon.metric("syncd_actions_total", kind="repair", reason="drift", result="ok") == 1
    assert daemon.metric("syncd_runs_total", job="sweep", source="hr", result="ok") == 1
    assert daemon.get_json("/readyz")[1]["sources"]["hr"] == "ok", "a sweep says nothing of the source's health"
    assert daemon.stop() == 0


def test_sighup_rejects_a_bad_config_and_applies_a_good_one(world: World, start_daemon):
    world.write_people(ALICE)
    daemon = start_daemon(jobs={"reconcile": {"every": "2s"}})
    daemon.wait_until(lambda: world.can("alice", "create", "deployments", world.ns("team-a")) == "yes",
                      "alice gets access")

    good = world.config.read_text()
    world.config.write_text(good + "surprise: true\n")
    daemon.send(signal.SIGHUP)
    rejected = daemon.wait_until(
        lambda: [e for e in daemon.log_events() if e.get("event", "").startswith("reject the new configuration")],
        "the bad config is rejected")
    assert "surprise: unknown key" in rejected[0]["error"]
    assert daemon.metric("syncd_reloads_total", result="rejected") == 1
    daemon.assert_alive()
    assert daemon.get("/readyz")[0] == 200

    world.config.write_text(good.replace(f"port: {daemon.port}", f"port: {daemon.port + 1}"))
    daemon.send(signal.SIGHUP)
    daemon.wait_until(lambda: daemon.metric("syncd_reloads_total", result="rejected") == 2, "a move is rejected")
    assert "restart syncd to apply it" in [e for e in daemon.log_events()
                                           if e.get("event", "").startswith("reject the new")][-1]["error"]
    assert daemon.get("/healthz")[0] == 200

    world.config.write_text(good)
    world.set_policy(extra_rules=({"name": "developers-read-b", "match": {"groups": ["developers"]},
                                   "grant": [{"cluster": "dev", "namespaces": [world.ns("team-b")],
                                              "role": "view"}]},))
    daemon.send(signal.SIGHUP)
    daemon.wait_until(lambda: daemon.metric("syncd_reloads_total", result="ok") == 1, "the good config is applied")
    daemon.wait_until(lambda: world.can("alice", "list", "pods", world.ns("team-b")) == "yes",
                      "the reloaded policy takes effect")
    assert world.can("alice", "create", "deployments", world.ns("team-a")) == "yes"
    assert daemon.stop() == 0


def test_reconcile_beside_the_daemon_issues_nobody_twice(world: World, start_daemon):
    people = [{"id": f"30{n:02d}", "username": f"user{n}", "groups": "developers"} for n in range(6)]
    world.write_people(*people)
    world.configure(tokens={"confirm_revocation_timeout": "0s"})
    cli_runs: list[subprocess.CompletedProcess] = []

    def reconcile_on_demand() -> None:
        for _ in range(3):
            cli_runs.append(subprocess.run([sys.executable, "-m", "syncd", "reconcile", "--config", str(world.config)],
                                           capture_output=True, text=True, env=world.env, timeout=300))

    on_demand = threading.Thread(target=reconcile_on_demand)
    on_demand.start()  # races the daemon's first reconcile, which runs at start
    daemon = start_daemon(jobs={"reconcile": {"every": "1s"}, "credentials": {"every": "1s"}})
    on_demand.join(timeout=300)
    assert [run.returncode for run in cli_runs] == [0, 0, 0], [run.stderr[-2000:] for run in cli_runs]
    daemon.wait_until(lambda: (daemon.metric("syncd_runs_total", job="reconcile", source="hr", result="no-op")
                               or 0) >= 1, "the daemon runs while the CLI does")

    issues = [e for e in daemon.ledger_events() if e["action"] == "issue"]
    assert sorted(e["username"] for e in issues) == sorted(p["username"] for p in people)
    for person in people:
        assert len(world.ours("secrets", person_key(person["id"]))) == 1
    assert daemon.stop() == 0


def test_mass_revocation_is_quarantined_not_applied(world: World, start_daemon):
    world.write_people(ALICE, BOB)
    world.configure(safety={"max_revocations": 0})
    daemon = start_daemon(jobs={"reconcile": {"every": "1s"}})
    daemon.wait_until(lambda: world.kubeconfig("alice").exists() and world.kubeconfig("bob").exists(),
                      "both get access")
    token = world.token("bob")

    world.write_people(ALICE)
    daemon.wait_until(lambda: [e for e in daemon.ledger_events() if e["result"] == "held"],
                      "the held revocation is recorded")
    runs = daemon.metric("syncd_runs_total", job="reconcile", source="hr", result="no-op")
    daemon.wait_until(lambda: daemon.metric("syncd_runs_total", job="reconcile", source="hr", result="no-op")
                      >= runs + 3, "a few more runs")
    (event,) = [e for e in daemon.ledger_events() if e["result"] == "held"]  # recorded once, not per run
    assert (event["action"], event["username"], event["reason"]) == ("revoke", "bob", "leaver")
    assert "safety.max_revocations" in event["error"]
    assert daemon.metric("syncd_quarantined_revocations", source="hr") == 1
    assert daemon.revocations() == [] and world.token_authenticates(token)
    assert daemon.stop() == 0


def test_sigterm_abandons_a_job_stuck_past_the_stop_timeout(world: World, start_daemon):
    world.write_people(ALICE)
    world.settings["clusters"][0]["timeout"] = "60s"
    daemon = start_daemon(jobs={"reconcile": {"every": "1s"}}, stop_timeout="2s")
    daemon.wait_until(lambda: world.can("alice", "create", "deployments", world.ns("team-a")) == "yes",
                      "alice gets access")
    world.write_people(ALICE, BOB)
    with world.control_plane.frozen():
        time.sleep(3)  # the next reconcile starts and hangs on the API server
        started = time.monotonic()
        daemon.send(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
    assert [e for e in daemon.log_events() if e.get("event", "").startswith("abandon jobs still running")]
    # What the abandoned job did not finish, the next run does; the ledger is intact.
    world.reconcile()
    assert world.can("bob", "list", "pods", world.ns("team-b")) == "yes"
    assert world.syncd("ledger", "verify", "--config", str(world.config)).returncode == 0


def test_sigterm_mid_apply_finishes_the_actions_in_flight_and_begins_no_other(world: World, start_daemon):
    ledger, concurrency = world.directory / "ledger.db", 16
    workers = 2 * concurrency  # people applied at once; `concurrency` requests in flight
    people = [{"id": f"{5000 + i}", "username": f"term{i:03d}", "groups": "developers"} for i in range(300)]
    world.configure(clusters=[cluster | {"concurrency": concurrency, "timeout": "180s"}
                              for cluster in world.settings["clusters"]])
    world.write_people(*people)
    daemon = start_daemon(stop_timeout="180s")  # its reconcile at start applies the 300 joiners

    def intents(state: str) -> set[int]:
        return {intent_id for (intent_id,) in query(ledger, "SELECT id FROM intent WHERE state = ?", state)}

    daemon.wait_until(lambda: len(intents("done")) >= workers, "the run is applying", timeout=180)
    with world.control_plane.frozen():
        # Every worker ends up inside an action, waiting on the API server or for a request slot; intents are begun
        # a block of lanes ahead, so some pending ones belong to actions not begun yet.
        daemon.wait_until(lambda: len(intents("pending")) >= workers, f"{workers} actions begun", timeout=120)
        done_before = intents("done")
        daemon.send(signal.SIGTERM)
        daemon.wait_until(lambda: [e for e in daemon.log_events()
                                   if e.get("event", "").startswith("stop applying: finish")], "apply told to stop")
        begun = intents("pending")  # no lane starts once apply is told to stop
    assert daemon.process.wait(timeout=180) == 0

    # The actions in flight finished, no other began (their intents closed `not-begun`): the others wait for the
    # next run, which finds nothing to recover.
    assert not pending_intents(ledger) and not intents("failed")
    finished = intents("done") - done_before
    assert len(finished) >= concurrency, f"{len(finished)} actions finished in flight"
    assert begun - finished <= intents("not-begun")
    done = intents("done")
    [(summary,)] = query(ledger, "SELECT summary FROM run WHERE result = 'interrupted'")
    assert json.loads(summary)["not_begun"] == len(people) - len(done)
    run = world.reconcile()
    assert len(run["actions"]) == len(people) - len(done)
    assert not query(ledger, "SELECT id FROM event WHERE action = 'recover'")
    assert_converged(world, ledger, people, [people[0]["username"]])


def test_the_audit_webhook_listens_beside_the_jobs_counts_events_and_flushes_on_sigterm(world: World, start_daemon):
    world.write_people({"id": "u-1", "username": "alice", "groups": "developers"})
    token_file = world.directory / "audit-dev.token"
    token_file.write_text("audit-sender-token-dev")
    port = free_port()
    world.configure(audit={"port": port, "flush_interval": "1h", "senders": [{"cluster": "dev",
                                                                             "token_file": str(token_file)}]})
    daemon = start_daemon()
    # READY=1 comes before the first reconcile ends; usage is reported only for people the ledger knows.
    daemon.wait_until(lambda: daemon.get_json("/readyz")[1]["sources"]["hr"] == "ok", "the first run records alice")
    ours = {"stage": "ResponseComplete", "verb": "get", "responseStatus": {"code": 403},
            "user": {"username": f"system:serviceaccount:{world.system_namespace}:syncd-u-1"},
            "stageTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    foreign = ours | {"user": {"username": "admin"}}
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [ours, foreign]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/audit", data=body,
                                     headers={"Authorization": "Bearer audit-sender-token-dev"})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (http on loopback)
        assert answer.status == 200
    assert daemon.metric("syncd_audit_events_total", source="webhook", result="accepted") == 1
    assert daemon.metric("syncd_audit_events_total", source="webhook", result="ignored") == 1
    assert daemon.stop() == 0
    done = world.syncd("usage", "alice", "--config", str(world.config), "--output", "json")
    [day] = json.loads(done.stdout)[0]["days"]
    assert (day["requests"], day["denied"]) == (1, 1)
