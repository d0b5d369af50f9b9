"""The ledger's event log is a hash chain: any edit or deletion is found."""

import sqlite3

from syncd.ledger import Event, Ledger
from syncd.model import RoleKind, Scope


def ledger_with_events(tmp_path, count=3):
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    for n in range(count):
        ledger.record("run1", Event(f"p{n}", f"user{n}", "issue", "joiner", cluster="dev",
                                    after=frozenset({Scope("a", RoleKind.CLUSTER_ROLE, "edit")})))
    return ledger


def test_intact_chain_verifies(tmp_path):
    ledger = ledger_with_events(tmp_path)
    assert ledger.verify() is None
    assert [e.seq for e in ledger.events()] == [1, 2, 3]
    assert ledger.events()[1].prev_hash == ledger.events()[0].hash


def test_edited_event_is_the_first_broken_link(tmp_path):
    ledger = ledger_with_events(tmp_path)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.execute("UPDATE event SET reason = 'mover' WHERE seq = 2")
    assert ledger.verify() == 2


def test_deleted_event_breaks_the_next_link(tmp_path):
    ledger = ledger_with_events(tmp_path)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.execute("DELETE FROM event WHERE seq = 2")
    assert ledger.verify() == 3


def test_filters_by_person_and_run(tmp_path):
    ledger = ledger_with_events(tmp_path)
    ledger.record("run2", Event("p1", "user1", "revoke", "leaver", cluster="dev"))
    assert [e.action for e in ledger.events(person="user1")] == ["issue", "revoke"]
    assert [e.person_id for e in ledger.events(run_id="run2")] == ["p1"]
