"""The daemon's life: start (ledger, endpoint, jobs, READY=1), run jobs, reload on SIGHUP, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog
import uvicorn
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from syncd.adapters.ledger import Database, Journal, ReadModel
from syncd.app.daemon.audit import AuditApp, file_followers, usage_recorder
from syncd.app.daemon.http import ASGIApp, HttpApp, Receive, Scope, Send, counting_statuses
from syncd.app.daemon.jobs import Backoff, JobSpec, job_specs, run_job
from syncd.app.daemon.leader import Leadership
from syncd.app.daemon.metrics import Metrics
from syncd.app.daemon.notify import Notifier
from syncd.app.daemon.watch import SourceWatch, source_watches
from syncd.config import Settings, load_settings
from syncd.errors import ConfigError, SyncdError, TemporaryError
from syncd.ports import AUDIT_FILES
from syncd.runtime.audit_files import AuditFileFollower
from syncd.runtime.engine import Engine, RunReport
from syncd.runtime.usage import UsageLedger, UsageRecorder
from syncd.runtime.wiring import leader_lease, pushed_resources
from syncd.scim import create_app
from syncd.scim.app import ScimApp
from syncd.scim.reconciler import Reconciler

log = structlog.get_logger("syncd.daemon")

TICK = 5.0  # longest the main loop sleeps between watchdog pings and signal checks
LISTEN_TIMEOUT = 15.0


def mount_scim(engine: Engine, settings: Settings, on_report: Callable[[RunReport], None]) -> ScimApp | None:
    """The SCIM endpoint over `engine` when `scim:` is configured: pushes are reconciled at once, through the
    engine's one apply path, each run passed to `on_report`. The daemon serves it on `scim.host:scim.port`
    (TLS when configured)."""
    if settings.scim is None:
        return None
    return create_app(engine, settings, pushed_resources(engine.database), Reconciler(
        engine, batch_interval=settings.scim.batch_interval.total_seconds(), on_report=on_report))


def election(settings: Settings) -> tuple:
    """Where and how a daemon with these settings takes part in the leader election; a reload cannot change it."""
    return settings.daemon.leader, settings.ledger.url


def listen_addresses(settings: Settings) -> tuple:
    """Where a daemon with these settings listens; a reload cannot change it."""
    scim = settings.scim
    return ((settings.daemon.listen, settings.daemon.port),
            scim and (scim.host, scim.port, scim.tls_cert, scim.tls_key), settings.audit)


class ClientCertificateProtocol(AutoHTTPProtocol):  # type: ignore[valid-type,misc]
    """uvicorn's HTTP protocol, passing the TLS client certificate the handshake verified (if any) to the app, in the
    scope's `extensions["tls"]`: `client_cert_subject` and `client_cert_issuer`, as `getpeercert()` gives them."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        if not peer:
            return
        tls = {"client_cert_subject": peer.get("subject"), "client_cert_issuer": peer.get("issuer")}
        app = self.app

        async def with_certificate(scope: Scope, receive: Receive, send: Send) -> None:
            scope.setdefault("extensions", {})["tls"] = tls
            await app(scope, receive, send)

        self.app = with_certificate


class Listener:
    """One uvicorn server on a thread of its own. With `client_cas`, TLS asks for an optional client certificate
    issued by one of them; a certificate none issued fails the handshake."""

    def __init__(self, name: str, app: ASGIApp, host: str, port: int, tls_cert: Path | None = None,
                 tls_key: Path | None = None, client_cas: Sequence[Path] = ()) -> None:
        self.name = name
        self.where = f"{host}:{port}"

        def asking_for_client_certificates(_config: uvicorn.Config, default: Callable[[], ssl.SSLContext]
                                           ) -> ssl.SSLContext:
            context = default()
            for ca in client_cas:
                context.load_verify_locations(cafile=str(ca))
            context.verify_mode = ssl.CERT_OPTIONAL
            return context

        self.server = uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=5, ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            ssl_context_factory=asking_for_client_certificates if client_cas else None,
            http=ClientCertificateProtocol if client_cas else "auto"))
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise TemporaryError(f"cannot listen on {self.where} ({self.name})",
                                     hint="is another process using the port?")
            time.sleep(0.05)

    @property
    def healthy(self) -> bool:
        return self.thread.is_alive() and self.server.started

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)


