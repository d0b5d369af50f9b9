"""The orphan and drift sweep between full reconciles: from what the ledger recorded, it puts back what the ledger
records and removes what nobody owns; everything that needs a fresh read of the source waits for it."""

from dataclasses import replace
from datetime import timedelta

from syncd.core.model import Snapshot
from syncd.core.plan import Inputs, make_plan
from syncd.core.policy import Policy
from tests.unit.plan.builders import (
    CLUSTER,
    EDIT_A,
    NOW,
    SAFETY,
    SOURCE,
    account,
    cluster,
    credential,
    kinds,
    known,
    person,
    plan,
)


def test_a_binding_deleted_by_hand_is_put_back():
    result = plan((person(),), (known(),), cluster(account(bindings=())), sweeping=True)
    assert kinds(result) == [("repair", "drift", "1001")]
    assert result.actions[0].create_bindings == (EDIT_A,)


def test_orphans_and_token_secrets_no_record_explains_are_swept():
    alice = account(secrets=("syncd-1001-abcde", "syncd-1001-zzzzz"))
    result = plan((person(),), (known(),), cluster(alice, account("9999")), sweeping=True)
    assert kinds(result) == [("retire", "stale", "1001"), ("orphan", "orphan", "9999")]


def test_joiners_movers_leavers_and_refreshes_wait_for_the_jobs_that_read_the_source():
    expiring = known(cred=credential(issued=NOW - timedelta(hours=7)))
    leaver = known("3003", "carol")
    mover = known("4004", "dave")
    people = (person(), person("2002", "bob"), person("4004", "dave", groups=("sre",)))
    observed = cluster(account(), account("3003"), account("4004"))
    full = plan(people, (expiring, leaver, mover), observed)
    assert sorted(kinds(full)) == [("issue", "joiner", "2002"), ("refresh", "expiring", "1001"),
                                   ("rescope", "mover", "4004"), ("revoke", "leaver", "3003")]
    assert kinds(plan(people, (expiring, leaver, mover), observed, sweeping=True)) == []


def test_a_repair_the_policy_would_now_scope_differently_waits_for_the_full_run():
    # The ledger records edit on team-a; the policy now gives view on team-b; the token is gone.
    result = plan((person(groups=("sre",)),), (known(scopes=(EDIT_A,)),), cluster(account(secrets=())),
                  sweeping=True)
    assert kinds(result) == []
    assert kinds(plan((person(groups=("sre",)),), (known(scopes=(EDIT_A,)),), cluster(account(secrets=())))) == [
        ("repair", "drift", "1001")]


def test_a_ledger_that_records_nobody_removes_no_orphans():
    result = plan((), (), cluster(account("9999")), sweeping=True)
    assert kinds(result) == []
    assert [h.action.person_id for h in result.held] == ["9999"] and "records nobody" in result.held[0].why


def test_the_ledger_is_given_the_attributes_the_policy_matches_on_and_no_others():
    by_department = Policy.model_validate({"rules": [
        {"name": "platform", "match": {"groups": ["developers"], "attributes": {"department": "platform"}},
         "grant": [{"cluster": CLUSTER, "namespaces": ["team-a"], "role": "edit"}]}]})
    alice = replace(person(), attributes={"department": "platform", "phone": "555-0100"})
    result = make_plan(Inputs(Snapshot(SOURCE, (alice,)), by_department, {}, {CLUSTER: cluster()}, NOW, SAFETY))
    assert [a.identity.attributes for a in result.actions] == [{"department": "platform"}]
