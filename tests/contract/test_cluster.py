"""The `Cluster` port's contract: `FakeCluster` (fast) and `KubernetesCluster` on the real control plane."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest
import yaml

from syncd.adapters.kube import KubernetesCluster
from syncd.config import ClusterSettings
from syncd.core.model import UNOWNED, RoleKind, Scope, binding_name, person_key, service_account_name
from syncd.core.review import Role
from syncd.errors import ClusterUnavailable, Conflict, NotFound
from syncd.ports import Cluster
from tests.conftest import ControlPlane, free_port
from tests.contract.conftest import eventually
from tests.fakes import FakeCluster

TTL = timedelta(hours=1)


class Hands(Protocol):
    """What people do to a cluster behind syncd's back."""

    def squat_service_account(self, name: str) -> None:
        """A ServiceAccount by that name in syncd's namespace, without syncd's labels."""

    def label_ours_without_person(self, name: str) -> None:
        """A ServiceAccount under syncd's labels naming no person."""

    def retarget_binding(self, namespace: str, name: str) -> None:
        """Point a binding at someone else's ServiceAccount."""


@dataclass
class Setup:
    cluster: Cluster
    team: str  # a namespace that exists, to bind roles in
    hands: Hands
    unreachable: Cluster  # the same cluster behind a dead network


