"""The read model's contract, run against every backend: what the planner, the engine and the CLI read back is
what the journal wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.core.model import Identity
from syncd.core.usage import DayUsage
from syncd.ports import Event, NewCredential
from tests.ledger.conftest import EDIT_A, Ledger, record_events


def test_filters_by_person_and_run(ledger: Ledger):
    record_events(ledger)
    ledger.journal.record("run2", Event("p1", "user1", "revoke", "leaver", cluster="dev"))
    assert [e.action for e in ledger.read_model.events(person="user1")] == ["issue", "revoke"]
    assert [e.person_id for e in ledger.read_model.events(run_id="run2")] == ["p1"]


def test_a_sweep_reads_back_the_people_of_one_source_as_last_recorded(ledger: Ledger):
    alice = Identity("1001", "alice", "alice@example.org", "Alice", frozenset({"developers", "sre"}),
                     attributes={"department": "platform"})
    for source, person in (("hr", alice), ("hr", Identity("1002", "bob", active=False)),
                           ("idp", Identity("u1", "carl"))):
        granted = Event(person.id, person.username, "issue", "joiner", cluster="dev", after=frozenset({EDIT_A}))
        ledger.journal.record_delivery(None, source, person, granted, "", None)
    identities = ledger.read_model.identities
    assert sorted(identities("hr"), key=lambda i: i.id) == [alice, Identity("1002", "bob", active=False)]
    assert [i.attributes for i in sorted(ledger.read_model.identities("hr"), key=lambda i: i.id)] == [
        {"department": "platform"}, {}]  # what the policy matches on, so the sweep can judge everyone
    # bob's last access: he is gone from the ledger's people
    bob_left = Event("1002", "bob", "revoke", "disabled", cluster="dev")
    ledger.journal.record_revocation(None, bob_left, remove_access=True)
    assert ledger.read_model.identities("hr") == (alice,)


def test_a_mark_tells_whether_a_source_changed_anyone_since(ledger: Ledger):
    assert ledger.read_model.last_seq() == 0
    hr, idp = ledger.journal.start_run("hr", dry_run=False), ledger.journal.start_run("idp", dry_run=False)
    ledger.journal.record(hr, Event("p1", "ann", "issue", "joiner", cluster="dev"))
    mark = ledger.read_model.last_seq()
    ledger.journal.record(idp, Event("u1", "carl", "revoke", "leaver", cluster="dev"))  # another source
    ledger.journal.record(hr, Event("p2", "bob", "revoke", "leaver", cluster="dev", result="held"))  # changed nothing
    ledger.journal.record(hr, Event("p1", "ann", "confirm-revocation", "token-rejected", cluster="dev"))
    reads = ledger.read_model
    assert reads.last_seq() == mark + 3 and not reads.source_changed_since("hr", mark)
    assert ledger.read_model.source_changed_since("idp", mark)
    ledger.journal.record(hr, Event("p3", "cid", "revoke", "disabled", cluster="dev"))
    assert reads.source_changed_since("hr", mark) and not reads.source_changed_since("hr", reads.last_seq())


def test_the_planner_reads_back_people_access_and_credentials(ledger: Ledger):
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    identity = Identity("1001", "alice", groups=frozenset({"developers"}))
    ledger.journal.record_token("hr", identity, "dev", frozenset({EDIT_A}),
                                NewCredential("syncd-1001-x", "sha256:aa", issued, issued + timedelta(hours=8)),
                                kubeconfig="", grace=None, reason="joiner")
    issue = Event("1001", "alice", "issue", "joiner", cluster="dev", after=frozenset({EDIT_A}))
    ledger.journal.record_delivery(None, "hr", identity, issue, "/k/alice/dev.kubeconfig", None)
    [(person_id, alice)] = ledger.read_model.known_people().items()
    assert (person_id, alice.username, alice.source) == ("1001", "alice", "hr")
    access = alice.access["dev"]
    assert access.scopes == frozenset({EDIT_A})
    assert (access.credential.fingerprint, access.credential.expires_at) == ("sha256:aa", issued + timedelta(hours=8))

    ledger.journal.record_token("hr", identity, "dev", frozenset({EDIT_A}),
                                NewCredential("syncd-1001-y", "sha256:bb", issued, issued + timedelta(hours=8)),
                                kubeconfig="", grace=timedelta(hours=1), reason="rotation-due")
    access = ledger.read_model.known_people()["1001"].access["dev"]
    assert access.credential.fingerprint == "sha256:bb"
    assert [c.fingerprint for c in access.retiring] == ["sha256:aa"]

    ledger.journal.record_revocation(None, Event("1001", "alice", "revoke", "exposed", cluster="dev"),
                                     remove_access=True)
    assert ledger.read_model.known_people() == {}
    states = sorted((row.fingerprint, row.state) for row, _, _ in ledger.read_model.credentials(include_revoked=True))
    assert states == [("sha256:aa", "revoked"), ("sha256:bb", "revoked")]


def test_a_targeted_read_returns_only_the_named_people_and_counts_every_holder(ledger: Ledger):
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    for n, source in enumerate(("hr", "hr", "hr", "contractors")):
        pid = f"{1001 + n}"
        ledger.journal.record_token(source, Identity(pid, f"user{n}"), "dev", frozenset({EDIT_A}),
                                    NewCredential(f"syncd-{pid}-x", f"sha256:{n}", issued, issued + timedelta(hours=8)),
                                    kubeconfig="", grace=None, reason="joiner")
    # 1003's credential is replaced, and the new one never delivered: only the retiring one is left.
    ledger.journal.record_token("hr", Identity("1003", "user2"), "dev", frozenset({EDIT_A}),
                                NewCredential("syncd-1003-y", "sha256:new", issued, issued + timedelta(hours=8)),
                                kubeconfig="", grace=timedelta(hours=1), reason="rotation-due")
    ledger.journal.undo_credential("1003", "dev", "sha256:new", delivered=None)
    assert set(ledger.read_model.known_people(frozenset({"1002", "1004", "nobody"}))) == {"1002", "1004"}
    assert ledger.read_model.known_people(frozenset()) == {}
    assert ledger.read_model.known_people(frozenset({"1002"}))["1002"] == ledger.read_model.known_people()["1002"]
    # A credentials run after a long outage can name everyone: more ids than a database takes in one query.
    many = frozenset({"1001", "1004", *(f"gone-{n}" for n in range(70_000))})
    assert set(ledger.read_model.known_people(many)) == {"1001", "1004"}
    assert ledger.read_model.credential_holders("hr") == 2  # 1003's only credential is retiring
    assert ledger.read_model.credential_holders("contractors") == 1


def test_the_safety_window_counts_holders_revoked_since_a_human_last_approved(ledger: Ledger):
    since = datetime.now(UTC) - timedelta(minutes=1)
    before = ledger.journal.start_run("idp", dry_run=False)
    ledger.journal.record(before, Event("u0", "al", "revoke", "disabled", cluster="dev", fingerprint="sha256:aa"))
    assert ledger.read_model.recent_revocations("idp", since) == 1
    approved = ledger.journal.start_run("idp", dry_run=False, approved=True)
    for n in range(5):  # a held batch a human let through, after seeing what was revoked before it
        ledger.journal.record(approved, Event(f"m{n}", f"m{n}", "revoke", "leaver", cluster="dev",
                                              fingerprint="sha256:bb"))
    after = ledger.journal.start_run("idp", dry_run=False)
    ledger.journal.record(after, Event("u1", "ann", "revoke", "disabled", cluster="dev", fingerprint="sha256:cc"))
    ledger.journal.record(after, Event("u2", "bob", "revoke", "disabled", cluster="dev"))  # held no credential
    ledger.journal.record(after, Event("u3", "cat", "revoke", "disabled", cluster="dev", result="held"))
    assert ledger.read_model.recent_revocations("idp", since) == 1


def test_held_revocations_are_the_people_still_waiting_on_a_hold(ledger: Ledger):
    pushed, other = ledger.journal.start_run("idp", dry_run=False), ledger.journal.start_run("hr", dry_run=False)
    for person in ("u1", "u2", "u3"):
        ledger.journal.record(pushed, Event(person, person, "revoke", "disabled", cluster="dev", result="held"))
    ledger.journal.record(pushed, Event("u1", "u1", "revoke", "disabled", cluster="dev"))  # applied since
    ledger.journal.record(pushed, Event("u2", "u2", "revoke", "disabled", cluster="prod"))  # another cluster
    ledger.journal.record(other, Event("p1", "p1", "revoke", "leaver", cluster="dev", result="held"))
    assert ledger.read_model.held_revocations("idp") == {"u2", "u3"}
    assert ledger.read_model.held_revocations("hr") == {"p1"}


def test_an_access_keeps_the_time_it_was_granted_through_refreshes(ledger: Ledger):
    identity, issued = Identity("1001", "alice"), datetime.now(UTC)
    for secret in ("syncd-1001-x", "syncd-1001-y"):
        ledger.journal.record_token("hr", identity, "dev", frozenset({EDIT_A}),
                                    NewCredential(secret, f"sha256:{secret}", issued, issued + timedelta(hours=8)),
                                    kubeconfig="", grace=timedelta(minutes=5), reason="expiring")
        granted = ledger.read_model.known_people()["1001"].access["dev"].granted_at
        assert granted is not None and abs(granted - issued) < timedelta(minutes=1)
        if secret == "syncd-1001-x":
            first = granted
    assert granted == first


def test_an_idle_revocation_suspends_the_access_until_resumed(ledger: Ledger):
    identity, issued = Identity("1001", "alice"), datetime.now(UTC)
    ledger.journal.record_token("hr", identity, "dev", frozenset({EDIT_A}),
                                NewCredential("syncd-1001-x", "sha256:aa", issued, issued + timedelta(hours=8)),
                                kubeconfig="", grace=None, reason="joiner")
    ledger.journal.record_revocation("run1", Event("1001", "alice", "revoke", "idle", cluster="dev"),
                                     remove_access=True, suspend=True)
    ((pid, username, cluster, since),) = ledger.read_model.suspensions()
    assert (pid, username, cluster) == ("1001", "alice", "dev") and abs(since - issued) < timedelta(minutes=1)
    assert ledger.read_model.known_people() == {}  # the access is gone; the suspension keeps it from coming back
    assert ledger.journal.resume(None, Event("1001", "alice", "resume", "back from leave", cluster=None)) == ["dev"]
    assert ledger.read_model.suspensions() == []
    assert [(e.action, e.reason, e.cluster) for e in ledger.read_model.events()][-1] == \
        ("resume", "back from leave", "dev")
    assert ledger.read_model.verify() is None
    assert ledger.journal.resume(None, Event("1001", "alice", "resume", "again", cluster=None)) == []


def test_use_that_names_a_recorded_token_is_kept_by_its_jti_and_any_other_under_no_token(ledger: Ledger):
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    alice = Identity("1001", "alice")
    ledger.journal.record_token("hr", alice, "dev", frozenset({EDIT_A}),
                                NewCredential("syncd-1001-x", "sha256:aa", issued, issued + timedelta(hours=8),
                                              jti="jti-a"), kubeconfig="", grace=None, reason="joiner")
    [(row, _, _)] = ledger.read_model.credentials()
    assert row.jti == "jti-a"
    at = {jti: issued + timedelta(hours=hour) for hour, jti in ((1, "jti-a"), (2, "jti-forgotten"), (3, ""))}
    ledger.journal.record_usage({("1001", "dev", issued.date(), jti): DayUsage(first=when, last=when, requests=1)
                                 for jti, when in at.items()})
    assert ledger.read_model.last_used_by_token() == {("1001", "dev"): {"jti-a": at["jti-a"], "": at[""]}}


def test_mass_holds_are_the_people_the_limits_hold_in_the_window_until_a_human_approves(ledger: Ledger):
    since = datetime.now(UTC) - timedelta(minutes=1)
    why = "60% of credential holders would lose access, ...; pass --allow-mass-revocation if that is intended"
    burst = ledger.journal.start_run("idp", dry_run=False)
    for person in ("u1", "u2", "u3"):
        ledger.journal.record(burst, Event(person, person, "revoke", "disabled", cluster="dev", result="held",
                                           error=why))
    ledger.journal.record(burst, Event("u1", "u1", "revoke", "disabled", cluster="dev"))  # applied since
    ledger.journal.record(burst, Event("p1", "p1", "revoke", "leaver", cluster="dev", result="held",
                                       error="the source read was partial; nothing is revoked from partial data"))
    assert ledger.read_model.mass_holds("idp", since) == {"u2", "u3"}
    assert ledger.read_model.mass_holds("idp", datetime.now(UTC) + timedelta(seconds=1)) == set()  # window past
    assert ledger.read_model.mass_holds("hr", since) == set()
    ledger.journal.start_run("idp", dry_run=False, approved=True)  # a human saw them
    assert ledger.read_model.mass_holds("idp", since) == set()


def test_confirmed_rejections_are_recorded_once_each_in_the_order_given(ledger: Ledger):
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    for person_id, name, fingerprint in (("1001", "alice", "sha256:aa"), ("1002", "bob", "sha256:bb")):
        ledger.journal.record_token("hr", Identity(person_id, name), "dev", frozenset({EDIT_A}),
                                    NewCredential(f"syncd-{person_id}-x", fingerprint, issued,
                                                  issued + timedelta(hours=8)),
                                    kubeconfig="", grace=None, reason="joiner")
        ledger.journal.record_revocation("run1", Event(person_id, name, "revoke", "leaver", cluster="dev"),
                                         remove_access=True)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ledger.journal.confirm_rejected("run1", ["sha256:bb", "sha256:unknown", "sha256:aa", "sha256:bb"], at)
    confirmations = [(e.person_id, e.username, e.cluster, e.fingerprint) for e in ledger.read_model.events()
                     if e.action == "confirm-revocation"]
    assert confirmations == [("1002", "bob", "dev", "sha256:bb"), ("1001", "alice", "dev", "sha256:aa")]
    rejected = {row.fingerprint: row.rejected_at for row, _, _ in ledger.read_model.credentials(include_revoked=True)}
    assert {fingerprint: when.replace(tzinfo=UTC) for fingerprint, when in rejected.items()} == \
        {"sha256:aa": at, "sha256:bb": at}
    assert ledger.read_model.verify() is None


def test_live_fingerprints_are_the_active_and_retiring_tokens_and_read_past_a_writer(ledger: Ledger):
    issued = datetime.now(UTC)
    alice = Identity("1001", "alice")

    def issue(name: str, grace: timedelta | None) -> None:
        ledger.journal.record_token("hr", alice, "dev", frozenset({EDIT_A}),
                                    NewCredential(name, f"sha256:{name}", issued, issued + timedelta(hours=8)),
                                    kubeconfig="", grace=grace, reason="rotation")

    issue("one", None)
    issue("two", timedelta(minutes=5))  # one retires
    issue("three", None)  # two is revoked now
    assert ledger.read_model.live_fingerprints("1001", "dev") == {"sha256:one", "sha256:three"}
    assert ledger.read_model.live_fingerprints("1001", "prod") == set()
    assert ledger.read_model.live_fingerprints("1002", "dev") == set()

    # A write transaction holding the write lock: the read sees what was committed, without waiting for it.
    with ledger.database.session() as session:
        ledger.journal._save_identity(session.connection(), "hr", Identity("1002", "bob"))  # noqa: SLF001
        assert ledger.read_model.live_fingerprints("1001", "dev") == {"sha256:one", "sha256:three"}
