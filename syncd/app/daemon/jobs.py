"""Which jobs the daemon schedules, when, and what each one runs through the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import BackoffSettings, JobSchedule, Settings, SourceJobs
from syncd.core.lifecycle import Lifecycle
from syncd.errors import ConfigError
from syncd.ports import IncrementalSource
from syncd.runtime.engine import Engine, RunReport

KINDS = ("poll", "reconcile", "credentials", "sweep")


@dataclass(frozen=True)
class JobSpec:
    kind: str  # poll | reconcile | credentials (and held revocations) | sweep
    source: str
    schedule: JobSchedule

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.source}"

    @property
    def trigger(self) -> BaseTrigger:
        if self.schedule.every is not None:
            return IntervalTrigger(seconds=self.schedule.every.total_seconds(), timezone=UTC)
        try:
            return CronTrigger.from_crontab(str(self.schedule.cron), timezone=UTC)
        except ValueError as error:
            raise ConfigError(f"daemon: job {self.id}: cron {self.schedule.cron!r}: {error}") from None


def job_specs(settings: Settings, engine: Engine) -> list[JobSpec]:
    """Per source: a full reconcile, a credentials job and a sweep, and a poll when the source can be polled. A schedule
    under `daemon.sources` wins, then the source's own `incremental` intervals (LDAP), then `daemon.jobs`."""
    specs = []
    for source in settings.sources:
        own = settings.daemon.sources.get(source.name, SourceJobs())
        incremental = getattr(source, "incremental", None)
        intervals = {"poll": getattr(incremental, "poll_interval", None),
                     "reconcile": getattr(incremental, "full_interval", None)}
        for kind in KINDS:
            if kind == "poll" and not isinstance(engine.sources[source.name], IncrementalSource):
                continue
            interval = intervals.get(kind)
            schedule = (getattr(own, kind) or (JobSchedule(every=interval) if interval else None)
                        or getattr(settings.daemon.jobs, kind))
            specs.append(JobSpec(kind, source.name, schedule))
    for spec in specs:
        _ = spec.trigger  # a bad cron line is a configuration error now, not when the job first runs
    return specs


def run_job(engine: Engine, spec: JobSpec) -> list[RunReport]:
    """One run of a job; every change goes through the engine's single apply path."""
    if spec.kind == "poll":
        report = engine.poll(spec.source)
        return [report if report is not None else RunReport(spec.source, dry_run=False)]  # None: read, no change
    if spec.kind == "reconcile":
        return engine.reconcile(spec.source)
    if spec.kind == "sweep":
        return engine.sweep(spec.source)
    people = [p for p in engine.read_model.known_people().values() if p.source == spec.source]
    due = Lifecycle(engine.settings.tokens).due(people, engine.policy, datetime.now(UTC))
    # Held leavers are tried again: once the targeted window has moved on, the hold no longer applies.
    due |= engine.read_model.held_revocations(spec.source)
    return engine.reconcile(spec.source, only=due) if due else []


class Backoff:
    """Consecutive failures per job, and how long to wait before the next try."""

    def __init__(self, settings: BackoffSettings) -> None:
        self.settings = settings
        self.failures: dict[str, int] = {}

    def failed(self, job_id: str) -> tuple[int, timedelta]:
        count = self.failures[job_id] = self.failures.get(job_id, 0) + 1
        return count, min(self.settings.initial * 2 ** (count - 1), self.settings.max)

    def succeeded(self, job_id: str) -> None:
        self.failures.pop(job_id, None)
