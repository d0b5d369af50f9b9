"""The Kubernetes adapter's writes and TokenReview, sent through the client's lower layer with plain dict bodies, on
the real control plane: each refusal still becomes the error saying what happened, and the kubeconfig's credential
(a bearer token, or an exec plugin run again when its credential expires) still goes with every request."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from syncd.adapters import kube
from syncd.adapters.kube import KubernetesCluster
from syncd.config import ClusterSettings
from syncd.core.model import ObservedBinding, RoleKind, Scope, binding_name, person_key, service_account_name
from syncd.errors import Conflict, Invalid, NotFound, Unauthorized
from tests.conftest import ControlPlane
from tests.contract.conftest import eventually

pytestmark = pytest.mark.kube

TTL = timedelta(hours=1)


@pytest.fixture
def names(control_plane: ControlPlane) -> Iterator[tuple[str, str]]:
    """syncd's namespace and a team namespace to bind roles in, both removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    team, namespace = f"team-{suffix}", f"syncd-{suffix}"
    control_plane.kubectl("create", "namespace", team)
    yield namespace, team
    control_plane.kubectl("delete", "namespace", team, namespace, "--wait=false", check=False)


def kubeconfig_with_user(control_plane: ControlPlane, path: Path, user: dict) -> Path:
    """The admin kubeconfig's cluster with another user entry."""
    config = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": user}]
    path.write_text(yaml.safe_dump(config))
    return path


def admin_token(control_plane: ControlPlane) -> str:
    return yaml.safe_load(control_plane.admin_kubeconfig.read_text())["users"][0]["user"]["token"]


def joiner_and_leaver(cluster: KubernetesCluster, team: str) -> None:
    """Every request of the apply path, once."""
    cluster.ensure_namespace()
    account = cluster.ensure_service_account("p1", "alice")
    issued = cluster.issue_token(account, "p1", "alice", TTL)
    cluster.create_binding("p1", "alice", Scope(team, RoleKind.CLUSTER_ROLE, "edit"))
    assert cluster.token_authenticates(issued.token)
    seen = cluster.observe({person_key("p1")}).accounts[person_key("p1")]
    assert (seen.service_accounts, seen.token_secrets, len(seen.bindings)) == \
        ((account.name,), (issued.secret_name,), 1)
    for binding in seen.bindings:
        cluster.delete_binding(binding)
    cluster.delete_account(seen.service_accounts, seen.token_secrets)
    assert person_key("p1") not in cluster.observe({person_key("p1")}).accounts
    assert eventually(lambda: not cluster.token_authenticates(issued.token))


def test_each_refusal_becomes_the_error_saying_what_happened(control_plane: ControlPlane, names: tuple[str, str]):
    namespace, team = names
    cluster = KubernetesCluster(ClusterSettings(name="dev", kubeconfig=control_plane.admin_kubeconfig,
                                                namespace=namespace))
    squatted = binding_name('p2', Scope(None, RoleKind.CLUSTER_ROLE, 'view'), namespace)
    try:
        cluster.ensure_namespace()
        account = cluster.ensure_service_account("p1", "alice")

        # 404: deleting what is gone is no error, and each delete was sent.
        start = cluster.writes
        cluster.delete_token_secret("syncd-gone-abcde")
        cluster.delete_binding(ObservedBinding("syncd-gone", team, Scope(team, RoleKind.CLUSTER_ROLE, "edit"), True))
        cluster.delete_binding(ObservedBinding("syncd-gone", None, Scope(None, RoleKind.CLUSTER_ROLE, "edit"), True))
        cluster.delete_account(("syncd-gone",), ())
        assert cluster.writes == start + 4
        # 404 on a create: a binding in a namespace that does not exist.
        with pytest.raises(NotFound):
            cluster.create_binding("p1", "alice", Scope(f"absent-{uuid.uuid4().hex[:6]}", RoleKind.CLUSTER_ROLE,
                                                        "edit"))

        # 409: names taken by someone else are refused, and what is there is left as it was.
        control_plane.kubectl("create", "serviceaccount", service_account_name("p2"), "-n", namespace)
        with pytest.raises(Conflict, match="is not this syncd's"):
            cluster.ensure_service_account("p2", "bob")
        control_plane.kubectl("create", "clusterrolebinding", squatted, "--clusterrole=view",
                              "--serviceaccount=default:someone-else")
        with pytest.raises(Conflict, match="is not this syncd's"):
            cluster.create_binding("p2", "bob", Scope(None, RoleKind.CLUSTER_ROLE, "view"))
        there = json.loads(control_plane.kubectl("get", "clusterrolebinding", squatted, "-o", "json").stdout)
        assert [s["name"] for s in there["subjects"]] == ["someone-else"]
        # 409 on our own object: it is read and counts as made.
        assert cluster.ensure_service_account("p1", "alice") == account

        # 422: a token shorter than the API server allows; the Secret made for it is deleted again.
        with pytest.raises(Invalid, match="expirationSeconds"):
            cluster.issue_token(account, "p1", "alice", timedelta(minutes=5))
        assert cluster.observe({person_key("p1")}).accounts[person_key("p1")].token_secrets == ()
    finally:
        cluster.close()
        control_plane.kubectl("delete", "clusterrolebinding", squatted, check=False)