class Daemon:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.notifier = Notifier()
        self.metrics = Metrics()
        self.settings = load_settings(config)
        self.engine = Engine.from_settings(self.settings)
        self.specs = job_specs(self.settings, self.engine)
        self.scim = mount_scim(self.engine, self.settings, self._record_scim_run)
        self.watches = source_watches(self.engine, self.leads, self._record_watch_run)
        self.health: dict[str, str] = {}  # source -> ok | partial: ... | unavailable: ...
        self.quarantined: dict[str, frozenset[tuple[str, str]]] = {}  # job -> (person, cluster) held, last warned of
        self.held: dict[str, int] = {}  # source -> people whose revocation is held in the ledger, not yet applied
        self.backoff = Backoff(self.settings.daemon.backoff)
        self.last_status = "waiting for the first run"
        self.leadership = Leadership(leader_lease(self.settings), self.settings.daemon.leader,
                                     on_lead=self._run_reconciles_now, on_change=self._set_leader_metric)
        self._set_leader_metric(False)
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
        daemon, scim = self.settings.daemon, self.settings.scim
        self.listeners = [Listener("http", HttpApp(self, self.metrics), daemon.listen, daemon.port)]
        if scim is not None:
            self.listeners.append(Listener("scim", counting_statuses(self._scim_app, self.metrics), scim.host,
                                           scim.port, scim.tls_cert, scim.tls_key))
        audit = self.settings.audit
        self.recorder: UsageRecorder | None = None
        self.followers: list[AuditFileFollower] = []
        if audit is not None:
            self.recorder = usage_recorder(self.settings, self._usage_ledger, self.metrics)
            if audit.senders:
                self.listeners.append(audit_listener(self.settings, self.recorder, self.metrics))
            self.followers = file_followers(self.settings, self.recorder,
                                            self.engine.read_model.watch_cursors(AUDIT_FILES), self.metrics)

    # What the HTTP endpoints ask

    def _scim_app(self) -> ASGIApp:
        assert self.scim is not None  # the SCIM listener exists only with a SCIM app, and a reload keeps both
        return self.scim

    def _usage_ledger(self) -> UsageLedger:
        """Where the audit receiver writes use and anomalies and reads what it checks them against: the current
        engine's ledger (a reload replaces it)."""
        return UsageLedger(self.engine.parts.journal, self.engine.read_model)  # type: ignore[arg-type]

    def readiness(self) -> tuple[bool, dict]:
        try:
            self.engine.read_model.ping()
            ledger = "ok"
        except SyncdError as error:
            ledger = f"unreachable: {error}"
        sources = {name: self.health.get(name, "pending") for name in self.engine.sources}
        ready = ledger == "ok" and not any(state.startswith("unavailable") for state in sources.values())
        held = {name: self.held.get(name, 0) for name in self.engine.sources}
        watches = {watch.name: {"state": watch.state, "last_message_age_seconds": watch.last_message_age}
                   for watch in self.watches}
        return ready, {"ledger": ledger, "sources": sources, "held_revocations": held, "watches": watches,
                       "leader": self.leadership.view()}

    def leads(self) -> bool:
        """Whether this replica runs the scheduled jobs (and any long-lived job) now; the others stand by."""
        return self.leadership.leads()

    # Life cycle

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda number, _frame: self._signals.put(number))
        self._listen()
        self._schedule()
        self.leadership.start()
        self.scheduler.start()
        self._start_watches(self.watches)
        for follower in self.followers:
            follower.start()
        self.metrics.set_credentials(self.engine.read_model.credential_states())
        where = ", ".join(f"{listener.where} ({listener.name})" for listener in self.listeners)
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

    def _record_scim_run(self, report: RunReport) -> None:
        self._record(self.engine, "scim", "scim", report, None)

    def _record_watch_run(self, report: RunReport, seconds: float) -> None:
        self._record(self.engine, "watch", f"watch:{report.source}", report, seconds)
        self._quarantine(f"watch:{report.source}", report)

    def _start_watches(self, watches: list[SourceWatch]) -> None:
        for watch in watches:
            self.metrics.watch(watch)
            watch.start()

    def _listen(self) -> None:
        try:
            for listener in self.listeners:
                listener.start()
        except SyncdError:
            self._close(idle=True)
            raise

    def _schedule(self) -> None:
        now = datetime.now(UTC)
        for spec in self.specs:
            # A full reconcile runs at start; the others wait for their first turn.
            first = {"next_run_time": now} if spec.kind == "reconcile" else {}
            self.scheduler.add_job(self._job, spec.trigger, args=[spec], id=spec.id, name=spec.id, **first)

    def _run_reconciles_now(self) -> None:
        """A replica that becomes leader reconciles every source at once, as at start."""
        now = datetime.now(UTC)
        for spec in self.specs:
            if spec.kind == "reconcile" and self.scheduler.get_job(spec.id) is not None:
                self.scheduler.modify_job(spec.id, next_run_time=now)

    def _set_leader_metric(self, leads: bool) -> None:
        self.metrics.leader.labels(self.leadership.lease.backend).set(1 if leads else 0)

    def _healthy(self) -> bool:
        return all(listener.healthy for listener in self.listeners) and self.scheduler.running

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
            if listen_addresses(settings) != listen_addresses(self.settings):
                raise ConfigError("it changes where syncd listens (daemon.listen/port, the scim: section's "
                                  "host, port, TLS or presence, or the audit: section)",
                                  hint="restart syncd to apply it")
            if election(settings) != election(self.settings):
                raise ConfigError("it changes the leader election (daemon.leader or ledger.url)",
                                  hint="restart syncd to apply it")
            engine = Engine.from_settings(settings)
            try:
                specs = job_specs(settings, engine)
                scim = mount_scim(engine, settings, self._record_scim_run)
            except BaseException:
                engine.close()
                raise
        except Exception as error:  # whatever is wrong with the new config, the old one keeps running
            self.metrics.reloads.labels("rejected").inc()
            log.error("reject the new configuration; keep running with the old one", config=str(self.config),
                      error=str(error))
            self.notifier.send("READY=1", f"STATUS=reload rejected, old configuration kept; {self.last_status}")
            return
        self.scheduler.pause()
        self._wait_idle(timeout=None)
        old_engine, old_scim, old_watches = self.engine, self.scim, self.watches
        for watch in old_watches:
            watch.stop()
        self.scheduler.remove_all_jobs()
        self.settings, self.engine, self.specs, self.scim = settings, engine, specs, scim
        self.watches = source_watches(engine, self.leads, self._record_watch_run)
        self._start_watches(self.watches)
        self.backoff = Backoff(settings.daemon.backoff)
        self.health = {name: state for name, state in self.health.items() if name in engine.sources}
        self._schedule()
        self._open_gate()
        self.scheduler.resume()
        if old_scim is not None:
            old_scim.reconciler.close()  # lets its running reconcile finish; queued pushes wait in the ledger
        old_engine.close()
        self.metrics.reloads.labels("ok").inc()
        log.info("apply the new configuration", config=str(self.config), jobs=[s.id for s in specs])
        self.notifier.send("READY=1", f"STATUS=configuration reloaded; {self.last_status}")

    def stop(self, signum: int) -> int:
        log.info("stop the daemon", signal=signal.Signals(signum).name)
        self.notifier.send("STOPPING=1", "STATUS=stopping: finishing the running jobs")
        self._stopping = True
        self.scheduler.shutdown(wait=False)
        self.engine.stop()  # runs finish the actions in flight and begin no other
        idle = self._wait_idle(timeout=self.settings.daemon.stop_timeout.total_seconds())
        self._open_gate()  # jobs queued at the gate see _stopping and return
        self._close(idle)
        return 0

    def _close(self, idle: bool) -> None:
        for listener in self.listeners:
            listener.stop()
        for follower in self.followers:
            follower.stop()
        if self.recorder is not None:
            self.recorder.close()  # writes every use accepted or read, even when jobs are abandoned below
        self.leadership.stop()  # a follower takes over at once
        if not idle:
            # Their intents stay pending in the ledger; the next run recovers that work.
            log.error("abandon jobs still running after daemon.stop_timeout; the next start recovers their work",
                      timeout=self.settings.daemon.stop_timeout.total_seconds())
            sys.stderr.flush()
            os._exit(0)
        if self.scim is not None:
            self.scim.reconciler.close()  # finishes the running reconcile; queued pushes wait in the ledger
        for watch in self.watches:
            watch.stop()  # finishes its running reconcile; its cookie stays where the last one left it
        self.engine.close()
        log.info("stopped: ledger closed")

    # Jobs (scheduler threads)

    def _job(self, spec: JobSpec) -> None:
        if not self.leads():
            return  # a follower stands by: the leader runs the schedules
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
                self._record(engine, spec.kind, spec.id, report, time.monotonic() - started)
                self._quarantine(spec.id, report)
            if failed:
                self._back_off(spec)
            else:
                self.backoff.succeeded(spec.id)
        finally:
            with self._gate:
                self._running -= 1
                self._gate.notify_all()

    def _record(self, engine: Engine, job: str, job_id: str, report: RunReport, seconds: float | None) -> None:
        """A finished run into the metrics, the source's health and systemd's STATUS."""
        source = report.source
        self.metrics.record_run(job, report, seconds)
        if job != "sweep":  # a sweep reads no source: it tells nothing of the source's health
            if report.error is not None:
                self.health[source] = f"unavailable: {report.error}"
            elif report.problems:
                self.health[source] = f"partial: {len(report.problems)} broken entr(y/ies) skipped"
            else:
                self.health[source] = "ok"
            self.metrics.source_up.labels(source).set(0 if report.error is not None else 1)
            if report.result != "failed":
                self.metrics.last_success.labels(source).set_to_current_time()
        self.metrics.set_credentials(engine.read_model.credential_states())
        self.held[source] = len(engine.read_model.held_revocations(source))
        self.metrics.quarantined.labels(source).set(self.held[source])
        summary = report.summary()
        self.last_status = (f"last run {job_id}: {report.result}, {summary['actions']} action(s), "
                            f"{summary['held']} held ({summary['refused']} refused), {summary['failed']} failed at "
                            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}")
        self.notifier.send(f"STATUS={self.last_status}")

    def _quarantine(self, job_id: str, report: RunReport) -> None:
        """Revocations the safety thresholds hold are recorded in the ledger, counted by `_record` and tried again
        by the credentials job until the hold ends or a human allows them: warn when the set held changes."""
        unsafe = [held for held in report.plan.held if held.unsafe] if report.plan is not None else []
        held = frozenset((h.action.person_id, h.action.cluster) for h in unsafe)
        if self.quarantined.get(job_id, frozenset()) == held:
            return
        self.quarantined[job_id] = held
        if unsafe:
            log.warning("quarantine revocations the safety thresholds hold; run `syncd reconcile "
                        "--allow-mass-revocation` if they are intended", job=job_id, held=len(unsafe),
                        why=unsafe[0].why)

    def _back_off(self, spec: JobSpec) -> None:
        count, wait = self.backoff.failed(spec.id)
        self.metrics.job_failures.labels(spec.kind).inc()
        job = self.scheduler.get_job(spec.id)
        if job is not None and not self._stopping:
            job.modify(next_run_time=datetime.now(UTC) + wait)
        log.warning("back off a failing job", job=spec.id, failures=count, retry_in_seconds=wait.total_seconds())


