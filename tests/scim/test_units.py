"""Pure parts of the SCIM work: the IdP quirk rewrites, the snapshot mapping, which changes cost a reconcile, how
queued changes become runs, the commented example config."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scim2_models import Group, GroupMember, InvalidSyntaxException, User

from syncd.adapters.ledger import Database, ScimRecord, ScimStore
from syncd.adapters.scim_pull import snapshot_of
from syncd.config import ConfigError, Settings, load_settings
from syncd.core.policy import Policy
from syncd.runtime.engine import RunReport
from syncd.scim.quirks import ENTERPRISE, MANAGER, MAX_DEPTH, PATCH_OP, normalise
from syncd.scim.reconciler import Reconciler
from syncd.scim.storage import Relevance
from tests.conftest import ROOT

KNOWN = {"urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE}


def rewrite(method: str, body: dict) -> dict:
    return json.loads(normalise(json.dumps(body).encode(), method, KNOWN))


def test_legacy_member_removal_becomes_one_filtered_remove_per_member():
    body = {"schemas": [PATCH_OP], "Operations": [
        {"op": "Remove", "path": "members", "value": [{"value": "a"}, {"value": 'b"c'}]}]}
    assert rewrite("PATCH", body)["Operations"] == [
        {"op": "remove", "path": 'members[value eq "a"]'}, {"op": "remove", "path": 'members[value eq "b\\"c"]'}]


def test_a_bare_manager_becomes_a_reference_wherever_it_appears():
    assert rewrite("POST", {"schemas": [], ENTERPRISE: {"manager": "m"}})[ENTERPRISE]["manager"] == {"value": "m"}
    operations = rewrite("PATCH", {"schemas": [PATCH_OP], "Operations": [
        {"op": "Add", "path": MANAGER, "value": "m1"},
        {"op": "Replace", "value": {MANAGER: "m2", ENTERPRISE: {"manager": "m3"}, "urn:x:y": 1}}]})["Operations"]
    assert operations == [
        {"op": "add", "path": MANAGER, "value": {"value": "m1"}},
        {"op": "replace", "value": {MANAGER: {"value": "m2"}, ENTERPRISE: {"manager": {"value": "m3"}}}}]


def test_foreign_schemas_are_dropped_and_anything_else_passes_untouched():
    body = rewrite("POST", {"schemas": [*KNOWN, "urn:acme:ext"], "urn:acme:ext": {"a": 1}, "userName": "x"})
    assert set(body["schemas"]) == KNOWN and "urn:acme:ext" not in body
    for raw in (b"{not json", b"[1, 2]", b'"text"'):
        assert normalise(raw, "PATCH", KNOWN) == raw


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["schemas", "Operations", "op", "path", "value", "members", ENTERPRISE, "manager",
                         "urn:x:y", MANAGER]), inner, max_size=3),
    max_leaves=20)


@given(json_values, st.sampled_from(["PATCH", "POST", "PUT", "GET"]))
@example(5, "PATCH")
def test_any_json_is_rewritten_or_passed_on_never_an_error(value, method: str):
    # Whatever the shape (`"schemas": 5`, an op that is a list, ...), the core judges it: no exception here.
    for body in (value, {"schemas": [PATCH_OP], "Operations": value}, {"schemas": value, "Operations": [value]}):
        json.loads(normalise(json.dumps(body).encode(), method, KNOWN))


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
                                  b'{"v": "' + b"[" * 100 + b'", "w": ' + b"[" * MAX_DEPTH + b"x"])
def test_bodies_nested_too_deep_are_invalid_syntax(body: bytes):
    with pytest.raises(InvalidSyntaxException):
        normalise(body, "POST", KNOWN)


def test_bodies_nested_up_to_the_limit_and_brackets_in_strings_pass():
    deep = {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "x", "value": json.loads(
        "[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3))}], "note": "[{" * 1000 + '\\"[' * 1000}
    assert rewrite("PATCH", deep)["note"] == deep["note"]


def test_snapshot_maps_users_and_groups_and_flags_broken_users():
    users = [{"id": "1", "userName": "ann", "active": False, "emails": [{"value": "a@x.org", "type": "work"}],
              "name": {"givenName": "Ann", "familyName": "Lee"}, ENTERPRISE: {"department": "ops"}},
             {"id": "2"}]
    groups = [{"displayName": "sre", "members": [{"value": "1"}]}, {"displayName": "", "members": [{"value": "1"}]}]
    snapshot = snapshot_of("idp", users, groups)
    (ann,) = snapshot.identities
    assert (ann.username, ann.email, ann.display_name, ann.groups, ann.active) == (
        "ann", "a@x.org", "Ann Lee", frozenset({"sre"}), False)
    assert ann.attributes == {"department": "ops"}
    assert not snapshot.complete and snapshot.problems == ("user 2: no userName",)


RELEVANCE = Relevance(Policy.model_validate({"rules": [
    {"name": "devs", "match": {"groups": ["developers"]},
     "grant": [{"cluster": "dev", "namespaces": ["a"], "role": "edit"}]},
    {"name": "leads", "match": {"attributes": {"title": "lead"}},
     "grant": [{"cluster": "dev", "namespaces": ["b"], "role": "view"}]},
]}))


def user(**fields) -> User:
    return User(id="u1", user_name="ann", **fields)


def group(name: str, *members: str) -> Group:
    return Group(id="g1", display_name=name, members=[GroupMember(value=m) for m in members] or None)


def test_only_changes_that_can_alter_access_cost_a_reconcile():
    touched = RELEVANCE.touched
    assert touched("User", None, user()) == frozenset()  # a joiner in no group yet: nothing to grant
    assert touched("User", None, user(title="lead")) == {"u1"}  # the policy entitles them as they are
    assert touched("User", user(), user(display_name="Ann", emails=None, locale="fr")) == frozenset()
    assert touched("User", user(title="dev"), user(title="lead")) == {"u1"}  # an attribute a rule matches on
    assert touched("User", user(), user(active=False)) == {"u1"}
    assert touched("User", user(), user().model_copy(update={"user_name": "anne"})) == {"u1"}
    assert touched("User", user(), None) == {"u1"}
    assert touched("Group", group("developers", "a", "b"), group("developers", "b", "c")) == {"a", "c"}
    assert touched("Group", group("developers", "a"), group("admins", "a")) == {"a"}  # renamed
    assert touched("Group", None, group("developers", "a")) == {"a"}
    assert touched("Group", group("developers", "a", "b"), None) == {"a", "b"}
    assert touched("Group", group("developers", "a"), group("developers", "a")) == frozenset()


class RecordingEngine:
    """Stands in for the engine: records each targeted run (when it started, whom it covered) and takes a while."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, frozenset[str]]] = []
        self.lock = threading.Lock()

    def reconcile(self, source: str, *, only: frozenset[str]) -> list[RunReport]:
        with self.lock:
            self.runs.append((time.monotonic(), only))
        time.sleep(0.02)
        return [RunReport(source, dry_run=False)]


