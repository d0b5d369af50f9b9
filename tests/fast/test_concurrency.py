"""Concurrent apply on fakes: people are applied at once, each person's steps in plan order; one person's failure
and one cluster's outage stay their own; Ctrl-C finishes the actions in flight and begins no other; the hash chain
holds under many writers."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.config import Settings
from syncd.core.model import PERSON_LABEL, ObservedBinding, RoleKind, Scope
from syncd.errors import Forbidden
from syncd.ports import ServiceAccountRef
from tests.fakes import FakeCluster, FakeSource, moved, person
from tests.fast.conftest import TEAM_A, TEAM_B, Rig, make_engine, make_settings

EDIT_A, VIEW_B = Scope(TEAM_A, RoleKind.CLUSTER_ROLE, "edit"), Scope(TEAM_B, RoleKind.CLUSTER_ROLE, "view")
DEVELOPERS = [person(str(n), f"dev{n:02d}", "developers") for n in range(1, 9)]
STAYER = person("99", "stayer", "sre")  # a source never goes empty (that would be held as suspect)


class Recording(FakeCluster):
    """Records each person's writes in order. `meet`: that many first ServiceAccount writes, or binding deletions,
    wait for each other (they pass only if that many people are in flight at once)."""

    def __init__(self, name: str, meet: int = 1) -> None:
        super().__init__(name, "syncd", namespaces={TEAM_A, TEAM_B})
        self.calls: dict[str, list[str]] = defaultdict(list)
        self.meeting = threading.Barrier(meet, timeout=10)
        self.met = 0

    def _meet(self) -> None:
        with self.lock:
            self.met += 1
            waits = self.met <= self.meeting.parties
        if waits:
            self.meeting.wait()

    def ensure_service_account(self, person_id: str, username: str) -> ServiceAccountRef:
        self.calls[person_id].append("account")
        self._meet()
        return super().ensure_service_account(person_id, username)

    def create_binding(self, person_id: str, username: str, scope: Scope) -> None:
        self.calls[person_id].append(f"bind {scope.namespace}")
        super().create_binding(person_id, username, scope)

    def delete_binding(self, binding: ObservedBinding) -> None:
        self.calls[self.bindings[(binding.namespace, binding.name)].labels[PERSON_LABEL]].append(
            f"unbind {binding.namespace}")
        self._meet()
        super().delete_binding(binding)

    def delete_account(self, service_accounts: tuple[str, ...], token_secrets: tuple[str, ...]) -> None:
        self.calls[self.service_accounts[service_accounts[0]].labels[PERSON_LABEL]].append("delete account")
        super().delete_account(service_accounts, token_secrets)


def rig_on(directory: Path, *clusters: FakeCluster, concurrency: int = 16, **sections: object) -> Iterator[Rig]:
    settings = make_settings(directory, clusters=tuple(c.name for c in clusters), **sections)
    settings = Settings.model_validate(settings.model_dump() | {"clusters": [
        c.model_dump() | {"concurrency": concurrency} for c in settings.clusters]})
    source = FakeSource("hr")
    with make_engine(settings, source, {c.name: c for c in clusters}) as engine:
        yield Rig(engine, source, {c.name: c for c in clusters}, directory)


def intents(directory: Path, state: str) -> int:
    with sqlite3.connect(directory / "ledger.db") as db:
        return db.execute("SELECT count(*) FROM intent WHERE state = ?", (state,)).fetchone()[0]


def test_people_are_applied_at_once_each_persons_steps_in_plan_order(tmp_path: Path):
    dev = Recording("dev", meet=len(DEVELOPERS))  # joiners: every ServiceAccount write waits for all the others
    rig = next(rig_on(tmp_path, dev, safety={"max_revocations": 100, "max_revocation_percent": 100}))
    rig.source.set(STAYER, *DEVELOPERS)
    joined = rig.reconcile()
    assert joined.result == "ok", [str(e) for _, e in joined.outcome.failed]
    assert all(dev.calls[p.id] == ["account", f"bind {TEAM_A}"] for p in DEVELOPERS), dict(dev.calls)

    dev.calls.clear()
    dev.meeting, dev.met = threading.Barrier(len(DEVELOPERS), timeout=10), 0  # movers: every unbind meets
    rig.source.set(STAYER, *(moved(p, "sre") for p in DEVELOPERS))
    movers = rig.reconcile()
    assert movers.result == "ok", [str(e) for _, e in movers.outcome.failed]
    # Bindings no longer granted go before anything is created, so no moment grants more than policy allows; the
    # ServiceAccount, seen and asked for no token, is not written.
    assert all(dev.calls[p.id] == [f"unbind {TEAM_A}", f"bind {TEAM_B}"] for p in DEVELOPERS)
    assert movers.writes == 2 * len(DEVELOPERS)
    assert all(dev.bindings_of(p.id) == {VIEW_B} for p in DEVELOPERS)

    dev.calls.clear()
    dev.meeting, dev.met = threading.Barrier(len(DEVELOPERS), timeout=10), 0  # leavers: every unbind meets
    rig.source.set(STAYER)
    leavers = rig.reconcile()
    assert leavers.result == "ok" and leavers.confirmed_rejections == len(DEVELOPERS)
    assert all(dev.calls[p.id] == [f"unbind {TEAM_B}", "delete account"] for p in DEVELOPERS)
    assert rig.engine.read_model.verify() is None


class RefusingOne(FakeCluster):
    """Refuses to bind one person; the others are bound as usual."""

    def create_binding(self, person_id: str, username: str, scope: Scope) -> None:
        if username == "dev03":
            self.writes += 1
            raise Forbidden(f"cluster {self.name}: bind {scope}: 403 forbidden")
        super().create_binding(person_id, username, scope)


def test_one_persons_failure_fails_only_their_action(tmp_path: Path):
    rig = next(rig_on(tmp_path, RefusingOne("dev", namespaces={TEAM_A, TEAM_B})))
    rig.source.set(*DEVELOPERS)
    report = rig.reconcile()
    assert [(a.username, type(e)) for a, e in report.outcome.failed] == [("dev03", Forbidden)]
    assert sorted(a.username for a in report.outcome.applied) == sorted(
        p.username for p in DEVELOPERS if p.username != "dev03")
    assert all(rig.dev.bindings_of(p.id) == {EDIT_A} for p in DEVELOPERS if p.username != "dev03")
    assert intents(tmp_path, "pending") == 0 and intents(tmp_path, "failed") == 1


class GoingDown(FakeCluster):
    """Becomes unreachable at its first ServiceAccount write."""

    went_down = False

    def ensure_service_account(self, person_id: str, username: str) -> ServiceAccountRef:
        with self.lock:
            if not self.went_down:
                self.unreachable = self.went_down = True
        return super().ensure_service_account(person_id, username)


def test_a_cluster_going_down_mid_run_stops_only_its_own_actions(tmp_path: Path):
    dev, prod = FakeCluster("dev", namespaces={TEAM_A, TEAM_B}), GoingDown("prod", namespaces={TEAM_A, TEAM_B})
    sre = [person(str(n), f"sre{n:02d}", "sre") for n in range(1, 21)]  # view team-b on dev and on prod
    rig = next(rig_on(tmp_path, dev, prod, concurrency=2))
    rig.source.set(*sre)
    report = rig.reconcile()
    failed = [(a.cluster, str(e)) for a, e in report.outcome.failed]
    assert {a.cluster for a in report.outcome.applied} == {"dev"} and len(report.outcome.applied) == len(sre)
    assert len(failed) == len(sre) and {cluster for cluster, _ in failed} == {"prod"}
    # Two were in flight when it went down; the others were not begun.
    assert sum("unreachable; action postponed" in error for _, error in failed) >= len(sre) - 2
    assert intents(tmp_path, "pending") == 0

    prod.unreachable = False
    again = rig.reconcile()
    assert {(str(a.kind), a.cluster) for a in again.plan.actions} == {("issue", "prod")}
    assert again.result == "ok" and all(prod.bindings_of(p.id) == {VIEW_B} for p in sre)


class Interrupting(FakeCluster):
    """Ctrl-C arrives while the third person's ServiceAccount is being written."""

    def __init__(self) -> None:
        super().__init__("dev", "syncd", namespaces={TEAM_A, TEAM_B})
        self.accounts = 0

    def ensure_service_account(self, person_id: str, username: str) -> ServiceAccountRef:
        with self.lock:
            self.accounts += 1
            if self.accounts == 3:
                os.kill(os.getpid(), signal.SIGINT)
        return super().ensure_service_account(person_id, username)


