"""A world per test on the shared control plane: its own namespaces, people file, ledger and delivery folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from syncd.core.model import person_key
from tests.conftest import ControlPlane, write_yaml


@dataclass
class World:
    control_plane: ControlPlane
    directory: Path
    suffix: str
    env: dict[str, str]
    settings: dict = field(default_factory=dict)
    policy: dict = field(default_factory=dict)

    def configure(self, **sections: dict) -> None:
        """Merge these sections into syncd.yaml (e.g. tokens={...}; a list such as sources=[...] replaces) and
        write it."""
        for name, values in sections.items():
            self.settings[name] = self.settings.get(name, {}) | values if isinstance(values, dict) else values
        write_yaml(self.config, self.settings)

    def set_policy(self, defaults: dict | None = None, extra_rules: tuple[dict, ...] = ()) -> None:
        if defaults:
            self.policy["defaults"] = self.policy.get("defaults", {}) | defaults
        self.policy["rules"] = self.policy["rules"][:2] + list(extra_rules)
        write_yaml(self.directory / "policy.yaml", self.policy)

    @property
    def config(self) -> Path:
        return self.directory / "syncd.yaml"

    @property
    def system_namespace(self) -> str:
        return f"syncd-{self.suffix}"

    def ns(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    def write_people(self, *rows: dict[str, str]) -> None:
        with (self.directory / "people.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["id", "username", "email", "groups", "active"])
            writer.writeheader()
            for row in rows:
                writer.writerow({"email": f"{row['username']}@example.org", "active": "true"} | row)

    def syncd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True, text=True,
                              env=self.env, timeout=300)

    def reconcile(self, *args: str, expect: int = 0) -> dict:
        done = self.syncd("reconcile", "--config", str(self.config), "--output", "json", *args)
        assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        self.last_stderr = done.stderr
        return json.loads(done.stdout)["runs"][0]

    def add_cluster(self, name: str, control_plane: ControlPlane, **extra: object) -> None:
        self.settings["clusters"].append({"name": name, "kubeconfig": str(control_plane.admin_kubeconfig),
                                          "namespace": self.system_namespace, **extra})
        write_yaml(self.config, self.settings)

    def folder(self, who: str, cluster: str = "dev") -> Path:
        """A person's delivery folder, found by their id (it names the folder) or by the username their kubeconfig
        names; the id's folder, absent, when nothing is delivered."""
        by_id = self.directory / "kubeconfigs" / person_key(who)
        if (by_id / f"{cluster}.kubeconfig").exists():
            return by_id
        named = [path.parent for path in (self.directory / "kubeconfigs").glob(f"*/{cluster}.kubeconfig")
                 if f"{who}@{cluster}" in [user["name"] for user in yaml.safe_load(path.read_text())["users"]]]
        assert len(named) <= 1, f"{who!r} names several people's kubeconfigs: {named}"
        return named[0] if named else by_id

    def kubeconfig(self, who: str, cluster: str = "dev") -> Path:
        return self.folder(who, cluster) / f"{cluster}.kubeconfig"

    def token(self, who: str, cluster: str = "dev") -> str:
        return (self.folder(who, cluster) / f"{cluster}.token").read_text()

    def token_user(self, token: str) -> str | None:
        """Ask the API server, as admin, who a token logs in as (TokenReview); None once it is rejected."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        status = json.loads(self.control_plane.kubectl("create", "-f", "-", "-o", "json",
                                                       stdin=json.dumps(review)).stdout)["status"]
        return status["user"]["username"] if status.get("authenticated") else None

    def token_authenticates(self, token: str) -> bool:
        return self.token_user(token) is not None

    def wait_until_rejected(self, token: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.token_authenticates(token):
            assert time.monotonic() < deadline, f"the revoked token still authenticates after {timeout} s"
            time.sleep(1)

    def keep_copy(self, who: str) -> Path:
        """What a leaver might keep: a copy of the delivered kubeconfig and token, outside syncd's reach."""
        token = self.directory / f"kept-{person_key(who)}.token"
        token.write_text(self.token(who))
        kept = self.directory / f"kept-{person_key(who)}.kubeconfig"
        kept.write_text(self.kubeconfig(who).read_text().replace(str(self.folder(who) / "dev.token"), str(token)))
        return kept

    def can(self, username: str, verb: str, resource: str, namespace: str, cluster: str = "dev") -> str:
        done = self.control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace,
                                          kubeconfig=self.kubeconfig(username, cluster), check=False)
        return done.stdout.strip() or done.stderr.strip()

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.control_plane.kubectl(*args, "-o", "json").stdout)

    @property
    def our_labels(self) -> list[str]:
        return ["app.kubernetes.io/managed-by=syncd", f"syncd.io/instance={self.system_namespace}"]

    def label_ours(self, kind: str, name: str, namespace: str | None, person: str, *labels: str) -> None:
        """Put our labels on an object made by hand, as if syncd had made it for `person`."""
        where = ["-n", namespace] if namespace else []
        self.control_plane.kubectl("label", kind, name, *where, *self.our_labels, f"syncd.io/person={person}",
                                   *labels)

    def ours(self, kind: str, person: str | None = None) -> list[dict]:
        selector = ",".join(self.our_labels) + (f",syncd.io/person={person}" if person else "")
        scope = ["-n", self.system_namespace] if kind in ("serviceaccounts", "secrets") else ["-A"]
        items = self.kubectl_json("get", kind, *scope, "-l", selector)["items"]
        if kind in ("rolebindings",):
            mine = {self.ns("team-a"), self.ns("team-b")}
            items = [i for i in items if i["metadata"]["namespace"] in mine]
        return items


@pytest.fixture
def world(control_plane: ControlPlane, tmp_path: Path, syncd_env: dict[str, str]) -> World:
    suffix = uuid.uuid4().hex[:6]
    w = World(control_plane, tmp_path, suffix, syncd_env)
    for name in ("team-a", "team-b"):
        control_plane.kubectl("create", "namespace", w.ns(name))
    w.policy = {
        "defaults": {"token_ttl": "1h"},
        "rules": [
            {"name": "developers", "match": {"groups": ["developers"]},
             "grant": [{"cluster": "dev", "namespaces": [w.ns("team-a")], "role": "edit"}]},
            {"name": "sre", "match": {"groups": ["sre"]},
             "grant": [{"cluster": "dev", "namespaces": [w.ns("team-b")], "role": "view"}]},
        ],
    }
    write_yaml(tmp_path / "policy.yaml", w.policy)
    w.settings = {
        "policy": "policy.yaml",
        "ledger": {"url": "sqlite:///ledger.db"},
        "sources": [{"name": "hr", "type": "file", "path": "people.csv"}],
        "clusters": [{"name": "dev", "kubeconfig": str(control_plane.admin_kubeconfig),
                      "namespace": w.system_namespace}],
        "delivery": {"directory": "kubeconfigs"},
        "tokens": {"confirm_revocation_timeout": "90s"},
    }
    write_yaml(w.config, w.settings)
    return w
