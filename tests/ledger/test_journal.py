"""The journal's contract, run against every backend: a tamper-evident event chain written by processes taking
turns, one apply lock across processes, held actions recorded once, and dead runs and their intents settled once."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from syncd.ports import Event
from tests.ledger.conftest import Ledger, record_events, tamper


def test_intact_chain_verifies(ledger: Ledger):
    record_events(ledger)
    assert ledger.read_model.verify() is None
    events = ledger.read_model.events()
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[1].prev_hash == events[0].hash


def test_edited_event_is_the_first_broken_link(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "UPDATE event SET reason = 'mover' WHERE seq = 2")
    assert ledger.read_model.verify() == "the hash chain breaks at event 2"


def test_deleted_event_breaks_the_next_link(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "DELETE FROM event WHERE seq = 2")
    assert ledger.read_model.verify() == "the hash chain breaks at event 3"


def test_a_cut_off_tail_is_missing_before_the_head_anchor(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "DELETE FROM event WHERE seq = 3")
    assert ledger.read_model.verify() == "event 3 is missing: the chain ends before its head anchor"


def test_events_written_after_a_cut_stay_a_break_in_the_chain(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "DELETE FROM event WHERE seq = 3")
    record_events(ledger, count=1)
    assert ledger.read_model.verify() == "the hash chain breaks at event 4"


def test_a_cut_off_tail_with_its_head_anchor_moved_back_is_found_by_the_runs_recorded_heads(ledger: Ledger):
    run_id = ledger.journal.start_run("hr", dry_run=False)
    record_events(ledger, run_id=run_id)
    ledger.journal.finish_run(run_id, "ok", {})
    tamper(ledger, "DELETE FROM event WHERE seq = 3")
    tamper(ledger, "UPDATE ledger_head SET seq = 2, hash = (SELECT hash FROM event WHERE seq = 2)")
    assert ledger.read_model.verify() == f"run {run_id} finished at event 3, which the chain lacks (it ends at event 2)"


def test_a_head_kept_outside_the_database_must_stay_in_the_chain(ledger: Ledger):
    record_events(ledger)
    kept = ledger.read_model.head()
    assert kept == (3, ledger.read_model.events()[-1].hash) and ledger.read_model.verify(kept) is None
    tamper(ledger, "DELETE FROM event WHERE seq = 3")
    tamper(ledger, "UPDATE ledger_head SET seq = 2, hash = (SELECT hash FROM event WHERE seq = 2)")
    assert ledger.read_model.verify() is None  # no run recorded a head: only the copy kept outside can tell
    assert ledger.read_model.verify(kept) == "the anchor given is event 3, which the chain lacks (it ends at event 2)"


def test_a_deleted_head_anchor_is_reported(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "DELETE FROM ledger_head")
    assert ledger.read_model.verify() == "the ledger's head anchor is missing"


def _write_events(url: str, writer: int, count: int) -> None:
    with Ledger.open(url) as ledger:
        for n in range(count):
            ledger.journal.record(f"writer{writer}", Event(f"p{writer}-{n}", f"user{writer}-{n}", "issue", "joiner"))


def test_writers_in_several_processes_keep_one_unbroken_chain(ledger: Ledger, ledger_url: str):
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_write_events, args=(ledger_url, w, 25)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert [e.seq for e in ledger.read_model.events()] == list(range(1, 101))
    assert ledger.read_model.verify() is None


def _hold_the_apply_lock(url: str, journal: str, name: str) -> None:
    with Ledger.open(url) as ledger, ledger.database.exclusive():
        with open(journal, "a") as handle:
            handle.write(f"{name} in\n")
        time.sleep(0.3)
        with open(journal, "a") as handle:
            handle.write(f"{name} out\n")


def test_the_apply_lock_excludes_other_processes(ledger: Ledger, ledger_url: str, tmp_path: Path):
    journal = tmp_path / "journal"
    spawn = multiprocessing.get_context("spawn")
    holders = [spawn.Process(target=_hold_the_apply_lock, args=(ledger_url, str(journal), f"p{n}")) for n in range(3)]
    for process in holders:
        process.start()
    for process in holders:
        process.join(timeout=60)
        assert process.exitcode == 0
    lines = journal.read_text().splitlines()
    assert len(lines) == 6
    for entered, left in zip(lines[::2], lines[1::2], strict=True):
        assert entered.endswith(" in") and left == entered.replace(" in", " out")


def test_a_hold_is_recorded_once_while_it_lasts(ledger: Ledger):
    def held(person: str, reason: str = "leaver", cluster: str = "dev") -> Event:
        return Event(person, person, "revoke", reason, cluster=cluster, result="held", error="2 would lose access")

    assert ledger.journal.record_holds("run1", [held("p1"), held("p2"), held("p1", cluster="prod")]) == 3
    assert ledger.journal.record_holds("run2", [held("p1"), held("p2"), held("p1", cluster="prod")]) == 0
    held_again = [held("p1", reason="disabled"), held("p2")]
    assert ledger.journal.record_holds("run3", held_again) == 1  # held for another reason
    ledger.journal.record("run4", Event("p2", "p2", "issue", "joiner", cluster="dev"))
    assert ledger.journal.record_holds("run5", [held("p2")]) == 1  # a hold again after something else happened
    assert [(e.run_id, e.person_id, e.cluster) for e in ledger.read_model.events() if e.result == "held"] == [
        ("run1", "p1", "dev"), ("run1", "p2", "dev"), ("run1", "p1", "prod"), ("run3", "p1", "dev"),
        ("run5", "p2", "dev")]
    assert ledger.read_model.verify() is None


def test_a_dead_run_is_marked_interrupted_and_its_intents_settled_once(ledger: Ledger):
    killed = ledger.journal.start_run("hr", dry_run=False)
    between_actions = ledger.journal.start_run("hr", dry_run=False)  # died with no intent pending
    _, _, finished, never_begun = ledger.journal.begin_intents(killed, [
        Event("1001", "alice", "issue", "joiner", cluster="dev"),
        Event("1003", "carol", "revoke", "leaver", cluster="dev"),
        Event("1002", "bob", "issue", "joiner", cluster="dev"),
        Event("1004", "dan", "issue", "joiner", cluster="dev")])
    ledger.journal.end_intents([finished], "done")
    ledger.journal.end_intents([never_begun], "not-begun")  # the run stopped before this action began

    sweep = ledger.journal.start_run("hr", dry_run=False)
    assert {run.id for run in ledger.journal.interrupt_dead_runs(sweep)} == {killed, between_actions}
    assert ledger.journal.interrupt_dead_runs(sweep) == []
    alice, carol = ledger.read_model.interrupted_intents()
    ledger.journal.settle_intent(sweep, alice, "finished")
    ledger.journal.settle_intent(sweep, carol, "left-for-full-run")
    ledger.journal.settle_intent(sweep, carol, "left-for-full-run")  # a sweep leaves it again: no second event
    assert [i.username for i in ledger.read_model.interrupted_intents()] == ["carol"]
    events = [(e.action, e.reason, e.username, e.result) for e in ledger.read_model.events(run_id=sweep)]
    assert sorted(events[:2]) == [("recover", "interrupted-run", "", "interrupted")] * 2
    assert events[2:] == [("recover", "interrupted-issue", "alice", "finished"),
                          ("recover", "interrupted-revoke", "carol", "left-for-full-run")]

    full = ledger.journal.start_run("hr", dry_run=False)
    [carol] = ledger.read_model.interrupted_intents()
    ledger.journal.settle_intent(full, carol, "replanned")
    assert ledger.read_model.interrupted_intents() == []
    results = {run.id: run.result for run in ledger.read_model.runs()}
    assert (results[killed], results[between_actions], results[sweep]) == ("interrupted", "interrupted", "running")
