"""One reconcile: inspect (source, ledger, clusters) -> plan -> apply -> confirm revocations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from syncd.adapters.ledger.journal import LEFT_FOR_FULL_RUN
from syncd.config import Settings
from syncd.core.lifecycle import Lifecycle
from syncd.core.model import ObservedCluster, Scope, Snapshot, person_key
from syncd.core.plan import (
    Inputs,
    Plan,
    Reason,
    RevocationCounts,
    hold_interrupted,
    make_plan,
    make_sweep_plan,
    plan_manual_revocation,
)
from syncd.core.policy import Policy
from syncd.errors import ConfigError, InputError, LeaseLost, SyncdError, TemporaryError
from syncd.ports import IncrementalSource, Source, TargetedSource
from syncd.runtime.apply import Applier, Outcome, Progress
from syncd.runtime.wiring import Parts, build

log = structlog.get_logger("syncd.engine")


@dataclass
class RunReport:
    source: str
    dry_run: bool
    run_id: str | None = None
    plan: Plan | None = None
    outcome: Outcome | None = None
    problems: tuple[str, ...] = ()
    writes: int = 0
    apply_seconds: float = 0.0  # from the first action begun to the last one done
    confirmed_rejections: int = 0
    error: SyncdError | None = None
    cluster_errors: dict[str, str] = field(default_factory=dict)

    @property
    def result(self) -> str:
        if isinstance(self.error, LeaseLost):
            return "lost-lease"
        if self.outcome and self.outcome.not_begun:
            return "interrupted"  # stopped: the actions not begun wait for the next run
        if self.error is not None or (self.outcome and self.outcome.failed) or self.cluster_errors:
            return "failed"
        return "ok" if self.plan else "no-op"

    def summary(self) -> dict:
        plan = self.plan if self.plan is not None else Plan(self.source)
        return {
            "actions": len(plan.actions),
            "held": len(plan.held),
            "refused": sum(1 for held in plan.held if held.refused),
            "failed": len(self.outcome.failed) if self.outcome else 0,
            "not_begun": self.outcome.not_begun if self.outcome else 0,
            "writes": self.writes,
            "apply_seconds": round(self.apply_seconds, 3),
            "actions_per_second": round(len(plan.actions) / self.apply_seconds, 1)
            if plan.actions and self.apply_seconds else None,
            "skipped_clusters": list(plan.skipped_clusters),
            "problems": len(self.problems),
        }


class Engine:
    """Holds what outlives one run: settings, policy, and the ports it works through (`wiring.Parts`): the ledger's
    read model and journal, clusters, delivery and sources; it closes them when it closes. The engine reads the
    ledger; every write goes through the `Applier`."""

    def __init__(self, settings: Settings, parts: Parts) -> None:
        self.settings = settings
        self.parts = parts
        self.policy: Policy = parts.policy
        self.database = parts.database
        self.read_model = parts.read_model
        self._journal = parts.journal  # the Applier's, for every run
        self.delivery = parts.delivery
        self.clusters = parts.clusters
        # Sources live as long as the engine: an incremental source keeps its watermark between runs.
        self.sources: dict[str, Source] = parts.sources
        self._apply_lock = threading.Lock()
        # One run per source at a time from its read to its apply, so that an older read never lands after a
        # newer one (a full read still in flight must not re-issue what a push revoked meanwhile).
        self._source_locks = {name: threading.RLock() for name in self.sources}
        self.progress: Progress | None = None  # told of each action applied (the CLI draws a bar on a terminal)
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings, policy: Policy | None = None) -> Engine:
        """An engine on the real adapters the settings describe (`wiring.build`)."""
        return cls(settings, build(settings, policy))

    def close(self) -> None:
        self.parts.close()

    def stop(self) -> None:
        """Stop applying (SIGTERM): runs finish the actions in flight and begin no other, which wait for the next
        run; their run is recorded `interrupted`. Waiting for revoked tokens to die stops too. For good: the engine
        is about to close."""
        log.info("stop applying: finish the actions in flight, begin no other")
        self._stop.set()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def reconcile(self, source: str | None = None, *, dry_run: bool = False, allow_mass_revocation: bool = False,
                  only: frozenset[str] | None = None, now: datetime | None = None) -> list[RunReport]:
        """Reconcile every source, or one. A targeted run passes `only` (person ids): people outside it are not
        touched, whatever the source holds."""
        return [self._run(name, self._reader(name, only), dry_run, allow_mass_revocation, only, now)
                for name in self._source_names(source)]

    def sweep(self, source: str | None = None, *, dry_run: bool = False) -> list[RunReport]:
        """The orphan and drift sweep of every source, or one, from what the ledger recorded of its people: no
        source is read, so it can run often and while a source is down."""
        return [self._run(name, lambda name=name: Snapshot(name, self.read_model.identities(name)), dry_run, False,
                          None, None, sweep_only=True) for name in self._source_names(source)]

    def poll(self, source_name: str, *, dry_run: bool = False, allow_mass_revocation: bool = False
             ) -> RunReport | None:
        """Reconcile only the people an incremental source says changed since its last read or poll; None when
        nothing changed. Deletions wait for the next full `reconcile`."""
        source = self.sources.get(source_name)
        if not isinstance(source, IncrementalSource):
            raise ConfigError(f"source {source_name!r} cannot be polled for changes", hint="reconcile it in full")
        with self._source_locks[source_name]:
            mark = self.read_model.last_seq()
            try:
                snapshot = source.poll()
            except SyncdError as error:
                log.error("abort a poll whose source cannot be read", source=source_name, error=str(error))
                return RunReport(source_name, dry_run, error=error)
            if not snapshot.identities and not snapshot.problems:
                return None
            return self._run(source_name, lambda: snapshot, dry_run, allow_mass_revocation,
                             frozenset(i.id for i in snapshot.identities), None, mark=mark)

    def save_watch_cursors(self, source: str, cookies: Mapping[str, bytes | None]) -> None:
        """Where a source's watch stopped (its changes up to there applied): a restart resumes there."""
        self._applier(dry_run=False).save_cursors(source, cookies)

    def revoke(self, target: str, reason: Reason) -> RunReport:
        """Revoke one token (by fingerprint) or a person's access (by id or username) now, through the same lock
        and apply path as every run. A person the source still entitles gets new access on the next reconcile."""
        report = RunReport("manual", dry_run=False)
        with self._apply_lock, self.database.exclusive():
            known = self.read_model.known_people()
            report.plan = plan = plan_manual_revocation(target, reason, known, self._observe(report))
            if not plan.actions and not plan.skipped_clusters:
                raise InputError(f"no live credential or person matches {target!r}",
                                 hint="see `syncd token list`; fingerprints start with sha256:")
            applier = self._applier(dry_run=False)
            try:
                report.run_id = applier.begin_run("manual")
                self._recover(applier, settles=lambda _person_id: False)
                self._apply(report, applier, plan)
                self._finish(report, applier)
            except LeaseLost as error:
                return self._lose_lease(report, error)
        return self._confirm(report, applier)

    def resume(self, target: str, cluster: str | None, reason: str) -> tuple[str, str, list[str]]:
        """Lift the idle suspension of one person (id or username; a name several people share is refused) on
        `cluster`, or on every cluster: (person id, username, the clusters resumed). The next reconcile gives
        access back if the source still entitles them."""
        with self._apply_lock, self.database.exclusive():
            people = sorted({(pid, name) for pid, name, *_ in self.read_model.suspensions() if target in (pid, name)})
            if len(people) > 1:
                raise InputError(f"{target!r} names several suspended people: "
                                 + ", ".join(f"{name} (id {pid})" for pid, name in people), hint="give the id")
            if not people:
                raise InputError(f"no suspended access matches {target!r}" + (f" on {cluster}" if cluster else ""),
                                 hint="see `syncd access list --suspended`")
            (person_id, username), = people
            resumed = self._applier(dry_run=False).resume(person_id, username, cluster, reason)
        if not resumed:
            raise InputError(f"{username} is not suspended on {cluster}", hint="see `syncd access list --suspended`")
        return person_id, username, resumed

    def _apply(self, report: RunReport, applier: Applier, plan: Plan) -> None:
        """Apply the plan, counting its write calls and its time."""
        writes_before, started = self._writes(), time.monotonic()
        report.outcome = applier.apply(plan)
        report.writes = self._writes() - writes_before
        report.apply_seconds = time.monotonic() - started

    def _writes(self) -> int:
        """Write calls made so far to every cluster; a run reports the difference."""
        return sum(c.writes for c in self.clusters.values())

    def _missing_roles(self, observed: dict[str, ObservedCluster | None]) -> dict[str, frozenset[Scope]]:
        """Per cluster read, the roles the policy grants there that do not exist; each logged once per run."""
        missing = {}
        for name, seen in observed.items():
            if seen is None:
                continue
            try:
                missing[name] = self.clusters[name].missing_roles(self.policy.granted_scopes(name))
            except SyncdError as error:
                log.warning("skip the check for missing roles", cluster=name, error=str(error))
                continue
            for role in sorted(missing[name], key=str):
                log.warning("grant a role that does not exist; people get Forbidden until it is created",
                            cluster=name, role_kind=str(role.role_kind), role=role.role_name, namespace=role.namespace)
        return missing

    def _applier(self, *, dry_run: bool, deadline: float | None = None, run_id: str | None = None) -> Applier:
        return Applier(self._journal, self.read_model, self.clusters, self.delivery, run_id=run_id, dry_run=dry_run,
                       lifecycle=Lifecycle(self.settings.tokens), deadline=deadline,
                       workers={c.name: c.workers for c in self.settings.clusters}, progress=self.progress,
                       stop=self._stop)

    def _recover(self, applier: Applier, settles: Callable[[str], bool]) -> set[tuple[str, str]]:
        """Mark dead runs interrupted and settle the intents they left (see `Applier.recover`), under the apply lock
        and before planning, so that the plan sees what recovery decided. Returns the (person id, cluster) pairs
        left for a full run: nobody else may touch them."""
        for run in applier.interrupt_dead_runs():
            log.warning("mark a run that died interrupted", interrupted_run=run.id, source=run.source)
        left = set()
        for intent, result in applier.recover(settles):
            log.warning("recover work an interrupted run left half done", person=intent.username,
                        cluster=intent.cluster, action=intent.action, interrupted_run=intent.run_id, result=result)
            if result == LEFT_FOR_FULL_RUN:
                left.add((intent.person_id, intent.cluster))
        return left

    def _observe(self, report: RunReport, only: frozenset[str] | None = None, deadline: float | None = None
                 ) -> dict[str, ObservedCluster | None]:
        keys = None if only is None else {person_key(pid) for pid in only}
        observed: dict[str, ObservedCluster | None] = {}
        for name, cluster in self.clusters.items():
            try:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TemporaryError(f"cluster {name}: the run's deadline passed before it was read")
                observed[name] = cluster.observe(keys)
            except SyncdError as error:
                log.error("skip a cluster that cannot be read", cluster=name, error=str(error))
                report.cluster_errors[name] = str(error)
                observed[name] = None
        return observed

    def _source_names(self, source: str | None) -> list[str]:
        """The one source named (a `ConfigError` if there is none by that name), or every source."""
        return [self.settings.source(source).name] if source else list(self.sources)

    def _reader(self, source_name: str, only: frozenset[str] | None) -> Callable[[], Snapshot]:
        source = self.sources[source_name]
        if only is not None and isinstance(source, TargetedSource):
            return lambda: source.read_people(only)
        return source.read

    def _run(self, source_name: str, read: Callable[[], Snapshot], dry_run: bool, allow_mass_revocation: bool,
             only: frozenset[str] | None, now: datetime | None, sweep_only: bool = False,
             mark: int | None = None) -> RunReport:
        """One run from `read` (under the source's lock) to its confirmations. `mark`: the ledger's last event
        before the read began, when the caller read first."""
        report = RunReport(source_name, dry_run)
        deadline = time.monotonic() + self.settings.run_deadline.total_seconds()
        with self._source_locks[source_name]:
            mark = self.read_model.last_seq() if mark is None else mark
            snapshot = self._read(report, read)
            if snapshot is None:
                return report
            # Inspect, plan and apply under one lock: nobody else may change what we saw before we act on it.
            with self._apply_lock, self.database.exclusive():
                if not sweep_only and self.read_model.source_changed_since(source_name, mark):
                    # Another process applied a read of this source since ours began: ours may be older.
                    log.info("read the source again: another process changed its people meanwhile",
                             source=source_name)
                    snapshot = self._read(report, self._reader(source_name, only))
                    if snapshot is None:
                        return report
                try:
                    applier = self._plan_and_apply(report, snapshot, allow_mass_revocation, only, now, sweep_only,
                                                   deadline)
                    self._finish(report, applier)
                except LeaseLost as error:
                    return self._lose_lease(report, error)
        return self._confirm(report, applier)

    def _lose_lease(self, report: RunReport, error: LeaseLost) -> RunReport:
        """Another process holds the apply lock now: the run stops where it is, recorded `lost-lease`; the actions it
        had not begun are not, and the new holder recovers the intents it left."""
        report.error = error
        self._applier(dry_run=False, run_id=report.run_id).lose_lease()
        log.error("stop a run that lost the apply lock", source=report.source, run_id=report.run_id,
                  error=str(error))
        return report

    @staticmethod
    def _read(report: RunReport, read: Callable[[], Snapshot]) -> Snapshot | None:
        """The snapshot, or None with `report.error` set: a source that cannot be read revokes nothing."""
        try:
            snapshot = read()
        except SyncdError as error:
            log.error("abort a run whose source cannot be read", source=report.source, error=str(error))
            report.error = error
            return None
        report.problems = snapshot.problems
        for problem in snapshot.problems:
            log.warning("skip a broken entry", source=report.source, problem=problem)
        return snapshot

    @staticmethod
    def _finish(report: RunReport, applier: Applier) -> None:
        """Finish the run in the ledger while still holding the apply lock: a run is `running` only while it holds
        the lock, so the next run knows any other running run is dead."""
        applier.finish_run(report.result, report.summary())

    def _confirm(self, report: RunReport, applier: Applier) -> RunReport:
        # Waiting for revoked tokens to die needs no lock; other people's changes go ahead meanwhile. Each
        # confirmation is an event of the run.
        timeout = self.settings.tokens.confirm_revocation_timeout.total_seconds()
        if report.outcome and report.outcome.pending_rejections and timeout > 0:
            report.confirmed_rejections = applier.confirm_rejections(report.outcome.pending_rejections, timeout)
        log.info("finish a run", source=report.source, run_id=report.run_id, result=report.result,
                 confirmed_rejections=report.confirmed_rejections, **report.summary())
        return report

    def _plan_and_apply(self, report: RunReport, snapshot: Snapshot, allow_mass_revocation: bool,
                        only: frozenset[str] | None, now: datetime | None, sweep_only: bool,
                        deadline: float | None = None) -> Applier:
        left: set[tuple[str, str]] = set()
        applier = self._applier(dry_run=report.dry_run, deadline=deadline)
        if not report.dry_run:
            report.run_id = applier.begin_run(report.source, approved=allow_mass_revocation)
            # A run that reads the source plans its people again; a sweep leaves their half-done work alone.
            left = self._recover(applier, lambda pid: not sweep_only and (only is None or pid in only))
        now = now or datetime.now(UTC)
        counts = RevocationCounts()
        if only is not None:
            since = now - self.settings.safety.targeted_window
            counts = RevocationCounts(self.read_model.recent_revocations(snapshot.source, since),
                                      self.read_model.credential_holders(snapshot.source),
                                      len(self.read_model.mass_holds(snapshot.source, since) - only))
        # A targeted run reads only its people from the ledger and the clusters.
        observed = self._observe(report, only, deadline)
        usage = self.settings.usage
        idle_after = None if sweep_only else usage.idle_after  # a sweep judges no idleness: it reads no use
        last_use = {} if idle_after is None else self.read_model.last_used(
            None if only is None else {person_key(pid) for pid in only})
        inputs = Inputs(snapshot, self.policy, self.read_model.known_people(only), observed, now,
                        self.settings.safety, only, self.settings.sweep, self._missing_roles(observed),
                        self.settings.tokens, counts, idle_after, usage.idle_action == "suspend", last_use,
                        frozenset((pid, cluster) for pid, _, cluster, _ in self.read_model.suspensions()))
        report.plan = plan = hold_interrupted(make_sweep_plan(inputs) if sweep_only
                                              else make_plan(inputs, allow_mass_revocation=allow_mass_revocation),
                                              left)
        for held in plan.held:
            log.warning(f"hold: {held.action.message}", why=held.why, person=held.action.username,
                        cluster=held.action.cluster)
        if usage.idle_action == "report":
            for idle in plan.idle:
                log.warning("report an idle access", person=idle.username, person_id=idle.person_id,
                            cluster=idle.cluster, idle_since=idle.since.isoformat())

        self._apply(report, applier, plan)
        return applier