def test_ctrl_c_finishes_the_actions_in_flight_and_begins_no_other(tmp_path: Path):
    people = [person(str(n), f"dev{n:02d}", "developers") for n in range(1, 31)]
    dev = Interrupting()
    rig = next(rig_on(tmp_path, dev, concurrency=4))
    rig.source.set(*people)
    with pytest.raises(KeyboardInterrupt):
        rig.reconcile()
    done = intents(tmp_path, "done")
    assert intents(tmp_path, "pending") == 0, "an action in flight was abandoned half done"
    assert 3 <= done < len(people), "the run went on after Ctrl-C"
    assert dev.accounts == done and sum(1 for p in people if dev.bindings_of(p.id)) == done

    again = rig.reconcile()
    assert again.result == "ok" and len(again.plan.actions) == len(people) - done
    assert all(rig.token(p) is not None for p in people) and rig.engine.read_model.verify() is None


def test_ctrl_c_while_a_worker_starts_waits_for_that_worker_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Ctrl-C interrupting Thread.start() of a pool's worker (it runs, but its pool never learns of it): the run still
    waits for it, so no action of it is left half done behind the run's back."""
    people = [person(str(n), f"dev{n:02d}", "developers") for n in range(1, 31)]
    rig = next(rig_on(tmp_path, Recording("dev"), concurrency=4))
    rig.source.set(*people)
    start, started = threading.Thread.start, []

    def start_then_interrupt(thread: threading.Thread) -> None:
        start(thread)
        if thread.name.startswith("apply-"):
            started.append(thread)
            if len(started) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        rig.reconcile()
    assert not any(thread.is_alive() for thread in started), "a worker outlived the run"
    assert intents(tmp_path, "pending") == 0, "an action in flight was abandoned half done"