def audit_listener(settings: Settings, recorder: UsageRecorder, metrics: Metrics) -> Listener:
    """The audit webhook's listener on the `audit:` section's address and TLS."""
    audit = settings.audit
    assert audit is not None
    return Listener("audit", AuditApp.from_settings(settings, recorder, metrics), audit.host, audit.port,
                    audit.tls_cert, audit.tls_key, [s.client_ca for s in audit.senders if s.client_ca])


def run(config: Path) -> None:
    """`syncd run`: serve until SIGTERM."""
    Daemon(config).run()


def serve_audit(settings: Settings) -> None:
    """`syncd audit serve`: the audit webhook receiver alone, on the `audit:` section's listener, until SIGTERM or
    SIGINT; then every use it accepted is written to the ledger."""
    audit = settings.audit
    if audit is None:
        raise ConfigError("no audit: section in the configuration", hint="see configs/syncd.example.yaml")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _number, _frame: stop.set())
    with Database(settings.ledger.url) as database:
        ledger, metrics = UsageLedger(Journal(database), ReadModel(database)), Metrics()
        recorder = usage_recorder(settings, lambda: ledger, metrics)
        listener = audit_listener(settings, recorder, metrics) if audit.senders else None
        followers = file_followers(settings, recorder, ledger.reads.watch_cursors(AUDIT_FILES), metrics)
        try:
            if listener is not None:
                listener.start()
                log.info("serve the audit webhook", listen=listener.where)
            for follower in followers:
                follower.start()
                log.info("follow the audit log", path=follower.key, cluster=follower.cluster)
            while not stop.wait(TICK):
                if listener is not None and not listener.healthy:
                    raise TemporaryError(f"the audit listener on {listener.where} stopped")
        finally:
            if listener is not None:
                listener.stop()
            for follower in followers:
                follower.stop()
            recorder.close()
    log.info("stopped: use written to the ledger")
