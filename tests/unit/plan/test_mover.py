"""A known person whose entitlements changed: rescope bindings, keep the token."""

from tests.unit.plan.builders import EDIT_A, VIEW_B, account, binding, cluster, kinds, known, person, plan


def test_added_group_adds_a_binding_and_keeps_the_token():
    result = plan((person(groups=("developers", "sre")),), (known(),), cluster(account()))
    assert kinds(result) == [("rescope", "mover", "1001")]
    action = result.actions[0]
    assert action.before == {EDIT_A} and action.after == {EDIT_A, VIEW_B}
    assert action.create_bindings == (VIEW_B,)
    assert action.delete_bindings == ()
    assert not action.new_token


def test_changed_group_removes_the_old_binding():
    result = plan((person(groups=("sre",)),), (known(),), cluster(account()))
    action = result.actions[0]
    assert (action.kind, action.reason) == ("rescope", "mover")
    assert action.create_bindings == (VIEW_B,)
    assert action.delete_bindings == (binding("1001", EDIT_A),)
