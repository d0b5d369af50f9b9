"""A plan that would revoke beyond the thresholds is held until a human allows it."""

from dataclasses import replace

from syncd.core.model import KnownPerson
from syncd.core.plan import RevocationCounts
from syncd.core.settings import SafetySettings
from tests.unit.plan.builders import CLUSTER, account, cluster, kinds, known, person, plan

HOLDERS = tuple(known(str(1000 + n), f"user{n}") for n in range(20))
ACCOUNTS = cluster(*(account(p.id) for p in HOLDERS))
AT_MOST_TWO = SafetySettings(max_revocations=2, max_revocation_percent=100.0)


def without_token(people: tuple[KnownPerson, ...]) -> tuple[KnownPerson, ...]:
    """The same people with bindings on record but no credential: revoking them takes no access away."""
    return tuple(KnownPerson(p.id, p.source, p.username, {CLUSTER: replace(p.access[CLUSTER], credential=None)})
                 for p in people)


def test_empty_source_revokes_nobody():
    result = plan((), HOLDERS[:2], cluster(account(HOLDERS[0].id), account(HOLDERS[1].id)))
    assert kinds(result) == []
    assert len(result.held) == 2 and "no people" in result.held[0].why


def test_a_targeted_read_without_its_person_still_holds_everyone_else():
    # The push source read only the deleted person, who is gone; the source still holds 19 others.
    only = frozenset({HOLDERS[0].id})
    assert kinds(plan((), HOLDERS[:1], ACCOUNTS, only=only, population=19)) == [("revoke", "leaver", "1000")]
    emptied = plan((), HOLDERS[:1], ACCOUNTS, only=only, population=0)
    assert kinds(emptied) == [] and "no people" in emptied.held[0].why


def test_more_than_the_count_threshold_is_held():
    staying = tuple(person(p.id, p.username) for p in HOLDERS[3:])
    result = plan(staying, HOLDERS, ACCOUNTS, safety=AT_MOST_TWO)
    assert len(result.held) == 3
    assert [a for a in result.actions if a.kind == "revoke"] == []
    assert "max_revocations" in result.held[0].why


def test_more_than_the_percent_threshold_is_held():
    staying = tuple(person(p.id, p.username) for p in HOLDERS[:14])  # 6 of 20 leave: 30% > 25%
    result = plan(staying, HOLDERS, ACCOUNTS)
    assert kinds(result) == [] and len(result.held) == 6
    assert "max_revocation_percent" in result.held[0].why


def test_within_the_thresholds_is_applied():
    staying = tuple(person(p.id, p.username) for p in HOLDERS[:16])  # 4 of 20: 20%
    assert len(plan(staying, HOLDERS, ACCOUNTS).actions) == 4


def test_allow_mass_revocation_lets_it_through():
    result = plan((), HOLDERS[:3], ACCOUNTS, safety=AT_MOST_TWO, allow_mass_revocation=True)
    assert len([a for a in result.actions if a.kind == "revoke"]) == 3 and not result.held


def test_a_targeted_run_weighs_its_revocations_against_every_holder():
    # A push touching three leavers: the planner knows only them; the ledger counts every holder of the source.
    leaving = HOLDERS[:3]
    staying = tuple(person(p.id, p.username) for p in HOLDERS[3:])
    only = frozenset(p.id for p in leaving)
    of_ten = plan(staying, leaving, ACCOUNTS, only=only, counts=RevocationCounts(credential_holders=10))
    assert kinds(of_ten) == [] and len(of_ten.held) == 3  # 30% > 25%
    assert "max_revocation_percent" in of_ten.held[0].why
    of_forty = plan(staying, leaving, ACCOUNTS, only=only, counts=RevocationCounts(credential_holders=40))
    assert len(of_forty.actions) == 3 and not of_forty.held


def test_people_without_a_credential_do_not_count_toward_the_count_threshold():
    leaving = (HOLDERS[0], *without_token(HOLDERS[1:3]))  # three leavers; one held a token
    result = plan((), leaving, ACCOUNTS, only=frozenset(p.id for p in leaving), population=17,
                  safety=AT_MOST_TWO, counts=RevocationCounts(credential_holders=20))
    assert len(result.actions) == 3 and not result.held


def test_people_without_a_credential_do_not_count_toward_the_percent_threshold():
    leaving = (HOLDERS[0], *without_token(HOLDERS[1:10]))  # ten leavers; one of 12 holders loses access: 8%
    result = plan((), leaving, ACCOUNTS, only=frozenset(p.id for p in leaving), population=10,
                  counts=RevocationCounts(credential_holders=12))
    assert len(result.actions) == 10 and not result.held


def test_holders_revoked_in_the_window_count_on_both_sides_of_the_share():
    # 3 revoked lately + this one, of the 12 holders there are now and the 3 there were: 4 of 15 = 27%.
    result = plan((), HOLDERS[:1], ACCOUNTS, only=frozenset({HOLDERS[0].id}), population=19,
                  counts=RevocationCounts(recent_revocations=3, credential_holders=12))
    assert kinds(result) == [] and "27% of credential holders" in result.held[0].why


def test_the_share_of_holders_never_passes_100_percent():
    leaving = (HOLDERS[0], *without_token(HOLDERS[1:3]))
    result = plan((), leaving, ACCOUNTS, only=frozenset(p.id for p in leaving), population=5,
                  counts=RevocationCounts(recent_revocations=10, credential_holders=1))
    assert "100% of credential holders" in result.held[0].why