class ClusterContract:
    """Subclasses provide the `setup` fixture."""

    @pytest.fixture
    def setup(self) -> Iterator[Setup]:
        raise NotImplementedError

    def test_a_new_person_has_nothing(self, setup: Setup):
        assert person_key("nobody") not in setup.cluster.observe().accounts

    def test_a_service_account_is_made_once_and_observed(self, setup: Setup):
        cluster = setup.cluster
        cluster.ensure_namespace()
        cluster.ensure_namespace()
        first = cluster.ensure_service_account("p1", "alice")
        again = cluster.ensure_service_account("p1", "alice")
        assert first == again and first.name == service_account_name("p1")
        seen = cluster.observe({person_key("p1")}).accounts[person_key("p1")]
        assert seen.service_account and seen.service_accounts == (first.name,)
        assert (seen.bindings, seen.token_secrets) == ((), ())

    def test_a_binding_is_made_once_and_observed_intact(self, setup: Setup):
        cluster, scope = setup.cluster, Scope(setup.team, RoleKind.CLUSTER_ROLE, "edit")
        cluster.ensure_namespace()
        cluster.ensure_service_account("p1", "alice")
        cluster.create_binding("p1", "alice", scope)
        cluster.create_binding("p1", "alice", scope)
        (binding,) = cluster.observe({person_key("p1")}).accounts[person_key("p1")].bindings
        assert (binding.name, binding.namespace, binding.scope, binding.subjects_intact) == \
            (binding_name("p1", scope, cluster.namespace), setup.team, scope, True)

    def test_a_retargeted_binding_is_observed_broken_and_its_name_counts_as_taken(self, setup: Setup):
        cluster, scope = setup.cluster, Scope(setup.team, RoleKind.CLUSTER_ROLE, "view")
        cluster.ensure_namespace()
        cluster.ensure_service_account("p1", "alice")
        cluster.create_binding("p1", "alice", scope)
        setup.hands.retarget_binding(setup.team, binding_name("p1", scope, cluster.namespace))
        (binding,) = cluster.observe({person_key("p1")}).accounts[person_key("p1")].bindings
        assert not binding.subjects_intact
        with pytest.raises(Conflict):
            cluster.create_binding("p1", "alice", scope)

    def test_a_name_taken_by_someone_else_is_refused(self, setup: Setup):
        setup.cluster.ensure_namespace()
        setup.hands.squat_service_account(service_account_name("p2"))
        with pytest.raises(Conflict):
            setup.cluster.ensure_service_account("p2", "bob")
        assert person_key("p2") not in setup.cluster.observe().accounts

    def test_objects_under_our_labels_naming_nobody_are_unowned(self, setup: Setup):
        setup.cluster.ensure_namespace()
        setup.hands.label_ours_without_person("stray")
        assert setup.cluster.observe().accounts[UNOWNED].service_accounts == ("stray",)

    def test_binding_in_a_missing_namespace_is_refused(self, setup: Setup):
        setup.cluster.ensure_namespace()
        setup.cluster.ensure_service_account("p1", "alice")
        with pytest.raises(NotFound):
            setup.cluster.create_binding("p1", "alice", Scope(f"absent-{uuid.uuid4().hex[:6]}",
                                                              RoleKind.CLUSTER_ROLE, "edit"))

    def test_a_token_authenticates_until_its_secret_is_deleted(self, setup: Setup):
        cluster = setup.cluster
        cluster.ensure_namespace()
        account = cluster.ensure_service_account("p1", "alice")
        before = datetime.now(UTC)
        issued = cluster.issue_token(account, "p1", "alice", TTL)
        assert before - timedelta(seconds=5) <= issued.issued_at <= datetime.now(UTC)
        assert abs(issued.expires_at - (issued.issued_at + TTL)) < timedelta(minutes=1)
        kept = cluster.issue_token(account, "p1", "alice", TTL)
        assert cluster.token_authenticates(issued.token) and cluster.token_authenticates(kept.token)
        assert cluster.observe({person_key("p1")}).accounts[person_key("p1")].token_secrets == \
            tuple(sorted([issued.secret_name, kept.secret_name]))
        cluster.delete_token_secret(issued.secret_name)
        assert eventually(lambda: not cluster.token_authenticates(issued.token))
        assert cluster.token_authenticates(kept.token), "deleting one Secret killed another token"

    def test_deleting_the_account_kills_its_tokens_and_leaves_nothing(self, setup: Setup):
        cluster, scope = setup.cluster, Scope(setup.team, RoleKind.CLUSTER_ROLE, "edit")
        cluster.ensure_namespace()
        account = cluster.ensure_service_account("p1", "alice")
        cluster.create_binding("p1", "alice", scope)
        issued = cluster.issue_token(account, "p1", "alice", TTL)
        seen = cluster.observe({person_key("p1")}).accounts[person_key("p1")]
        for binding in seen.bindings:
            cluster.delete_binding(binding)
        cluster.delete_account(seen.service_accounts, seen.token_secrets)
        assert person_key("p1") not in cluster.observe({person_key("p1")}).accounts
        assert eventually(lambda: not cluster.token_authenticates(issued.token))

    def test_deleting_what_is_gone_is_no_error(self, setup: Setup):
        cluster = setup.cluster
        cluster.ensure_namespace()
        cluster.delete_token_secret("syncd-gone-abcde")
        cluster.delete_account(("syncd-gone",), ("syncd-gone-abcde",))
        cluster.delete_account((), ())

    def test_writes_are_counted_and_reads_are_not(self, setup: Setup):
        cluster = setup.cluster
        cluster.ensure_namespace()
        start = cluster.writes
        cluster.observe()
        cluster.missing_roles([Scope(setup.team, RoleKind.CLUSTER_ROLE, "edit")])
        assert cluster.writes == start
        account = cluster.ensure_service_account("p1", "alice")
        cluster.issue_token(account, "p1", "alice", TTL)
        assert cluster.writes == start + 3  # the account, the Secret, the TokenRequest
        cluster.delete_token_secret("syncd-gone-abcde")
        assert cluster.writes == start + 4

    def test_missing_roles_are_named(self, setup: Setup):
        present = Scope(setup.team, RoleKind.CLUSTER_ROLE, "view")
        absent = Scope(setup.team, RoleKind.CLUSTER_ROLE, f"no-such-{uuid.uuid4().hex[:6]}")
        no_role = Scope(setup.team, RoleKind.ROLE, "deployer")
        assert setup.cluster.missing_roles([present, absent, no_role]) == {
            Scope(None, RoleKind.CLUSTER_ROLE, absent.role_name), no_role}

    def test_a_role_s_rules_are_read_and_a_missing_role_is_none(self, setup: Setup):
        assert isinstance(setup.cluster.role_rules(Role(RoleKind.CLUSTER_ROLE, "view")), tuple)
        assert setup.cluster.role_rules(Role(RoleKind.CLUSTER_ROLE, f"no-such-{uuid.uuid4().hex[:6]}")) is None
        assert setup.cluster.role_rules(Role(RoleKind.ROLE, "deployer", setup.team)) is None

    def test_an_unreachable_cluster_is_unavailable(self, setup: Setup):
        for call in (lambda c: c.observe(), lambda c: c.ensure_namespace(),
                     lambda c: c.role_rules(Role(RoleKind.CLUSTER_ROLE, "view")),
                     lambda c: c.delete_token_secret("syncd-x-abcde"), lambda c: c.token_authenticates("x.y.z")):
            with pytest.raises(ClusterUnavailable):
                call(setup.unreachable)


