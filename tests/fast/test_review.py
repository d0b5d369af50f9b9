"""`syncd review`'s reads on fakes and the real ledger: each role read once however many people it binds, a cluster
that stops answering left unknown (never "not privileged"), live rules judged."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syncd.core.model import RoleKind
from syncd.core.review import RbacRule, Role
from syncd.runtime.review import access_review
from tests.fakes import FakeCluster, FakeSource, person
from tests.fast.conftest import fake_clusters, make_engine, make_settings

pytestmark = pytest.mark.fast

EDIT = Role(RoleKind.CLUSTER_ROLE, "edit")


class Counting(FakeCluster):
    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.reads: list[Role] = []

    def role_rules(self, role: Role):  # noqa: ANN201
        self.reads.append(role)
        return super().role_rules(role)


def test_each_role_is_read_once_and_judged_live_and_a_cluster_down_is_unknown(tmp_path):
    people = [person(str(n), f"user{n}", "developers") for n in range(5)] + [person("9", "sre9", "sre")]
    clusters = fake_clusters("dev", "prod")
    settings = make_settings(tmp_path, clusters=("dev", "prod"))
    with make_engine(settings, FakeSource("hr", *people), clusters) as engine:
        assert engine.reconcile("hr")[0].result == "ok"
        live = Counting("dev", "syncd", namespaces={"team-a", "team-b"})
        live.rules[EDIT] = (RbacRule(("create",), ("",), ("pods/exec",)),)
        down = FakeCluster("prod", "syncd")
        down.unreachable = True
        reviews = access_review(engine.read_model, {"dev": live, "prod": down}, datetime.now(UTC), idle_after=None)
    assert sorted(live.reads, key=str) == sorted([EDIT, Role(RoleKind.CLUSTER_ROLE, "view")], key=str)
    by = {(a.username, a.cluster): a for a in reviews}
    assert len(by) == 7
    assert by[("user0", "dev")].privileged is True and by[("user0", "dev")].scopes[0].privilege.why == ("pods/exec",)
    assert by[("sre9", "dev")].privileged is False and by[("sre9", "dev")].purpose == ("sre",)
    assert by[("sre9", "prod")].privileged is None
    assert "cluster prod: read ClusterRole view" in by[("sre9", "prod")].scopes[0].privilege.note
