"""Idle access (`usage.idle_after`): with `idle_action: suspend` revoked (reason idle) like any revocation, and a
suspended access planned nothing until resumed; with `report` only listed."""

from datetime import timedelta

from syncd.core.model import person_key
from syncd.core.settings import SafetySettings
from tests.unit.plan.builders import (
    CLUSTER,
    EDIT_A,
    NOW,
    account,
    binding,
    cluster,
    credential,
    kinds,
    known,
    person,
    plan,
)

IDLE_AFTER = timedelta(days=30)
LONG_AGO = NOW - timedelta(days=90)
ALICE = person()
SUSPENDED = frozenset({("1001", CLUSTER)})


def idle_alice(**options):
    return plan((ALICE,), (known(granted_at=LONG_AGO),), cluster(account()), idle_after=IDLE_AFTER, **options)


def test_an_idle_access_is_revoked_with_reason_idle_bindings_first():
    result = idle_alice(suspend_idle=True)
    assert kinds(result) == [("revoke", "idle", "1001")]
    (action,) = result.actions
    assert action.delete_bindings == (binding("1001", EDIT_A),) and action.token_secrets == ("syncd-1001-abcde",)
    assert [(idle.person_id, idle.cluster, idle.since) for idle in result.idle] == [("1001", CLUSTER, LONG_AGO)]


def test_an_idle_access_is_only_listed_when_the_action_is_report():
    result = idle_alice(suspend_idle=False)
    assert kinds(result) == []
    assert [idle.person_id for idle in result.idle] == ["1001"]


def test_report_still_refreshes_an_idle_access():
    """Reporting changes nothing: the token's lifecycle goes on."""
    people = (known(cred=credential(issued=NOW - timedelta(hours=7)), granted_at=LONG_AGO),)
    result = plan((ALICE,), people, cluster(account()), idle_after=IDLE_AFTER)
    assert kinds(result) == [("refresh", "expiring", "1001")]


def test_an_access_used_lately_is_not_idle():
    result = idle_alice(suspend_idle=True, last_use={(person_key("1001"), CLUSTER): NOW - timedelta(days=1)})
    assert kinds(result) == [] and result.idle == ()


def test_use_on_another_cluster_does_not_count():
    result = idle_alice(suspend_idle=True, last_use={(person_key("1001"), "prod"): NOW - timedelta(days=1)})
    assert kinds(result) == [("revoke", "idle", "1001")]


def test_a_suspended_access_the_source_still_entitles_is_not_issued_again():
    """Suspended: revoked, its access forgotten by the ledger; a joiner's issue is not planned for it."""
    assert kinds(plan((ALICE,), (), suspended=SUSPENDED)) == []


def test_a_suspended_access_is_never_refreshed():
    """A token due for refresh on a suspended access (its revocation could not remove it all) is not refreshed:
    what is left is revoked."""
    people = (known(cred=credential(issued=NOW - timedelta(hours=7))),)
    assert kinds(plan((ALICE,), people, cluster(account()), suspended=SUSPENDED)) == [("revoke", "idle", "1001")]


def test_objects_found_again_for_a_suspended_access_are_removed_not_repaired():
    assert kinds(plan((ALICE,), (), cluster(account()), suspended=SUSPENDED)) == [("revoke", "idle", "1001")]


def test_a_suspension_lasts_whatever_idle_after_says_now():
    """The suspension holds until resumed, even with usage.idle_after unset since."""
    assert kinds(plan((ALICE,), (), suspended=SUSPENDED, idle_after=None)) == []


def test_a_suspended_person_who_leaves_is_a_leaver():
    result = plan((person("2002", "bob"),), (known(), known("2002", "bob")), cluster(account(), account("2002")),
                  suspended=SUSPENDED)
    assert kinds(result) == [("revoke", "leaver", "1001")]


def test_idle_revocations_count_toward_the_mass_revocation_guard():
    people = [person(str(n), f"user{n}") for n in range(3)]
    result = plan(tuple(people), tuple(known(p.id, p.username, granted_at=LONG_AGO) for p in people),
                  cluster(*(account(p.id) for p in people)), idle_after=IDLE_AFTER, suspend_idle=True,
                  safety=SafetySettings(max_revocations=2, max_revocation_percent=100))
    assert kinds(result) == []
    assert [(str(h.action.reason), h.unsafe) for h in result.held] == [("idle", True)] * 3


def test_a_sweep_suspends_nobody():
    """The sweep plans from the ledger's record, not from use: idle revocations wait for the runs that read."""
    result = plan((ALICE,), (known(granted_at=LONG_AGO),), cluster(account()), idle_after=IDLE_AFTER,
                  suspend_idle=True, sweeping=True)
    assert kinds(result) == []
