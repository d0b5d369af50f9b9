"""Which RBAC rules make a role privileged, one rule per test, matched as the API server's authorizer matches them."""

from __future__ import annotations

from syncd.core.model import RoleKind, Scope
from syncd.core.review import Privilege, RbacRule, RoleRules, judge, privileges

EDIT_A = Scope("team-a", RoleKind.CLUSTER_ROLE, "edit")
WIDE = Scope(None, RoleKind.CLUSTER_ROLE, "view")


def rule(*verbs: str, groups: tuple[str, ...] = ("",), resources: tuple[str, ...] = ("pods",)) -> RbacRule:
    return RbacRule(verbs, groups, resources)


def test_reading_pods_and_configmaps_is_not_privileged():
    assert privileges([rule("get", "list", "watch", resources=("pods", "configmaps", "pods/log"))]) == ()


def test_all_verbs_is_privileged():
    assert privileges([rule("*")]) == ("all verbs",)


def test_all_resources_is_privileged():
    assert "all resources" in privileges([rule("get", resources=("*",))])


def test_all_non_resource_urls_is_privileged():
    assert privileges([RbacRule(("get",), non_resource_urls=("*",))]) == ("all resources",)


def test_each_way_of_reading_secrets_is_privileged():
    for verb in ("get", "list", "watch"):
        assert privileges([rule(verb, resources=("secrets",))]) == ("secrets read",)


def test_writing_secrets_without_reading_them_is_not_secrets_read():
    assert privileges([rule("create", "delete", resources=("secrets",))]) == ()


def test_secrets_of_another_api_group_are_not_the_core_secrets():
    assert privileges([rule("get", groups=("example.com",), resources=("secrets",))]) == ()


def test_any_api_group_includes_the_core_secrets():
    assert privileges([rule("get", groups=("*",), resources=("secrets",))]) == ("secrets read",)


def test_pods_exec_is_privileged():
    assert privileges([rule("create", resources=("pods/exec",))]) == ("pods/exec",)


def test_pods_exec_over_a_websocket_get_is_privileged():
    assert privileges([rule("get", resources=("pods/exec",))]) == ("pods/exec",)


def test_pods_attach_is_privileged():
    assert privileges([rule("create", resources=("pods/attach",))]) == ("pods/attach",)


def test_a_subresource_wildcard_matches_exec_as_rbac_does():
    assert privileges([rule("create", resources=("*/exec",))]) == ("pods/exec",)


def test_pods_alone_do_not_grant_exec():
    # RBAC's "pods" matches no subresource (nor would "pods/*").
    assert privileges([rule("create", resources=("pods", "pods/*"))]) == ()


def test_escalate_on_roles_is_privileged():
    assert privileges([rule("escalate", groups=("rbac.authorization.k8s.io",), resources=("roles",))]) == ("escalate",)


def test_bind_on_clusterroles_is_privileged():
    assert privileges([rule("bind", groups=("rbac.authorization.k8s.io",), resources=("clusterroles",))]) == ("bind",)


def test_impersonating_service_accounts_is_privileged():
    assert privileges([rule("impersonate", resources=("serviceaccounts",))]) == ("impersonate",)


def test_impersonating_users_is_privileged():
    assert privileges([rule("impersonate", groups=("authentication.k8s.io",), resources=("users",))]) \
        == ("impersonate",)


def test_nodes_proxy_is_privileged():
    assert privileges([rule("get", resources=("nodes/proxy",))]) == ("nodes/proxy",)


def test_every_reason_is_given_once_in_a_fixed_order():
    found = privileges([rule("get", resources=("secrets",)), rule("*", resources=("*",)),
                        rule("list", resources=("secrets",))])
    assert found == ("all verbs", "all resources", "secrets read", "pods/exec", "pods/attach", "nodes/proxy")


def test_a_cluster_wide_grant_is_privileged_whatever_its_rules():
    assert judge(WIDE, RoleRules(())) == Privilege(True, ("cluster-wide",))


def test_a_namespaced_grant_of_harmless_rules_is_not_privileged():
    assert judge(EDIT_A, RoleRules((rule("get"),))) == Privilege(False)


def test_rules_that_could_not_be_read_leave_the_privilege_unknown():
    judged = judge(EDIT_A, RoleRules(problem="cluster dev is unreachable"))
    assert judged.privileged is None and "cluster dev is unreachable" in judged.note


def test_unreadable_rules_of_a_cluster_wide_grant_are_still_privileged():
    assert judge(WIDE, RoleRules(problem="refused")).privileged is True


def test_a_role_that_does_not_exist_grants_nothing():
    judged = judge(EDIT_A, RoleRules(None))
    assert judged.privileged is False and "does not exist" in judged.note
