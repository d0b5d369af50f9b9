"""Policy evaluation: which rules match, and the union of what they grant."""

from hypothesis import given
from hypothesis import strategies as st

from syncd.core.model import Identity, RoleKind, Scope, purpose_rules, rules_granting
from syncd.core.policy import Policy

POLICY = Policy.model_validate({"rules": [
    {"name": "devs", "match": {"groups": ["developers"]},
     "grant": [{"cluster": "dev", "namespaces": ["a", "b"], "role": "edit"}]},
    {"name": "platform sre", "match": {"groups": ["sre"], "attributes": {"department": ["platform", "infra"]}},
     "grant": [{"cluster": "dev", "namespaces": ["a"], "role": "view"},
               {"cluster": "prod", "namespaces": ["ops"], "role": "ops", "role_kind": "Role", "token_ttl": "1h"}]},
]})


def who(*groups: str, active: bool = True, **attributes: str) -> Identity:
    return Identity("1", "alice", groups=frozenset(groups), active=active, attributes=attributes)


def test_group_rule_grants_each_namespace():
    access = POLICY.access_for(who("developers"))
    assert set(access) == {"dev"}
    assert access["dev"].scopes == {Scope(ns, RoleKind.CLUSTER_ROLE, "edit") for ns in ("a", "b")}


def test_attribute_condition_must_hold_too():
    assert POLICY.access_for(who("sre", department="sales")) == {}
    assert set(POLICY.access_for(who("sre", department="infra"))) == {"dev", "prod"}


def test_union_of_matching_rules():
    access = POLICY.access_for(who("developers", "sre", department="platform"))
    assert len(access["dev"].scopes) == 3
    assert access["prod"].scopes == {Scope("ops", RoleKind.ROLE, "ops")}
    assert access["prod"].token_ttl.total_seconds() == 3600
    assert access["dev"].token_ttl.total_seconds() == 8 * 3600


def test_purpose_names_each_rule_granting_each_scope_on_its_cluster():
    access = POLICY.access_for(who("developers", "sre", department="platform"))
    view_a, edit_a = Scope("a", RoleKind.CLUSTER_ROLE, "view"), Scope("a", RoleKind.CLUSTER_ROLE, "edit")
    assert purpose_rules(access["dev"].purpose) == ("devs", "platform sre")
    assert rules_granting(access["dev"].purpose, edit_a) == ("devs",)
    assert rules_granting(access["dev"].purpose, view_a) == ("platform sre",)
    assert purpose_rules(access["prod"].purpose) == ("platform sre",)


def test_two_rules_granting_one_scope_are_both_its_purpose():
    policy = Policy.model_validate({"rules": [
        {"name": name, "match": {"groups": [name]}, "grant": [{"cluster": "dev", "namespaces": ["a"], "role": "edit"}]}
        for name in ("oncall", "developers")]})
    access = policy.access_for(who("developers", "oncall"))["dev"]
    assert rules_granting(access.purpose, Scope("a", RoleKind.CLUSTER_ROLE, "edit")) == ("developers", "oncall")


def test_inactive_person_gets_nothing():
    assert POLICY.access_for(who("developers", active=False)) == {}


people = st.builds(
    who, *[st.sampled_from(["developers", "sre", "sales", "interns"])] * 2, active=st.booleans(),
    department=st.sampled_from(["platform", "infra", "sales"]), team=st.sampled_from(["x", "y"]))


@given(people, people)
def test_people_with_equal_access_keys_get_equal_access(first: Identity, second: Identity):
    # The planner evaluates the policy once per key; a key that missed something the rules read would be wrong.
    if POLICY.access_key(first) == POLICY.access_key(second):
        assert POLICY.access_for(first) == POLICY.access_for(second)


def test_access_keys_ignore_what_no_rule_reads():
    assert POLICY.access_key(who("developers", "interns", team="x")) == POLICY.access_key(who("developers", team="y"))
    assert POLICY.access_key(who("sre", department="infra")) != POLICY.access_key(who("sre", department="sales"))


def test_group_names_match_whatever_their_case():
    # LDAP, AD and identity providers treat `Developers` and `developers` as one group.
    assert set(POLICY.access_for(who("Developers"))) == {"dev"}
    assert set(POLICY.access_for(who("SRE", department="platform"))) == {"dev", "prod"}
    shouting = Policy.model_validate(POLICY.model_dump() | {"rules": [
        rule.model_dump() | {"match": {"groups": ["DEVELOPERS"]}} for rule in POLICY.rules[:1]]})
    assert set(shouting.access_for(who("developers"))) == {"dev"}
    assert POLICY.access_key(who("Developers")) == POLICY.access_key(who("developers"))


def test_group_names_can_be_compared_case_sensitively():
    strict = Policy.model_validate(POLICY.model_dump() | {"match_groups": "case-sensitive"})
    assert strict.access_for(who("Developers")) == {}
    assert set(strict.access_for(who("developers"))) == {"dev"}
    assert strict.access_key(who("Developers")) != strict.access_key(who("developers"))


mixed_case_people = st.builds(
    who, *[st.sampled_from(["developers", "Developers", "SRE", "sre", "sales"])] * 2, active=st.booleans(),
    department=st.sampled_from(["platform", "infra", "sales"]))


@given(mixed_case_people, mixed_case_people, st.sampled_from(["case-insensitive", "case-sensitive"]))
def test_access_keys_agree_with_access_whatever_the_case(first: Identity, second: Identity, mode: str):
    policy = Policy.model_validate(POLICY.model_dump() | {"match_groups": mode})
    if policy.access_key(first) == policy.access_key(second):
        assert policy.access_for(first) == policy.access_for(second)