def test_lone_changes_run_at_once_and_a_burst_waits_for_the_batch_interval():
    engine = RecordingEngine()
    reconciler = Reconciler(engine, batch_interval=1.0)  # type: ignore[arg-type]

    def run(source: str, *people: str) -> float:
        """Submit, wait until reconciled; how long after the previous run this one started."""
        previous = engine.runs[-1][0] if engine.runs else time.monotonic()
        reconciler.submit(source, frozenset(people))
        assert reconciler.wait_idle(5) and engine.runs[-1][1] == frozenset(people)
        return engine.runs[-1][0] - previous

    try:
        run("idp", "p0")
        assert run("idp", "p1") < 0.5, "a lone change after a lone change waited"
        assert run("idp", *(f"b{n}" for n in range(20))) >= 1.0, "a burst did not wait for the interval"
        assert run("idp", "p2") >= 1.0, "right after a burst, the next change did not wait"
        assert run("hr", "x") < 0.5, "another source waited for this one's interval"
    finally:
        reconciler.close()


def uncomment(lines: list[str], first: str) -> list[str]:
    """The commented block starting with `first`: its lines, uncommented, up to the first line that is not."""
    start = next(n for n, line in enumerate(lines) if line.strip() == f"# {first}")
    block = []
    for line in lines[start:]:
        uncommented = line.replace("# ", "", 1)
        if not line.lstrip().startswith("#") or not re.match(r"\s*(- )?[a-z_]+:", uncommented):
            break
        block.append(uncommented)
    return block


def test_the_commented_scim_example_is_valid(tmp_path):
    lines = (ROOT / "configs" / "syncd.example.yaml").read_text().splitlines()
    sources = lines.index("sources:")
    push, pull = uncomment(lines, "- name: okta"), uncomment(lines, "- name: directory")
    assert len(push) == 3 and len(pull) == 7
    enabled = lines[:sources + 1] + push + pull + lines[sources + 1:] + uncomment(lines, "scim:")
    config = tmp_path / "syncd.yaml"
    config.write_text("\n".join(enabled).replace("policy.example.yaml", str(ROOT / "configs" / "policy.example.yaml"))
                      .replace("people.example.csv", str(ROOT / "configs" / "people.example.csv")))
    settings = load_settings(config)
    assert settings.scim is not None and settings.scim.tenants[0].source == "okta"
    assert [(s.name, s.type) for s in settings.sources] == [("okta", "scim"), ("directory", "scim"), ("hr", "file")]
    assert isinstance(settings, Settings)


def test_tls_needs_both_halves(tmp_path):
    config = tmp_path / "syncd.yaml"
    config.write_text(json.dumps({"policy": "p.yaml", "sources": [{"name": "i", "type": "scim", "mode": "push"}],
                                  "clusters": [{"name": "c", "kubeconfig": "k"}],
                                  "scim": {"tls_cert": "c.pem", "tenants": [{"name": "t", "source": "i",
                                                                            "token_file": "t"}]}}))
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        load_settings(config)


def test_source_test_reads_a_push_source_from_the_ledger(tmp_path):
    token = tmp_path / "okta.token"
    token.write_text("okta-tenant-token-0123456789abcdef")
    token.chmod(0o600)
    (tmp_path / "policy.yaml").write_text("rules: []\n")
    (tmp_path / "syncd.yaml").write_text(json.dumps({
        "policy": "policy.yaml", "ledger": {"url": "sqlite:///ledger.db"},
        "sources": [{"name": "idp", "type": "scim", "mode": "push"}],
        "clusters": [{"name": "dev", "kubeconfig": "unused", "namespace": "syncd"}],
        "scim": {"tenants": [{"name": "okta", "source": "idp", "token_file": "okta.token"}]}}))
    with Database(f"sqlite:///{tmp_path}/ledger.db") as database:
        ScimStore(database).create("okta", "idp", ScimRecord("User", "u1", {"id": "u1", "userName": "alice"}))
    done = subprocess.run([sys.executable, "-m", "syncd", "source", "test", "--config", str(tmp_path / "syncd.yaml"),
                           "--output", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert (result["source"], result["people"], result["sample"]["username"]) == ("idp", 1, "alice")
