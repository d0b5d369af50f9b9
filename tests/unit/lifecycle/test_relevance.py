"""Whose access a change to one person or one group can alter: only those people cost a reconcile."""

from dataclasses import replace

from syncd.core.lifecycle import Membership, identity_touches, membership_touches
from syncd.core.model import Identity
from syncd.core.policy import Policy

POLICY = Policy.model_validate({"rules": [
    {"name": "devs", "match": {"groups": ["developers"]},
     "grant": [{"cluster": "dev", "namespaces": ["a"], "role": "edit"}]},
    {"name": "leads", "match": {"attributes": {"title": "lead"}},
     "grant": [{"cluster": "dev", "namespaces": ["b"], "role": "view"}]},
]})
ANN = Identity("u1", "ann")


def test_a_joiner_the_policy_does_not_entitle_touches_nobody():
    """A new person in no group, matching no rule, gets nothing: no run."""
    assert identity_touches(POLICY, None, ANN) == frozenset()


def test_a_joiner_the_policy_entitles_as_they_are_is_touched():
    """A new person a rule matches by attributes gets access: a run for them."""
    assert identity_touches(POLICY, None, replace(ANN, attributes={"title": "lead"})) == {"u1"}


def test_a_leaver_is_touched():
    """A deleted person loses access."""
    assert identity_touches(POLICY, ANN, None) == {"u1"}


def test_a_change_of_fields_no_rule_reads_touches_nobody():
    """Display name, email or an attribute no rule matches on change nothing."""
    after = replace(ANN, display_name="Ann", email="a@x.org", attributes={"locale": "fr"})
    assert identity_touches(POLICY, ANN, after) == frozenset()


def test_a_change_of_an_attribute_a_rule_matches_on_is_touched():
    """An attribute the policy matches on can grant or take access."""
    assert identity_touches(POLICY, replace(ANN, attributes={"title": "dev"}),
                            replace(ANN, attributes={"title": "lead"})) == {"u1"}


def test_a_deactivation_is_touched():
    """The active flag decides all access."""
    assert identity_touches(POLICY, ANN, replace(ANN, active=False)) == {"u1"}


def test_a_rename_is_touched():
    """The username names the kubeconfig's user: a rename is rescoped."""
    assert identity_touches(POLICY, ANN, replace(ANN, username="anne")) == {"u1"}


def test_members_who_joined_or_left_a_group_are_touched():
    """Only the difference between the member lists counts."""
    assert membership_touches(Membership("developers", frozenset({"a", "b"})),
                              Membership("developers", frozenset({"b", "c"}))) == {"a", "c"}


def test_every_member_of_a_renamed_group_is_touched():
    """Rules match group names: a rename can alter every member's access."""
    assert membership_touches(Membership("developers", frozenset({"a"})),
                              Membership("admins", frozenset({"a"}))) == {"a"}


def test_every_member_of_a_created_or_deleted_group_is_touched():
    """A group appearing or going changes its members' groups."""
    group = Membership("developers", frozenset({"a", "b"}))
    assert membership_touches(None, group) == {"a", "b"}
    assert membership_touches(group, None) == {"a", "b"}


def test_an_unchanged_group_touches_nobody():
    """Same name, same members: no run."""
    group = Membership("developers", frozenset({"a"}))
    assert membership_touches(group, group) == frozenset()
