"""A targeted run (a SCIM push, an incremental poll) plans the people it names and nobody else."""

from tests.unit.plan.builders import account, cluster, kinds, known, person, plan


def test_only_named_people_are_planned():
    result = plan((person("2002", "bob"),), (known(),), cluster(account()), only=frozenset({"2002"}))
    assert kinds(result) == [("issue", "joiner", "2002")]


def test_named_person_missing_from_the_snapshot_is_a_leaver():
    result = plan((person("2002", "bob"),), (known(), known("2002", "bob")), cluster(account(), account("2002")),
                  only=frozenset({"1001"}))
    assert kinds(result) == [("revoke", "leaver", "1001")]
