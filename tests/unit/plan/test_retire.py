"""Replaced tokens retire when their grace window ends; a token Secret no record explains is stale."""

from datetime import timedelta

from tests.unit.plan.builders import NOW, account, cluster, credential, kinds, known, person, plan

OLD = credential(secret="syncd-1001-old", retire_at=NOW + timedelta(minutes=5))


def test_replaced_token_within_its_grace_window_stays():
    result = plan((person(),), (known(retiring=(OLD,)),),
                  cluster(account(secrets=("syncd-1001-abcde", "syncd-1001-old"))))
    assert kinds(result) == []


def test_replaced_token_past_its_grace_window_is_retired_alone():
    old = credential(secret="syncd-1001-old", retire_at=NOW)
    result = plan((person(),), (known(retiring=(old,)),),
                  cluster(account(secrets=("syncd-1001-abcde", "syncd-1001-old"))))
    assert kinds(result) == [("retire", "grace-ended", "1001")]
    assert result.actions[0].token_secrets == ("syncd-1001-old",)


def test_replaced_token_whose_secret_vanished_is_closed_in_the_ledger():
    result = plan((person(),), (known(retiring=(OLD,)),), cluster(account()))
    assert kinds(result) == [("retire", "vanished", "1001")]


def test_token_secret_no_record_explains_is_stale():
    result = plan((person(),), (known(),), cluster(account(secrets=("syncd-1001-abcde", "syncd-1001-zzz"))))
    assert kinds(result) == [("retire", "stale", "1001")]
    assert result.actions[0].token_secrets == ("syncd-1001-zzz",)


def test_stale_secrets_beside_a_reissue_are_retired_too():
    result = plan((person(),), (known(),), cluster(account(secrets=("syncd-1001-zzz",))))
    assert kinds(result) == [("repair", "drift", "1001"), ("retire", "stale", "1001")]


def test_retirement_is_not_a_revocation_of_the_person():
    result = plan((person(),), (known(),), cluster(account(secrets=("syncd-1001-abcde", "x"))), complete=False)
    assert kinds(result) == [("retire", "stale", "1001")] and result.held == ()
