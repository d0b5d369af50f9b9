"""The ledger contract, run against every backend: a tamper-evident event chain, one apply lock across processes,
held actions recorded once, and what the planner reads back being what was written."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from syncd.adapters.ledger import Event, Ledger
from syncd.core.model import Identity, RoleKind, Scope

EDIT_A = Scope("a", RoleKind.CLUSTER_ROLE, "edit")


def record_events(ledger: Ledger, count: int = 3, run_id: str = "run1") -> None:
    for n in range(count):
        ledger.record(run_id, Event(f"p{n}", f"user{n}", "issue", "joiner", cluster="dev", after=frozenset({EDIT_A})))


def tamper(ledger: Ledger, sql: str) -> None:
    with ledger.engine.begin() as connection:
        connection.execute(text(sql))


def test_intact_chain_verifies(ledger: Ledger):
    record_events(ledger)
    assert ledger.verify() is None
    events = ledger.events()
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[1].prev_hash == events[0].hash


def test_edited_event_is_the_first_broken_link(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "UPDATE event SET reason = 'mover' WHERE seq = 2")
    assert ledger.verify() == "the hash chain breaks at event 2"


def test_deleted_event_breaks_the_next_link(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "DELETE FROM event WHERE seq = 2")
    assert ledger.verify() == "the hash chain breaks at event 3"


def test_a_cut_off_tail_is_missing_before_the_head_anchor(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "DELETE FROM event WHERE seq = 3")
    assert ledger.verify() == "event 3 is missing: the chain ends before its head anchor"


def test_events_written_after_a_cut_stay_a_break_in_the_chain(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "DELETE FROM event WHERE seq = 3")
    record_events(ledger, count=1)
    assert ledger.verify() == "the hash chain breaks at event 4"


def test_a_cut_off_tail_with_its_head_anchor_moved_back_is_found_by_the_runs_recorded_heads(ledger: Ledger):
    run_id = ledger.start_run("hr", dry_run=False)
    record_events(ledger, run_id=run_id)
    ledger.finish_run(run_id, "ok", {})
    tamper(ledger, "DELETE FROM event WHERE seq = 3")
    tamper(ledger, "UPDATE ledger_head SET seq = 2, hash = (SELECT hash FROM event WHERE seq = 2)")
    assert ledger.verify() == f"run {run_id} finished at event 3, which the chain lacks (it ends at event 2)"


def test_a_head_kept_outside_the_database_must_stay_in_the_chain(ledger: Ledger):
    record_events(ledger)
    kept = ledger.head()
    assert kept == (3, ledger.events()[-1].hash) and ledger.verify(kept) is None
    tamper(ledger, "DELETE FROM event WHERE seq = 3")
    tamper(ledger, "UPDATE ledger_head SET seq = 2, hash = (SELECT hash FROM event WHERE seq = 2)")
    assert ledger.verify() is None  # no run recorded a head: only the copy kept outside can tell
    assert ledger.verify(kept) == "the anchor given is event 3, which the chain lacks (it ends at event 2)"


def test_a_deleted_head_anchor_is_reported(ledger: Ledger):
    record_events(ledger)
    tamper(ledger, "DELETE FROM ledger_head")
    assert ledger.verify() == "the ledger's head anchor is missing"


def test_filters_by_person_and_run(ledger: Ledger):
    record_events(ledger)
    ledger.record("run2", Event("p1", "user1", "revoke", "leaver", cluster="dev"))
    assert [e.action for e in ledger.events(person="user1")] == ["issue", "revoke"]
    assert [e.person_id for e in ledger.events(run_id="run2")] == ["p1"]


def _write_events(url: str, writer: int, count: int) -> None:
    with Ledger(url) as ledger:
        for n in range(count):
            ledger.record(f"writer{writer}", Event(f"p{writer}-{n}", f"user{writer}-{n}", "issue", "joiner"))


def test_writers_in_several_processes_keep_one_unbroken_chain(ledger: Ledger, ledger_url: str):
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_write_events, args=(ledger_url, w, 25)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert [e.seq for e in ledger.events()] == list(range(1, 101))
    assert ledger.verify() is None


def _hold_the_apply_lock(url: str, journal: str, name: str) -> None:
    with Ledger(url) as ledger, ledger.exclusive():
        with open(journal, "a") as handle:
            handle.write(f"{name} in\n")
        time.sleep(0.3)
        with open(journal, "a") as handle:
            handle.write(f"{name} out\n")


def test_a_hold_is_recorded_once_while_it_lasts(ledger: Ledger):
    def held(person: str, reason: str = "leaver", cluster: str = "dev") -> Event:
        return Event(person, person, "revoke", reason, cluster=cluster, result="held", error="2 would lose access")

    assert ledger.record_holds("run1", [held("p1"), held("p2"), held("p1", cluster="prod")]) == 3
    assert ledger.record_holds("run2", [held("p1"), held("p2"), held("p1", cluster="prod")]) == 0
    assert ledger.record_holds("run3", [held("p1", reason="disabled"), held("p2")]) == 1  # held for another reason
    ledger.record("run4", Event("p2", "p2", "issue", "joiner", cluster="dev"))
    assert ledger.record_holds("run5", [held("p2")]) == 1  # a hold again after something else happened
    assert [(e.run_id, e.person_id, e.cluster) for e in ledger.events() if e.result == "held"] == [
        ("run1", "p1", "dev"), ("run1", "p2", "dev"), ("run1", "p1", "prod"), ("run3", "p1", "dev"),
        ("run5", "p2", "dev")]
    assert ledger.verify() is None


def test_a_sweep_reads_back_the_people_of_one_source_as_last_recorded(ledger: Ledger):
    alice = Identity("1001", "alice", "alice@example.org", "Alice", frozenset({"developers", "sre"}),
                     attributes={"department": "platform"})
    with ledger.session() as s:
        ledger.save_identity(s, "hr", alice)
        ledger.save_identity(s, "hr", Identity("1002", "bob", active=False))
        ledger.save_identity(s, "idp", Identity("u1", "carl"))
        ledger.save_access(s, "1002", "dev", frozenset({EDIT_A}), "")
    assert sorted(ledger.identities("hr"), key=lambda i: i.id) == [alice, Identity("1002", "bob", active=False)]
    assert [i.attributes for i in sorted(ledger.identities("hr"), key=lambda i: i.id)] == [
        {"department": "platform"}, {}]  # what the policy matches on, so the sweep can judge everyone
    with ledger.session() as s:
        ledger.remove_access(s, "1002", "dev")  # bob's last access: he is gone from the ledger's people
    assert ledger.identities("hr") == (alice,)


def test_a_mark_tells_whether_a_source_changed_anyone_since(ledger: Ledger):
    assert ledger.last_seq() == 0
    hr, idp = ledger.start_run("hr", dry_run=False), ledger.start_run("idp", dry_run=False)
    ledger.record(hr, Event("p1", "ann", "issue", "joiner", cluster="dev"))
    mark = ledger.last_seq()
    ledger.record(idp, Event("u1", "carl", "revoke", "leaver", cluster="dev"))  # another source
    ledger.record(hr, Event("p2", "bob", "revoke", "leaver", cluster="dev", result="held"))  # changed nothing
    ledger.record(hr, Event("p1", "ann", "confirm-revocation", "token-rejected", cluster="dev"))
    assert ledger.last_seq() == mark + 3 and not ledger.source_changed_since("hr", mark)
    assert ledger.source_changed_since("idp", mark)
    ledger.record(hr, Event("p3", "cid", "revoke", "disabled", cluster="dev"))
    assert ledger.source_changed_since("hr", mark) and not ledger.source_changed_since("hr", ledger.last_seq())


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


def test_the_planner_reads_back_people_access_and_credentials(ledger: Ledger):
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    with ledger.session() as s:
        ledger.save_identity(s, "hr", Identity("1001", "alice", groups=frozenset({"developers"})))
        ledger.save_access(s, "1001", "dev", frozenset({EDIT_A}), "/k/alice/dev.kubeconfig")
        ledger.add_credential(s, "1001", "dev", "syncd-1001-x", "sha256:aa", issued, issued + timedelta(hours=8))
    [(person_id, alice)] = ledger.known_people().items()
    assert (person_id, alice.username, alice.source) == ("1001", "alice", "hr")
    access = alice.access["dev"]
    assert access.scopes == frozenset({EDIT_A})
    assert (access.credential.fingerprint, access.credential.expires_at) == ("sha256:aa", issued + timedelta(hours=8))

    with ledger.session() as s:
        ledger.replace_credential(s, "1001", "dev", grace=timedelta(hours=1), reason="rotation-due")
        ledger.add_credential(s, "1001", "dev", "syncd-1001-y", "sha256:bb", issued, issued + timedelta(hours=8))
    access = ledger.known_people()["1001"].access["dev"]
    assert access.credential.fingerprint == "sha256:bb"
    assert [c.fingerprint for c in access.retiring] == ["sha256:aa"]

    with ledger.session() as s:
        ledger.revoke_credentials(s, "1001", "dev", reason="exposed")
        ledger.remove_access(s, "1001", "dev")
    assert ledger.known_people() == {}
    states = sorted((row.fingerprint, row.state) for row, _, _ in ledger.credentials(include_revoked=True))
    assert states == [("sha256:aa", "revoked"), ("sha256:bb", "revoked")]


def test_a_targeted_read_returns_only_the_named_people_and_counts_every_holder(ledger: Ledger):
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    with ledger.session() as s:
        for n, source in enumerate(("hr", "hr", "hr", "contractors")):
            pid = f"{1001 + n}"
            ledger.save_identity(s, source, Identity(pid, f"user{n}"))
            ledger.save_access(s, pid, "dev", frozenset({EDIT_A}), f"/k/user{n}/dev.kubeconfig")
            ledger.add_credential(s, pid, "dev", f"syncd-{pid}-x", f"sha256:{n}", issued, issued + timedelta(hours=8))
        ledger.replace_credential(s, "1003", "dev", grace=timedelta(hours=1), reason="rotation-due")
    assert set(ledger.known_people(frozenset({"1002", "1004", "nobody"}))) == {"1002", "1004"}
    assert ledger.known_people(frozenset()) == {}
    assert ledger.known_people(frozenset({"1002"}))["1002"] == ledger.known_people()["1002"]
    # A credentials run after a long outage can name everyone: more ids than a database takes in one query.
    many = frozenset({"1001", "1004", *(f"gone-{n}" for n in range(70_000))})
    assert set(ledger.known_people(many)) == {"1001", "1004"}
    assert ledger.credential_holders("hr") == 2  # 1003's only credential is retiring
    assert ledger.credential_holders("contractors") == 1


def test_a_dead_run_is_marked_interrupted_and_its_intents_settled_once(ledger: Ledger):
    killed = ledger.start_run("hr", dry_run=False)
    between_actions = ledger.start_run("hr", dry_run=False)  # died with no intent pending
    ledger.begin_intent(killed, Event("1001", "alice", "issue", "joiner", cluster="dev"))
    ledger.begin_intent(killed, Event("1003", "carol", "revoke", "leaver", cluster="dev"))
    finished = ledger.begin_intent(killed, Event("1002", "bob", "issue", "joiner", cluster="dev"))
    ledger.end_intent(finished, "done")

    sweep = ledger.start_run("hr", dry_run=False)
    assert {run.id for run in ledger.interrupt_dead_runs(sweep)} == {killed, between_actions}
    assert ledger.interrupt_dead_runs(sweep) == []
    alice, carol = ledger.interrupted_intents()
    ledger.settle_intent(sweep, alice, "finished")
    ledger.settle_intent(sweep, carol, "left-for-full-run")
    ledger.settle_intent(sweep, carol, "left-for-full-run")  # a sweep leaves it again: no second event
    assert [i.username for i in ledger.interrupted_intents()] == ["carol"]
    events = [(e.action, e.reason, e.username, e.result) for e in ledger.events(run_id=sweep)]
    assert sorted(events[:2]) == [("recover", "interrupted-run", "", "interrupted")] * 2
    assert events[2:] == [("recover", "interrupted-issue", "alice", "finished"),
                          ("recover", "interrupted-revoke", "carol", "left-for-full-run")]

    full = ledger.start_run("hr", dry_run=False)
    [carol] = ledger.interrupted_intents()
    ledger.settle_intent(full, carol, "replanned")
    assert ledger.interrupted_intents() == []
    results = {run.id: run.result for run in ledger.runs()}
    assert (results[killed], results[between_actions], results[sweep]) == ("interrupted", "interrupted", "running")


def test_the_safety_window_counts_holders_revoked_since_a_human_last_approved(ledger: Ledger):
    since = datetime.now(UTC) - timedelta(minutes=1)
    before = ledger.start_run("idp", dry_run=False)
    ledger.record(before, Event("u0", "al", "revoke", "disabled", cluster="dev", fingerprint="sha256:aa"))
    assert ledger.recent_revocations("idp", since) == 1
    approved = ledger.start_run("idp", dry_run=False, approved=True)
    for n in range(5):  # a held batch a human let through, after seeing what was revoked before it
        ledger.record(approved, Event(f"m{n}", f"m{n}", "revoke", "leaver", cluster="dev", fingerprint="sha256:bb"))
    after = ledger.start_run("idp", dry_run=False)
    ledger.record(after, Event("u1", "ann", "revoke", "disabled", cluster="dev", fingerprint="sha256:cc"))
    ledger.record(after, Event("u2", "bob", "revoke", "disabled", cluster="dev"))  # held no credential
    ledger.record(after, Event("u3", "cat", "revoke", "disabled", cluster="dev", result="held"))
    assert ledger.recent_revocations("idp", since) == 1


def test_held_revocations_are_the_people_still_waiting_on_a_hold(ledger: Ledger):
    pushed, other = ledger.start_run("idp", dry_run=False), ledger.start_run("hr", dry_run=False)
    for person in ("u1", "u2", "u3"):
        ledger.record(pushed, Event(person, person, "revoke", "disabled", cluster="dev", result="held"))
    ledger.record(pushed, Event("u1", "u1", "revoke", "disabled", cluster="dev"))  # applied since
    ledger.record(pushed, Event("u2", "u2", "revoke", "disabled", cluster="prod"))  # another cluster
    ledger.record(other, Event("p1", "p1", "revoke", "leaver", cluster="dev", result="held"))
    assert ledger.held_revocations("idp") == {"u2", "u3"}
    assert ledger.held_revocations("hr") == {"p1"}
