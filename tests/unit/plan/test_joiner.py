"""A person the policy entitles, unknown to the ledger: issue a ServiceAccount, bindings and a token."""

from tests.unit.plan.builders import CLUSTER, EDIT_A, VIEW_B, kinds, person, plan


def test_entitled_newcomer_is_issued_with_every_granted_scope():
    result = plan((person(groups=("developers", "sre")),))
    assert kinds(result) == [("issue", "joiner", "1001")]
    action = result.actions[0]
    assert action.cluster == CLUSTER
    assert action.after == {EDIT_A, VIEW_B}
    assert set(action.create_bindings) == {EDIT_A, VIEW_B}
    assert action.new_token


def test_strictest_token_lifetime_wins_when_rules_overlap():
    action = plan((person(groups=("developers", "sre")),)).actions[0]
    assert action.access.token_ttl.total_seconds() == 3600


def test_newcomer_without_entitlement_gets_nothing():
    assert kinds(plan((person(groups=("sales",)),))) == []


def test_inactive_newcomer_gets_nothing():
    assert kinds(plan((person(active=False),))) == []
