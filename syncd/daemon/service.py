"""The daemon's life: start (ledger, endpoint, jobs, READY=1), run jobs, reload on SIGHUP, stop on SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
import uvicorn
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from syncd.config import Settings, load_settings
from syncd.daemon.http import ASGIApp, HttpApp
from syncd.daemon.jobs import Backoff, JobSpec, job_specs, run_job
from syncd.daemon.metrics import Metrics
from syncd.daemon.notify import Notifier
from syncd.engine import Engine, RunReport
from syncd.errors import SyncdError, TemporaryError
from syncd.ledger import Event

log = structlog.get_logger("syncd.daemon")

TICK = 5.0  # longest the main loop sleeps between watchdog pings and signal checks
LISTEN_TIMEOUT = 15.0


@dataclass(frozen=True)
class MountedScim:
    app: ASGIApp
    close: Callable[[], None]


def mount_scim(engine: Engine, settings: Settings, metrics: Metrics) -> MountedScim | None:
    """The SCIM endpoint, served under /scim on the daemon's own listener; None when not configured.

    MOUNT POINT, to wire up once `syncd.scim` (issue 4) is on main:

        from syncd.daemon.http import counting_statuses
        from syncd.scim import create_app

        if settings.scim is None:
            return None
        scim = create_app(engine, settings)
        return MountedScim(counting_statuses(scim, metrics), scim.reconciler.close)
    """
    return None


class Daemon:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.notifier = Notifier()
        self.metrics = Metrics()
        self.settings = load_settings(config)
        self.engine = Engine(self.settings)
        self.specs = job_specs(self.settings, self.engine)
        self.scim = mount_scim(self.engine, self.settings, self.metrics)
        self.health: dict[str, str] = {}  # source -> ok | partial: ... | unavailable: ...
        self.quarantined: dict[str, frozenset[tuple[str, str]]] = {}  # job -> (person, cluster) last recorded
        self.backoff = Backoff(self.settings.daemon.backoff)
        self.last_status = "waiting for the first run"
        # Jobs pass a gate: a reload or a stop closes it and waits until no job runs.
        self._gate = threading.Condition()
        self._running = 0
        self._gate_closed = False
        self._stopping = False
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        listen = self.settings.daemon
        self.server = uvicorn.Server(uvicorn.Config(
            HttpApp(self, self.metrics), host=listen.listen, port=listen.port, log_level="warning",
            access_log=False, lifespan="off", timeout_graceful_shutdown=5))
        self._server_thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    # What the HTTP endpoint asks

    @property
    def scim_app(self) -> ASGIApp | None:
        return self.scim.app if self.scim else None

    def readiness(self) -> tuple[bool, dict]:
        try:
            self.engine.ledger.ping()
            ledger = "ok"
        except SyncdError as error:
            ledger = f"unreachable: {error}"
        sources = {name: self.health.get(name, "pending") for name in self.engine.sources}
        ready = ledger == "ok" and not any(state.startswith("unavailable") for state in sources.values())
        return ready, {"ledger": ledger, "sources": sources}

    # Life cycle

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda number, _frame: self._signals.put(number))
        self._listen()
        self._schedule()
        self.scheduler.start()
        self.metrics.set_credentials(self.engine.ledger.credential_states())
        where = f"{self.settings.daemon.listen}:{self.settings.daemon.port}"
        log.info("start the daemon", config=str(self.config), listen=where, jobs=[s.id for s in self.specs])
        self.notifier.send("READY=1", f"STATUS=listening on {where}; {self.last_status}")
        watchdog = self.notifier.watchdog_interval
        while True:
            try:
                signum: int | None = self._signals.get(timeout=min(watchdog or TICK, TICK))
            except queue.Empty:
                signum = None
            if signum == signal.SIGHUP:
                self.reload()
            elif signum is not None:
                return self.stop(signum)
            self._ping_watchdog()

    def _listen(self) -> None:
        self._server_thread.start()
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not self.server.started:
            if not self._server_thread.is_alive() or time.monotonic() > deadline:
                self.engine.close()
                where = f"{self.settings.daemon.listen}:{self.settings.daemon.port}"
                raise TemporaryError(f"cannot listen on {where}", hint="is another process using the port?")
            time.sleep(0.05)

    def _schedule(self) -> None:
        now = datetime.now(UTC)
        for spec in self.specs:
            # A full reconcile runs at start; the others wait for their first turn.
            first = {"next_run_time": now} if spec.kind == "reconcile" else {}
            self.scheduler.add_job(self._job, spec.trigger, args=[spec], id=spec.id, name=spec.id, **first)

    def _healthy(self) -> bool:
        return self._server_thread.is_alive() and self.server.started and self.scheduler.running

    def _ping_watchdog(self) -> None:
        if self.notifier.watchdog_interval and self._healthy():
            self.notifier.send("WATCHDOG=1")

    def _wait_idle(self, timeout: float | None) -> bool:
        """Close the gate and wait until no job runs; True when none does (within `timeout` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._gate:
            self._gate_closed = True
            while self._running:
                left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._gate.wait(left)
                self._ping_watchdog()
        return True

    def _open_gate(self) -> None:
        with self._gate:
            self._gate_closed = False
            self._gate.notify_all()

    def reload(self) -> None:
        log.info("reload the configuration", config=str(self.config))
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            settings = load_settings(self.config)
            engine = Engine(settings)
            try:
                specs = job_specs(settings, engine)
                scim = mount_scim(engine, settings, self.metrics)
            except BaseException:
                engine.close()
                raise
        except Exception as error:  # whatever is wrong with the new config, the old one keeps running
            self.metrics.reloads.labels("rejected").inc()
            log.error("reject the new configuration; keep running with the old one", config=str(self.config),
                      error=str(error))
            self.notifier.send("READY=1", f"STATUS=reload rejected, old configuration kept; {self.last_status}")
            return
        old = self.settings.daemon
        if (settings.daemon.listen, settings.daemon.port) != (old.listen, old.port):
            log.warning("keep listening on the old address; restart syncd to move it",
                        listen=f"{old.listen}:{old.port}", wanted=f"{settings.daemon.listen}:{settings.daemon.port}")
        self.scheduler.pause()
        self._wait_idle(timeout=None)
        old_engine, old_scim = self.engine, self.scim
        self.scheduler.remove_all_jobs()
        self.settings, self.engine, self.specs, self.scim = settings, engine, specs, scim
        self.backoff = Backoff(settings.daemon.backoff)
        self.health = {name: state for name, state in self.health.items() if name in engine.sources}
        self._schedule()
        self._open_gate()
        self.scheduler.resume()
        if old_scim is not None:
            old_scim.close()
        old_engine.close()
        self.metrics.reloads.labels("ok").inc()
        log.info("apply the new configuration", config=str(self.config), jobs=[s.id for s in specs])
        self.notifier.send("READY=1", f"STATUS=configuration reloaded; {self.last_status}")

    def stop(self, signum: int) -> int:
        log.info("stop the daemon", signal=signal.Signals(signum).name)
        self.notifier.send("STOPPING=1", "STATUS=stopping: finishing the running jobs")
        self._stopping = True
        self.scheduler.shutdown(wait=False)
        idle = self._wait_idle(timeout=self.settings.daemon.stop_timeout.total_seconds())
        self._open_gate()  # jobs queued at the gate see _stopping and return
        self.server.should_exit = True
        self._server_thread.join(timeout=10)
        if not idle:
            # Their intents stay pending in the ledger; the next run recovers that work.
            log.error("abandon jobs still running after daemon.stop_timeout; the next start recovers their work",
                      timeout=self.settings.daemon.stop_timeout.total_seconds())
            sys.stderr.flush()
            os._exit(0)
        if self.scim is not None:
            self.scim.close()
        self.engine.close()
        log.info("stopped: ledger closed")
        return 0

    # Jobs (scheduler threads)

    def _job(self, spec: JobSpec) -> None:
        with self._gate:
            while self._gate_closed and not self._stopping:
                self._gate.wait()
            if self._stopping:
                return
            self._running += 1
            engine = self.engine
        started = time.monotonic()
        try:
            if spec.source not in engine.sources:
                return
            try:
                reports = run_job(engine, spec)
            except Exception as error:  # a job never takes the daemon down
                log.error("fail a job", job=spec.id, error=str(error), error_type=type(error).__name__)
                reports, failed = [], True
            else:
                failed = any(report.result == "failed" for report in reports)
            for report in reports:
                self._after_run(engine, spec, report, time.monotonic() - started)
            if failed:
                self._back_off(spec)
            else:
                self.backoff.succeeded(spec.id)
        finally:
            with self._gate:
                self._running -= 1
                self._gate.notify_all()

    def _after_run(self, engine: Engine, spec: JobSpec, report: RunReport, seconds: float) -> None:
        self.metrics.record_run(spec.kind, report, seconds)
        if report.error is not None:
            self.health[spec.source] = f"unavailable: {report.error}"
        elif report.problems:
            self.health[spec.source] = f"partial: {len(report.problems)} broken entr(y/ies) skipped"
        else:
            self.health[spec.source] = "ok"
        self.metrics.source_up.labels(spec.source).set(0 if report.error is not None else 1)
        if report.result != "failed":
            self.metrics.last_success.labels(spec.source).set_to_current_time()
        self._quarantine(engine, spec, report)
        self.metrics.set_credentials(engine.ledger.credential_states())
        summary = report.summary()
        self.last_status = (f"last run {spec.id}: {report.result}, {summary['actions']} action(s), "
                            f"{summary['held']} held, {summary['failed']} failed at "
                            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}")
        self.notifier.send(f"STATUS={self.last_status}")

    def _quarantine(self, engine: Engine, spec: JobSpec, report: RunReport) -> None:
        """Revocations the safety thresholds held wait for a human; record them in the ledger once."""
        unsafe = [held for held in report.plan.held if held.unsafe] if report.plan else []
        self.metrics.quarantined.labels(spec.source).set(len(unsafe))
        held = frozenset((h.action.person_id, h.action.cluster) for h in unsafe)
        if not unsafe or self.quarantined.get(spec.id) == held:
            if not unsafe:
                self.quarantined.pop(spec.id, None)
            return
        for item in unsafe:
            action = item.action
            engine.ledger.record(report.run_id, Event(
                action.person_id, action.username, "quarantine", str(action.reason), cluster=action.cluster,
                before=action.before, result="held", error=item.why))
        self.quarantined[spec.id] = held
        log.warning("quarantine revocations the safety thresholds hold; run `syncd reconcile "
                    "--allow-mass-revocation` if they are intended", job=spec.id, held=len(unsafe),
                    why=unsafe[0].why)

    def _back_off(self, spec: JobSpec) -> None:
        count, wait = self.backoff.failed(spec.id)
        self.metrics.job_failures.labels(spec.kind).inc()
        job = self.scheduler.get_job(spec.id)
        if job is not None and not self._stopping:
            job.modify(next_run_time=datetime.now(UTC) + wait)
        log.warning("back off a failing job", job=spec.id, failures=count, retry_in_seconds=wait.total_seconds())


def run(config: Path) -> None:
    """`syncd run`: serve until SIGTERM."""
    Daemon(config).run()
