"""Prometheus metrics of one daemon, in a registry of its own."""

from __future__ import annotations

from collections import Counter as Tally
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from syncd.core.anomaly import AnomalyKind
from syncd.core.model import CredentialState
from syncd.runtime.engine import RunReport

WATCH_STATES = ("starting", "connected", "resyncing", "reconnecting", "standby", "polling")


class Watched(Protocol):
    name: str
    state: str

    @property
    def last_message_age(self) -> float | None: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.runs = Counter(
            "syncd_runs",
            "Runs by job (poll, reconcile, credentials, sweep, scim, watch), source and result (ok, no-op, failed, "
            "interrupted, lost-lease).",
            ["job", "source", "result"], registry=registry)
        self.actions = Counter("syncd_actions",
                               "Planned actions by kind, reason and result (ok, failed, held, not-begun).",
                               ["kind", "reason", "result"], registry=registry)
        self.run_duration = Histogram("syncd_run_duration_seconds", "Wall time of a job run.", ["job"],
                                      buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600), registry=registry)
        self.job_failures = Counter("syncd_job_failures", "Job runs that failed (then backed off).", ["job"],
                                    registry=registry)
        self.credentials = Gauge("syncd_credentials", "Credentials in the ledger by state.", ["state"],
                                 registry=registry)
        self.last_success = Gauge("syncd_last_successful_sync_timestamp_seconds",
                                  "When a run of this source last succeeded (Unix time).", ["source"],
                                  registry=registry)
        self.source_up = Gauge("syncd_source_up", "1 when the source's last read succeeded, else 0.", ["source"],
                               registry=registry)
        self.quarantined = Gauge("syncd_quarantined_revocations",
                                 "People whose revocation is held (safety thresholds, partial reads) and not yet "
                                 "applied.", ["source"], registry=registry)
        self.scim_requests = Counter("syncd_scim_requests", "SCIM requests by HTTP status.", ["status"],
                                     registry=registry)
        self.watch_state = Gauge("syncd_watch_state", "1 for the state each source's watch is in (starting, "
                                 "connected, resyncing, reconnecting, standby, polling).", ["source", "state"],
                                 registry=registry)
        self.watch_age = Gauge("syncd_watch_last_message_age_seconds",
                               "Seconds since the watch last heard from the directory (-1: never).", ["source"],
                               registry=registry)
        self.leader = Gauge("syncd_leader", "1 while this replica leads (runs the scheduled jobs), else 0; by "
                            "election backend (ledger, kubernetes).", ["backend"], registry=registry)
        self.audit_events = Counter(
            "syncd_audit_events", "Audit events by source (webhook, file) and result: received (in well-formed "
            "bodies, or lines read), accepted (syncd's credentials, queued), ignored (other users and stages), "
            "dropped (queue full), malformed (bodies refused with 400 or 413, counted once each; lines that are no "
            "JSON object or were cut off).", ["source", "result"], registry=registry)
        self.anomalies = Counter(
            "syncd_anomalies", "Anomalies in credentials' use, by kind: use-after-revocation, denied-burst, "
            "new-source-ip, new-user-agent.", ["kind"], registry=registry)
        for kind in AnomalyKind:
            self.anomalies.labels(str(kind))
        self.anomaly_alerts = Counter(
            "syncd_anomaly_alerts", "usage.alert_command runs by result: ok, failed, timeout; dropped: not run, its "
            "queue was full.", ["result"], registry=registry)
        self.reloads = Counter("syncd_reloads", "Configuration reloads by result (ok, rejected).", ["result"],
                               registry=registry)
        self.idle = Gauge("syncd_idle_credentials", "Accesses the last full reconcile of each source found idle "
                          "(no use for usage.idle_after), summed per cluster; with usage.idle_action suspend, that "
                          "run suspended them unless the safety thresholds held it.", ["cluster"], registry=registry)
        self._idle_by_source: dict[str, Tally[str]] = {}

    def record_run(self, job: str, report: RunReport, seconds: float | None) -> None:
        self.runs.labels(job, report.source, report.result).inc()
        if seconds is not None:
            self.run_duration.labels(job).observe(seconds)
        plan = report.plan
        if plan is None:
            return
        failed = {id(action) for action, _ in report.outcome.failed} if report.outcome else set()
        applied = {id(action) for action in report.outcome.applied} if report.outcome else set()
        for action in plan.actions:
            result = "dry-run" if report.dry_run else "failed" if id(action) in failed else \
                "ok" if id(action) in applied else "not-begun"
            self.actions.labels(str(action.kind), str(action.reason), result).inc()
        for held in plan.held:
            self.actions.labels(str(held.action.kind), str(held.action.reason), "held").inc()
        if job == "reconcile" and not report.dry_run:  # a full run judges everyone: targeted runs only a few
            self._count_idle(report.source, Tally(idle.cluster for idle in plan.idle))

    def _count_idle(self, source: str, counts: Tally[str]) -> None:
        clusters = set(counts).union(*self._idle_by_source.values())  # a cluster idle before goes back to 0
        self._idle_by_source[source] = counts
        for cluster in clusters:
            self.idle.labels(cluster).set(sum(tally[cluster] for tally in self._idle_by_source.values()))

    def watch(self, watch: Watched) -> None:
        """Export a watch's state and the age of its last message, read at each scrape."""
        for state in WATCH_STATES:
            self.watch_state.labels(watch.name, state).set_function(lambda state=state: float(watch.state == state))
        self.watch_age.labels(watch.name).set_function(
            lambda: -1.0 if watch.last_message_age is None else watch.last_message_age)

    def set_credentials(self, states: dict[CredentialState, int]) -> None:
        for state in CredentialState:
            self.credentials.labels(state).set(states.get(state, 0))
