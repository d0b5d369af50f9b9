"""People who cannot be delivered, or whose key another person holds, are refused before any cluster write."""

from dataclasses import replace

from syncd.core.model import KnownAccess
from syncd.core.plan import Kind
from tests.unit.plan.builders import CLUSTER, account, cluster, kinds, known, person, plan


def test_an_undeliverable_username_is_refused_naming_its_origin_and_others_go_ahead():
    bad = replace(person("2005", "eve\nroot"), origin="people.csv line 3")
    result = plan((bad, person("1002", "bob")))
    assert kinds(result) == [("issue", "joiner", "1002")]
    (held,) = result.held
    assert held.refused and held.action.person_id == "2005"
    assert "people.csv line 3" in held.why and "U+000A" in held.why


def test_a_revocation_is_never_refused():
    result = plan((person("1001", "al\x00ice", groups=()),), (known("1001", "alice"),), cluster(account("1001")))
    assert kinds(result) == [("revoke", "no-entitlement", "1001")] and result.held == ()


def test_an_id_the_ledger_records_for_another_source_is_refused_and_revokes_nobody():
    other = known("2101", "sam", source="okta")
    result = plan((person("2101", "sam", groups=()), person("2102", "sam")), (other,), cluster(account("2101")))
    assert kinds(result) == [("issue", "joiner", "2102")]
    (held,) = result.held
    assert held.refused and held.action.kind is Kind.REVOKE and "'okta'" in held.why


def test_unicode_and_long_usernames_are_planned_like_any_other():
    names = ["josé.garcía", "李雷", "frank castle", "a/b", "..", "x" * 300]
    result = plan(tuple(person(str(3000 + n), name) for n, name in enumerate(names)))
    assert len(result.actions) == len(names) and result.held == ()


def test_access_delivered_under_the_old_layout_is_delivered_again_with_a_fresh_token():
    old = known("1001", "alice")
    access = old.access[CLUSTER]
    moved = replace(old, access={CLUSTER: KnownAccess(access.cluster, access.scopes, access.credential,
                                                       kubeconfig="/srv/kubeconfigs/alice/dev.kubeconfig")})
    (action,) = plan((person(),), (moved,), cluster(account())).actions
    assert (action.kind, action.reason, action.new_token) == (Kind.REPAIR, "relocate", True)
    assert action.old_kubeconfig == "/srv/kubeconfigs/alice/dev.kubeconfig"
    assert action.known_fingerprints == (access.credential.fingerprint,)
    current = replace(old, access={CLUSTER: KnownAccess(access.cluster, access.scopes, access.credential,
                                                         kubeconfig="/srv/kubeconfigs/1001/dev.kubeconfig")})
    assert plan((person(),), (current,), cluster(account())).actions == ()
