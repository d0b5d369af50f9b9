"""Never revoke from partial data: a snapshot marked incomplete holds back every revocation."""

from tests.unit.plan.builders import account, cluster, kinds, known, person, plan


def test_partial_snapshot_holds_revocations_but_lets_joiners_through():
    result = plan((person("2002", "bob"),), (known(),), cluster(account(), account("9999")), complete=False)
    assert kinds(result) == [("issue", "joiner", "2002")]
    assert sorted((str(h.action.kind), h.action.person_id) for h in result.held) == [
        ("orphan", "9999"), ("revoke", "1001"),
    ]
    assert all("partial" in h.why for h in result.held)