class Stopping(Interrupting):
    """The engine is told to stop (the daemon's SIGTERM) while the third person's ServiceAccount is being written."""

    def __init__(self) -> None:
        super().__init__()
        self.stop: Callable[[], None] = lambda: None

    def ensure_service_account(self, person_id: str, username: str) -> ServiceAccountRef:
        with self.lock:
            self.accounts += 1
            if self.accounts == 3:
                self.stop()
        return FakeCluster.ensure_service_account(self, person_id, username)


def test_a_stopped_engine_finishes_the_actions_in_flight_and_records_the_run_interrupted(tmp_path: Path):
    people = [person(str(n), f"dev{n:02d}", "developers") for n in range(1, 31)]
    dev = Stopping()
    rig = next(rig_on(tmp_path, dev, concurrency=4))
    dev.stop = rig.engine.stop
    rig.source.set(*people)
    report = rig.reconcile()
    done = intents(tmp_path, "done")
    assert intents(tmp_path, "pending") == 0, "an action in flight was abandoned half done"
    assert 3 <= done < len(people), "the run went on after it was stopped"
    assert report.result == "interrupted" and not report.outcome.failed
    assert len(report.outcome.applied) == done and report.outcome.not_begun == len(people) - done
    assert report.summary()["not_begun"] == len(people) - done
    assert rig.engine.read_model.runs()[-1].result == "interrupted"
