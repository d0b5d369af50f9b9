"""A credential's purpose, end to end on fakes and the real ledger: issued with the rules that grant it, updated by
a rescope when other rules grant the access, shown by `token list`."""

from __future__ import annotations

import copy

import pytest

from syncd.adapters.ledger import ReadModel
from syncd.app import render
from tests.fakes import FakeSource, person
from tests.fast.conftest import POLICY, fake_clusters, make_engine, make_settings

pytestmark = pytest.mark.fast

ALICE = person("1", "alice", "developers")


def listed(read_model: ReadModel) -> list[dict]:
    return [render.credential_json(*row) for row in read_model.credentials()]


def test_a_credential_records_its_purpose_and_a_rescope_follows_the_rules(tmp_path):
    source, clusters = FakeSource("hr", ALICE), fake_clusters("dev")
    settings = make_settings(tmp_path)
    with make_engine(settings, source, clusters) as engine:
        (report,) = engine.reconcile("hr")
        assert [(a.kind, a.reason) for a in report.plan.actions] == [("issue", "joiner")]
        assert [c["purpose"] for c in listed(engine.read_model)] == [["developers"]]

    renamed = copy.deepcopy(POLICY)
    renamed["rules"][0]["name"] = "team-a engineers"  # the same grant, now under another rule
    with make_engine(settings, source, clusters, renamed) as engine:
        (report,) = engine.reconcile("hr")
        assert [(a.kind, a.reason) for a in report.plan.actions] == [("rescope", "purpose")]
        assert report.result == "ok"
        (credential,) = listed(engine.read_model)
        assert credential["purpose"] == ["team-a engineers"] and credential["state"] == "active"
        assert "team-a engineers" in render.credentials_text(engine.read_model.credentials())
        (again,) = engine.reconcile("hr")
        assert not again.plan.actions, "a recorded purpose that matches the policy planned work"


def test_usage_shows_the_purpose_of_each_cluster_s_newest_credential_a_leaver_s_too(tmp_path):
    source, clusters = FakeSource("hr", ALICE), fake_clusters("dev")
    with make_engine(make_settings(tmp_path), source, clusters) as engine:
        engine.reconcile("hr")
        source.set()
        engine.reconcile("hr", allow_mass_revocation=True)
        purposes = engine.read_model.purposes("1")
    assert render.usage_json("1", "alice", [], purposes)["purpose"] == {"dev": ["developers"]}
    assert "purpose on dev: developers" in render.usage_text("1", "alice", [], purposes)
