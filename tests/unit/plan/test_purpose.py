"""A credential's purpose (the policy rules that grant it) follows the policy: the same scopes granted by other
rules are a rescope of the record alone; a purpose never recorded waits for the next change or token."""

from tests.unit.plan.builders import EDIT_A, POLICY, account, cluster, credential, kinds, known, person, plan


def test_the_same_scope_granted_by_another_rule_rescopes_the_purpose_alone():
    recorded = credential(secret="syncd-1001-abcde", purpose=frozenset({(EDIT_A, "contractors")}))
    result = plan((person(),), (known(cred=recorded),), cluster(account()))
    assert kinds(result) == [("rescope", "purpose", "1001")]
    action = result.actions[0]
    assert action.access is not None and action.access.purpose == {(EDIT_A, "developers")}
    assert action.create_bindings == () and action.delete_bindings == () and not action.new_token


def test_an_unchanged_purpose_plans_nothing():
    recorded = credential(secret="syncd-1001-abcde", purpose=POLICY.access_for(person())["dev"].purpose)
    assert kinds(plan((person(),), (known(cred=recorded),), cluster(account()))) == []


def test_a_purpose_never_recorded_plans_nothing_of_itself():
    assert kinds(plan((person(),), (known(),), cluster(account()))) == []


def test_a_joiner_is_issued_with_the_purpose_of_the_rules_that_match():
    result = plan((person(),), (), cluster())
    assert result.actions[0].access.purpose == {(EDIT_A, "developers")}
