"""Drift: what is in the cluster differs from what the ledger says we made. Put it back."""

from tests.unit.plan.builders import EDIT_A, VIEW_B, account, binding, cluster, kinds, known, person, plan


def test_binding_deleted_by_hand_is_recreated():
    result = plan((person(),), (known(),), cluster(account(bindings=())))
    assert kinds(result) == [("repair", "drift", "1001")]
    assert result.actions[0].create_bindings == (EDIT_A,)
    assert not result.actions[0].new_token


def test_binding_whose_subjects_were_edited_is_replaced():
    edited = binding("1001", EDIT_A, intact=False)
    result = plan((person(),), (known(),), cluster(account(bindings=(edited,))))
    action = result.actions[0]
    assert (action.kind, action.reason) == ("repair", "drift")
    assert action.delete_bindings == (edited,) and action.create_bindings == (EDIT_A,)


def test_binding_that_now_points_at_another_role_is_replaced():
    wrong = binding("1001", VIEW_B, name=binding("1001", EDIT_A).name)
    action = plan((person(),), (known(),), cluster(account(bindings=(wrong,)))).actions[0]
    assert action.delete_bindings == (wrong,) and action.create_bindings == (EDIT_A,)


def test_extra_binding_under_our_labels_is_removed():
    extra = binding("1001", VIEW_B)
    action = plan((person(),), (known(),), cluster(account(bindings=(binding("1001", EDIT_A), extra)))).actions[0]
    assert (action.kind, action.delete_bindings, action.create_bindings) == ("repair", (extra,), ())


def test_missing_service_account_means_a_new_token():
    result = plan((person(),), (known(),), cluster(account(service_account=False)))
    assert kinds(result) == [("repair", "drift", "1001")]
    assert result.actions[0].new_token


def test_token_secret_deleted_by_hand_means_a_new_token():
    result = plan((person(),), (known(),), cluster(account(secrets=())))
    assert kinds(result) == [("repair", "drift", "1001")] and result.actions[0].new_token


def test_everything_in_place_is_a_no_op():
    assert kinds(plan((person(),), (known(),), cluster(account()))) == []
