"""Same stable id, new username: a mover (rename), never a leaver plus a joiner."""

from tests.unit.plan.builders import account, cluster, kinds, known, person, plan


def test_new_username_with_same_id_is_a_rename():
    result = plan((person(username="alice.archer"),), (known(username="alice"),), cluster(account()))
    assert kinds(result) == [("rescope", "rename", "1001")]
    action = result.actions[0]
    assert action.username == "alice.archer"
    assert action.previous_username == "alice"
    assert not action.new_token


def test_rename_and_group_change_together_is_a_mover_carrying_the_old_name():
    result = plan((person(username="alice.archer", groups=("sre",)),), (known(username="alice"),),
                  cluster(account()))
    assert kinds(result) == [("rescope", "mover", "1001")]
    assert result.actions[0].previous_username == "alice"
