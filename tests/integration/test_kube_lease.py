"""The leader lease as a coordination.k8s.io/v1 Lease on the real control plane: acquired, followed, renewed, taken
over once expired, handed over on release, and of two replicas writing at once only one wins."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from syncd.adapters.kube import KubernetesLease
from syncd.config import ClusterSettings
from tests.conftest import ControlPlane

pytestmark = pytest.mark.kube
TTL = timedelta(seconds=2)


@pytest.fixture
def leases(control_plane: ControlPlane):  # type: ignore[no-untyped-def]
    settings = ClusterSettings(name="dev", kubeconfig=control_plane.admin_kubeconfig)
    name = f"syncd-leader-{uuid.uuid4().hex[:8]}"
    a, b = KubernetesLease(settings, "default", name), KubernetesLease(settings, "default", name)
    yield a, b
    a.close()
    b.close()
    control_plane.kubectl("delete", "lease", "-n", "default", name, check=False)


def test_the_lease_is_acquired_followed_renewed_taken_over_and_released(leases, control_plane: ControlPlane):
    a, b = leases
    assert a.step("a", TTL).holder == "a"
    assert b.step("b", TTL).holder == "a"
    assert a.step("a", TTL).holder == "a"
    deadline = time.monotonic() + 15
    while (taken := b.step("b", TTL)).holder != "b":  # a stopped renewing: b takes over once it expires
        assert time.monotonic() < deadline, "b did not take over the expired lease"
        time.sleep(0.2)
    assert taken.transitions == 2
    assert a.step("a", TTL).holder == "b"
    b.release("b")
    assert a.step("a", TTL).holder == "a"  # released: taken at once
    lease = control_plane.kubectl("get", "lease", "-n", "default", a.name, "-o",
                                  "jsonpath={.spec.holderIdentity}").stdout
    assert lease == "a"


def test_of_two_replicas_writing_the_same_version_one_wins(leases):
    a, b = leases
    assert a.step("a", TTL).holder == "a"
    a.release("a")
    seen = a._read()  # both read the released lease; b writes first, a's write of that version is refused
    assert b.step("b", TTL).holder == "b"
    reads = iter([seen])
    real_read = a._read
    a._read = lambda: next(reads, None) or real_read()  # type: ignore[method-assign]
    assert a.step("a", TTL).holder == "b"  # refused (409): a follows b
