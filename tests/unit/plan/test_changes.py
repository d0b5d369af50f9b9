"""A plan names every object each action creates or deletes, so a dry run shows all the real run writes."""

from datetime import timedelta

from syncd.core.model import UNOWNED, ObservedAccount, ObservedBinding, RoleKind, Scope, binding_name
from tests.unit.plan.builders import (
    EDIT_A,
    INSTANCE,
    NOW,
    account,
    binding,
    cluster,
    credential,
    kinds,
    known,
    person,
    plan,
)

CLUSTER_ADMIN = Scope(None, RoleKind.CLUSTER_ROLE, "cluster-admin")
ADMIN_A = Scope("team-a", RoleKind.CLUSTER_ROLE, "admin")


def changes(action) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(c) for c in action.changes]


def test_a_joiner_creates_a_service_account_its_bindings_and_a_token_secret():
    (action,) = plan((person(),)).actions
    assert changes(action) == [
        "+ serviceaccount syncd/syncd-1001",
        f"+ rolebinding team-a/{binding_name('1001', EDIT_A, INSTANCE)} (ClusterRole/edit)",
        "+ secret syncd/syncd-1001-* (new token)",
    ]


def test_a_repair_shows_the_bindings_it_deletes_beside_the_one_it_creates():
    edited = binding("1001", ADMIN_A, name=binding("1001", EDIT_A).name)
    extra = binding("1001", CLUSTER_ADMIN)
    (action,) = plan((person(),), (known(),), cluster(account(bindings=(edited, extra)))).actions
    assert changes(action) == [
        f"- clusterrolebinding {extra.name} (ClusterRole/cluster-admin)",
        f"- rolebinding team-a/{edited.name} (ClusterRole/admin)",
        f"+ rolebinding team-a/{edited.name} (ClusterRole/edit)",
    ]


def test_a_leaver_loses_bindings_then_token_secrets_then_the_service_account():
    (action,) = plan((), (known(),), cluster(account()), allow_mass_revocation=True).actions
    assert changes(action) == [
        f"- rolebinding team-a/{binding('1001', EDIT_A).name} (ClusterRole/edit)",
        "- secret syncd/syncd-1001-abcde (token)",
        "- serviceaccount syncd/syncd-1001",
    ]


def test_a_refresh_makes_a_token_and_a_retirement_deletes_one():
    old = credential(secret="syncd-1001-old", retire_at=NOW)
    due = known(cred=credential(issued=NOW - timedelta(hours=7)), retiring=(old,))
    refresh, retire = plan((person(),), (due,), cluster(account(secrets=("syncd-1001-abcde", "syncd-1001-old"))
                                                          )).actions
    assert changes(refresh) == ["+ secret syncd/syncd-1001-* (new token)"]
    assert changes(retire) == ["- secret syncd/syncd-1001-old (token)"]


def test_objects_under_our_labels_naming_no_person_are_orphans_removed_by_name():
    hand_made = ObservedBinding("by-hand", "team-a", ADMIN_A, subjects_intact=False)
    unowned = ObservedAccount(UNOWNED, True, (hand_made,), ("stray-token",), ("some-account",))
    result = plan((person(),), (known(),), cluster(account(), unowned))
    assert kinds(result) == [("orphan", "orphan", UNOWNED)]
    assert changes(result.actions[0]) == [
        "- rolebinding team-a/by-hand (ClusterRole/admin)",
        "- secret syncd/stray-token (token)",
        "- serviceaccount syncd/some-account",
    ]


def test_every_plan_warns_of_each_granted_role_that_does_not_exist_and_still_issues():
    missing = frozenset({Scope(None, RoleKind.CLUSTER_ROLE, "edit"), Scope("team-a", RoleKind.ROLE, "deployer")})
    result = plan((person(),), missing_roles=missing)
    assert kinds(result) == [("issue", "joiner", "1001")]
    assert result.notes == (
        "cluster dev: the policy grants ClusterRole edit, which does not exist; people are still issued and get "
        "Forbidden until it is created",
        "cluster dev: the policy grants Role deployer in namespace team-a, which does not exist; people are still "
        "issued and get Forbidden until it is created",
    )
    assert plan((person(),), (known(),), cluster(account()), missing_roles=missing, sweeping=True).notes == result.notes


def test_binding_names_carry_the_instance_so_deployments_sharing_a_cluster_never_share_one():
    assert binding_name("1001", EDIT_A, "syncd-x") != binding_name("1001", EDIT_A, "syncd-y")
    longest = binding_name("a" * 40, EDIT_A, "n" * 63)
    assert len(longest) <= 253 and longest.startswith("syncd-" + "n" * 63)
