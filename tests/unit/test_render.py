"""How plans, runs and ledger events read: every kind of action for every reason, as text and JSON; the log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from syncd.adapters.ledger.tables import EventRow
from syncd.app import render
from syncd.app.render import plan_text, report_json
from syncd.core.model import Access, Identity, ObservedBinding, RoleKind, Scope
from syncd.core.plan import Action, Held, IdleAccess, Kind, Plan, Reason
from syncd.errors import ClusterRejected
from syncd.runtime.apply import Outcome
from syncd.runtime.engine import RunReport

EDIT = Scope("team-a", RoleKind.CLUSTER_ROLE, "edit")
ADMIN = Scope("team-a", RoleKind.CLUSTER_ROLE, "admin")


def action(kind: Kind, reason: Reason) -> Action:
    return Action(kind, reason, "dev", "1001", "alice", before=frozenset({ADMIN}), after=frozenset({EDIT}),
                  access=Access("dev", frozenset({EDIT}), timedelta(hours=1), timedelta(days=1)),
                  identity=Identity("1001", "alice"), create_bindings=(EDIT,),
                  delete_bindings=(ObservedBinding("syncd-old", "team-a", ADMIN, True),),
                  token_secrets=("syncd-1001-old",), service_accounts=("syncd-1001",), new_token=True,
                  previous_username="al", instance="syncd")


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("dry_run", [True, False])
def test_every_kind_and_reason_renders(kind: Kind, reason: Reason, dry_run: bool):
    applied, failed, held = action(kind, reason), action(kind, reason), action(kind, reason)
    plan = Plan("hr", (applied, failed), (Held(held, "reported only"),), notes=("cluster dev: a warning",))
    report = RunReport("hr", dry_run, run_id=None if dry_run else "run-1", plan=plan, writes=3,
                       outcome=Outcome(applied=[applied], failed=[(failed, ClusterRejected("refused"))]))

    text = plan_text(report)
    assert text.count(f" {kind} ") >= 2 and text.count(f"alice on dev ({reason})") == 3
    assert "FAILED: refused" in text and "! warning: cluster dev: a warning" in text
    assert "- rolebinding team-a/syncd-old (ClusterRole/admin)" in text

    data = json.loads(json.dumps(report_json(report)))
    assert [(a["kind"], a["reason"], a["error"]) for a in data["actions"]] == [
        (str(kind), str(reason), None), (str(kind), str(reason), "refused")]
    assert data["held"][0]["kind"] == str(kind) and data["notes"] == ["cluster dev: a warning"]
    assert {"op": "-", "kind": "RoleBinding", "namespace": "team-a", "name": "syncd-old",
            "detail": "ClusterRole/admin"} in data["actions"][0]["changes"]


def test_idle_accesses_render_with_the_time_since_which_they_were_not_used():
    since = datetime(2026, 10, 1, 8, tzinfo=UTC)
    report = RunReport("hr", True, plan=Plan("hr", idle=(IdleAccess("1001", "alice", "dev", since),)))
    assert "! idle    alice on dev: no use since 2026-10-01 08:00:00" in plan_text(report)
    assert report_json(report)["idle"] == [{"person_id": "1001", "username": "alice", "cluster": "dev",
                                            "since": "2026-10-01T08:00:00+00:00"}]


def test_accesses_render_active_and_suspended_with_their_last_use():
    granted, since = datetime(2026, 10, 1, 8, tzinfo=UTC), datetime(2026, 11, 2, 9, tzinfo=UTC)
    last_used = {("1001", "dev"): datetime(2026, 10, 2, 10, tzinfo=UTC)}
    entries = [render.access_json("1001", "alice", "dev", "suspended", since, frozenset(), last_used),
               render.access_json("1002", "bob", "dev", "active", granted, frozenset({EDIT}), last_used)]
    assert entries[0] == {"person": "alice", "person_id": "1001", "cluster": "dev", "state": "suspended",
                          "since": "2026-11-02T09:00:00+00:00", "last_used": "2026-10-02T10:00:00+00:00",
                          "scopes": []}
    lines = render.accesses_text(entries).splitlines()
    assert lines[1].split() == ["alice", "dev", "suspended", "2026-11-02", "09:00:00", "2026-10-02", "10:00:00", "-"]
    assert lines[2].split() == ["bob", "dev", "active", "2026-10-01", "08:00:00", "never", "team-a:ClusterRole/edit"]


def test_the_text_log_tells_two_people_with_one_username_apart():
    def event(seq: int, person_id: str) -> EventRow:
        return EventRow(seq=seq, at=datetime(2026, 11, 25, 12, tzinfo=UTC), person_id=person_id, username="alex",
                        cluster="dev", action="issue", reason="joiner", prev_hash="", hash="")

    first, second = render.event_text(event(1, "1001")), render.event_text(event(2, "u-2002"))
    assert "issue alex (id 1001) on dev (joiner) ok" in first
    assert "issue alex (id u-2002) on dev (joiner) ok" in second