@pytest.mark.fast
class TestFakeCluster(ClusterContract):
    @pytest.fixture
    def setup(self) -> Iterator[Setup]:
        fake = FakeCluster("dev", "syncd-test", namespaces={"team-a"})
        down = FakeCluster("dev", "syncd-test")
        down.unreachable = True
        yield Setup(fake, "team-a", FakeHands(fake), down)


class FakeHands:
    def __init__(self, fake: FakeCluster) -> None:
        self.fake = fake

    def squat_service_account(self, name: str) -> None:
        self.fake.add_service_account(name)

    def label_ours_without_person(self, name: str) -> None:
        self.fake.add_service_account(name, **self.fake.instance_labels)

    def retarget_binding(self, namespace: str, name: str) -> None:
        self.fake.bindings[(namespace, name)].subjects = [("ServiceAccount", "someone-else", self.fake.namespace)]


@pytest.mark.kube
class TestKubernetesCluster(ClusterContract):
    @pytest.fixture
    def setup(self, control_plane: ControlPlane, tmp_path: Path) -> Iterator[Setup]:
        suffix = uuid.uuid4().hex[:6]
        team, namespace = f"team-{suffix}", f"syncd-{suffix}"
        control_plane.kubectl("create", "namespace", team)
        real = KubernetesCluster(ClusterSettings(name="dev", kubeconfig=control_plane.admin_kubeconfig,
                                                 namespace=namespace))
        dead = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
        for entry in dead["clusters"]:
            entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
        (tmp_path / "dead.kubeconfig").write_text(yaml.safe_dump(dead))
        down = KubernetesCluster(ClusterSettings(name="dev", kubeconfig=tmp_path / "dead.kubeconfig",
                                                 namespace=namespace, timeout=timedelta(seconds=2)))
        try:
            yield Setup(real, team, KubeHands(control_plane, namespace), down)
        finally:
            real.close()
            down.close()
            control_plane.kubectl("delete", "namespace", team, namespace, "--wait=false", check=False)


class KubeHands:
    def __init__(self, control_plane: ControlPlane, namespace: str) -> None:
        self.control_plane = control_plane
        self.namespace = namespace

    def squat_service_account(self, name: str) -> None:
        self.control_plane.kubectl("create", "serviceaccount", name, "-n", self.namespace)

    def label_ours_without_person(self, name: str) -> None:
        self.squat_service_account(name)
        self.control_plane.kubectl("label", "serviceaccount", name, "-n", self.namespace,
                                   "app.kubernetes.io/managed-by=syncd", f"syncd.io/instance={self.namespace}")

    def retarget_binding(self, namespace: str, name: str) -> None:
        patch = '[{"op": "replace", "path": "/subjects/0/name", "value": "someone-else"}]'
        self.control_plane.kubectl("patch", "rolebinding", name, "-n", namespace, "--type=json", "-p", patch)
