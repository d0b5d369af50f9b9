"""An older read never lands after a newer one, so a full read still in flight cannot give back access that a later
change took away: in one process the runs of a source go from read to apply one at a time; a run that finds
another process applied a read of its source meanwhile reads again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from syncd.config import load_settings
from syncd.core.model import Snapshot, person_key
from syncd.ports import Source
from syncd.runtime.engine import Engine, RunReport
from tests.integration.conftest import World

pytestmark = pytest.mark.kube

ALICE = {"id": "1001", "username": "alice", "groups": "developers"}


class HeldFirstRead:
    """The source's first read sees the source at once but hands its snapshot over only when released."""

    def __init__(self, inner: Source) -> None:
        self.inner, self.name = inner, inner.name
        self.seen, self.release = threading.Event(), threading.Event()

    def read(self) -> Snapshot:
        snapshot = self.inner.read()
        if not self.seen.is_set():
            self.seen.set()
            assert self.release.wait(60)
        return snapshot

    def close(self) -> None:
        self.inner.close()


@contextmanager
def full_run_holding_an_old_read(world: World) -> Iterator[tuple[Engine, dict[str, RunReport]]]:
    """Alice has access; a full run reads her as active and waits while the block changes things; then it goes
    on, and its report lands in the yielded dict under `full`."""
    world.write_people(ALICE)
    world.reconcile()
    with Engine.from_settings(load_settings(world.config)) as engine:
        source = engine.sources["hr"] = HeldFirstRead(engine.sources["hr"])
        reports: dict[str, RunReport] = {}
        full = threading.Thread(target=lambda: reports.update(full=engine.reconcile("hr")[0]))
        full.start()
        assert source.seen.wait(30), "the full run read alice as active"
        yield engine, reports
        source.release.set()
        full.join(timeout=120)


def test_a_full_read_in_flight_does_not_undo_a_later_revocation(world: World):
    with full_run_holding_an_old_read(world) as (engine, reports):
        world.write_people(ALICE | {"active": "false"})  # then she is disabled, and a targeted run starts
        targeted = threading.Thread(
            target=lambda: reports.update(targeted=engine.reconcile("hr", only=frozenset({"1001"}))[0]))
        targeted.start()
        targeted.join(timeout=3)
        assert targeted.is_alive(), "the targeted run went ahead while an older read of its source was in flight"
    targeted.join(timeout=120)
    assert reports["full"].plan is not None and not reports["full"].plan.actions
    assert [(str(a.kind), str(a.reason)) for a in reports["targeted"].plan.actions] == [("revoke", "disabled")]
    assert world.ours("rolebindings", person_key("1001")) == []


def test_a_read_older_than_another_process_apply_is_read_again(world: World):
    with full_run_holding_an_old_read(world) as (_, reports):
        world.write_people(ALICE | {"active": "false"})  # another process reads her disabled and revokes her
        assert [(a["kind"], a["reason"]) for a in world.reconcile()["actions"]] == [("revoke", "disabled")]
    assert reports["full"].plan is not None and not reports["full"].plan.actions, "the older read was applied"
    assert world.ours("rolebindings", person_key("1001")) == []
