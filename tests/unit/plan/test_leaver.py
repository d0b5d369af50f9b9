"""A known person missing from a complete snapshot: revoke, bindings first."""

from tests.unit.plan.builders import EDIT_A, account, binding, cluster, kinds, known, person, plan


def test_person_gone_from_the_source_is_revoked():
    result = plan((person("2002", "bob"),), (known(), known("2002", "bob")), cluster(account(), account("2002")))
    assert ("revoke", "leaver", "1001") in kinds(result)
    action = next(a for a in result.actions if a.person_id == "1001")
    assert action.delete_bindings == (binding("1001", EDIT_A),)
    assert action.token_secrets == ("syncd-1001-abcde",)
    assert action.before == {EDIT_A} and action.after == frozenset()


def test_person_of_another_source_is_not_ours_to_revoke():
    result = plan((person("2002", "bob"),), (known("2002", "bob"), known(source="scim")),
                  cluster(account(), account("2002")))
    assert kinds(result) == []
