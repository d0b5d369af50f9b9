"""The access review from the ledger's record and the roles' rules (pure), and how it reads: JSON, CSV (RFC 4180),
the table, and the one-file HTML report with every value escaped."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from syncd.app.review import review_csv, review_html, review_json, review_table
from syncd.core.model import KnownAccess, KnownCredential, KnownPerson, RoleKind, Scope, person_key
from syncd.core.review import RbacRule, Role, RoleRules, review

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
EDIT_A = Scope("team-a", RoleKind.CLUSTER_ROLE, "edit")
VIEW_B = Scope("team-b", RoleKind.CLUSTER_ROLE, "view")
EDIT_RULES = (RbacRule(("get", "list"), ("",), ("secrets",)), RbacRule(("create",), ("",), ("pods/exec",)))
VIEW_RULES = (RbacRule(("get", "list", "watch"), ("",), ("pods", "configmaps")),)
ROLES = {"dev": {Role(RoleKind.CLUSTER_ROLE, "edit"): RoleRules(EDIT_RULES),
                 Role(RoleKind.CLUSTER_ROLE, "view"): RoleRules(VIEW_RULES)}}


def holder(pid: str, username: str, *scopes: Scope, rule: str = "developers", cluster: str = "dev",
           recorded: bool = True) -> KnownPerson:
    purpose = frozenset((scope, rule) for scope in scopes) if recorded else None
    credential = KnownCredential(f"syncd-{pid}-x", f"sha256:{pid}", NOW - timedelta(hours=1),
                                 NOW + timedelta(hours=7), None, purpose)
    return KnownPerson(pid, "hr", username, {cluster: KnownAccess(cluster, frozenset(scopes), credential)})


def reviewed(*people: KnownPerson, roles=ROLES, last_used=None, idle_after=None):
    return review(people, roles, last_used or {}, NOW, idle_after)


def test_each_scope_shows_the_rules_granting_it_and_whether_it_is_privileged():
    (access,) = reviewed(holder("1", "alice", EDIT_A, VIEW_B))
    assert [(str(s.scope), s.rules, s.privilege.privileged, s.privilege.why) for s in access.scopes] == [
        ("team-a:ClusterRole/edit", ("developers",), True, ("secrets read", "pods/exec")),
        ("team-b:ClusterRole/view", ("developers",), False, ())]
    assert access.privileged is True and access.purpose == ("developers",)
    assert access.expires_at == NOW + timedelta(hours=7) and access.fingerprint == "sha256:1"


def test_a_cluster_that_could_not_be_read_leaves_privilege_unknown_never_false():
    (access,) = reviewed(holder("1", "alice", VIEW_B), roles={})
    assert access.privileged is None and access.scopes[0].privilege.note


def test_a_purpose_never_recorded_is_shown_as_such():
    (access,) = reviewed(holder("1", "alice", VIEW_B, recorded=False))
    assert access.purpose is None and access.scopes[0].rules is None


def test_last_use_is_the_person_s_on_that_cluster():
    used = NOW - timedelta(days=2)
    (access,) = reviewed(holder("1", "alice", VIEW_B), last_used={(person_key("1"), "dev"): used})
    assert access.last_used == used and access.idle is None


def test_idle_is_judged_only_with_idle_after_as_the_lifecycle_judges_it():
    granted = NOW - timedelta(days=40)
    alice = replace(holder("1", "alice", VIEW_B), access={"dev": replace(
        holder("1", "alice", VIEW_B).access["dev"], granted_at=granted)})
    assert reviewed(alice)[0].idle is None
    assert reviewed(alice, idle_after=timedelta(days=30))[0].idle is True
    recently = {(person_key("1"), "dev"): NOW - timedelta(days=1)}
    assert reviewed(alice, last_used=recently, idle_after=timedelta(days=30))[0].idle is False


def test_people_are_listed_by_username_and_filtered_by_cluster():
    people = (holder("2", "bob", VIEW_B), holder("1", "alice", EDIT_A), holder("3", "carol", VIEW_B, cluster="prod"))
    assert [a.username for a in reviewed(*people)] == ["alice", "bob", "carol"]
    assert [a.username for a in review(people, ROLES, {}, NOW, None, "prod")] == ["carol"]


NASTY = "<script>alert('x')</script> & \"Ünïcødé, \"quoted\"\nnext line"


def test_csv_is_rfc_4180_and_reads_back_exactly():
    text = review_csv(reviewed(holder("1", NASTY, EDIT_A, rule="a, \"b\"\nc")))
    assert text.endswith("\r\n") and text.startswith("username,person_id,cluster,scope,granted_by,privileged,")
    (row,) = list(csv.DictReader(io.StringIO(text, newline="")))
    assert row["username"] == NASTY and row["granted_by"] == "a, \"b\"\nc"
    assert row["privileged"] == "yes" and row["why"] == "secrets read, pods/exec"
    assert '"<script>alert(\'x\')</script> & ""Ünïcødé, ""quoted""\nnext line"' in text


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.tags.append(tag)
        if tag == "td":
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag):  # noqa: ANN001
        self._in_cell = self._in_cell and tag != "td"

    def handle_data(self, data):  # noqa: ANN001
        if self._in_cell:
            self.cells[-1] += data


def test_html_is_one_file_with_every_value_escaped():
    page = review_html(reviewed(holder("<b>1</b>", NASTY, EDIT_A, rule="<img src=x onerror=alert(1)>")), NOW, None)
    parsed = Cells()
    parsed.feed(page)
    assert parsed.tags.count("script") == 1, "a value opened a script element"
    assert "img" not in parsed.tags and "b" not in parsed.tags
    assert NASTY in parsed.cells and "<b>1</b>" in parsed.cells and "<img src=x onerror=alert(1)>" in parsed.cells
    assert "<link" not in page and "src=\"http" not in page and "@media print" in page


def test_json_is_stable_and_says_unknown_as_null():
    people = (holder("1", "alice", EDIT_A), holder("2", "bob", VIEW_B, cluster="prod"))
    first = json.dumps(review_json(reviewed(*people), NOW, None), sort_keys=True)
    again = json.dumps(review_json(reviewed(*reversed(people)), NOW, None), sort_keys=True)
    assert first == again
    data = json.loads(first)
    assert [(a["username"], a["privileged"], a["purpose"]) for a in data["access"]] == [
        ("alice", True, ["developers"]), ("bob", None, ["developers"])]
    assert data["access"][0]["scopes"][0] == {
        "scope": "team-a:ClusterRole/edit", "namespace": "team-a", "role_kind": "ClusterRole", "role": "edit",
        "granted_by": ["developers"], "privileged": True, "why": ["secrets read", "pods/exec"], "note": None}


def test_the_table_has_a_line_per_scope():
    text = review_table(reviewed(holder("1", "alice", EDIT_A, VIEW_B)))
    assert len(text.splitlines()) == 3 and "secrets read" in text and "developers" in text