def test_a_bearer_token_kubeconfig_works_and_a_wrong_token_is_unauthorized(control_plane: ControlPlane,
                                                                            names: tuple[str, str], tmp_path: Path):
    namespace, team = names
    token = kubeconfig_with_user(control_plane, tmp_path / "token.kubeconfig", {"token": admin_token(control_plane)})
    cluster = KubernetesCluster(ClusterSettings(name="dev", kubeconfig=token, namespace=namespace))
    wrong = kubeconfig_with_user(control_plane, tmp_path / "wrong.kubeconfig", {"token": "not-a-token"})
    refused = KubernetesCluster(ClusterSettings(name="dev", kubeconfig=wrong, namespace=namespace))
    try:
        joiner_and_leaver(cluster, team)
        with pytest.raises(Unauthorized):
            refused.ensure_service_account("p1", "alice")
        with pytest.raises(Unauthorized):
            refused.token_authenticates("x.y.z")
        with pytest.raises(Unauthorized):
            refused.delete_token_secret("syncd-gone-abcde")
    finally:
        cluster.close()
        refused.close()


def test_an_exec_plugin_s_credential_is_taken_again_when_it_expires(control_plane: ControlPlane,
                                                                     names: tuple[str, str], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """The plugin's credential says it has expired, so the client runs the plugin again before each request (at
    most once per CREDENTIAL_CHECK, here 0): a request sends whatever token the plugin gives at that moment."""
    namespace, team = names
    current = tmp_path / "current-token"
    current.write_text(admin_token(control_plane))
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(
        "#!/bin/sh\n"
        f"printf '{{\"apiVersion\": \"client.authentication.k8s.io/v1beta1\", \"kind\": \"ExecCredential\", "
        f"\"status\": {{\"token\": \"%s\", \"expirationTimestamp\": \"2000-01-01T00:00:00Z\"}}}}' "
        f"\"$(cat {current})\"\n")
    plugin.chmod(0o755)
    exec_kubeconfig = kubeconfig_with_user(control_plane, tmp_path / "exec.kubeconfig", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin)}})
    monkeypatch.setattr(kube, "CREDENTIAL_CHECK", 0.0)
    cluster = KubernetesCluster(ClusterSettings(name="dev", kubeconfig=exec_kubeconfig, namespace=namespace))
    try:
        joiner_and_leaver(cluster, team)
        current.write_text("not-a-token")
        with pytest.raises(Unauthorized):
            cluster.ensure_service_account("p1", "alice")
        with pytest.raises(Unauthorized):
            cluster.token_authenticates("x.y.z")
        current.write_text(admin_token(control_plane))
        assert cluster.ensure_service_account("p1", "alice").name == service_account_name("p1")
    finally:
        cluster.close()
