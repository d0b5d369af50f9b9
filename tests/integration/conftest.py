"""A world per test on the shared control plane: its own namespaces, people file, ledger and delivery folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ControlPlane, write_yaml


@dataclass
class World:
    control_plane: ControlPlane
    directory: Path
    suffix: str
    env: dict[str, str]

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

    def kubeconfig(self, username: str) -> Path:
        return self.directory / "kubeconfigs" / username / "dev.kubeconfig"

    def keep_copy(self, username: str) -> Path:
        """What a leaver might keep: a copy of the delivered kubeconfig and token, outside syncd's reach."""
        token = self.directory / f"kept-{username}.token"
        token.write_text((self.directory / "kubeconfigs" / username / "dev.token").read_text())
        kept = self.directory / f"kept-{username}.kubeconfig"
        kept.write_text(self.kubeconfig(username).read_text().replace(
            str(self.directory / "kubeconfigs" / username / "dev.token"), str(token)))
        return kept

    def can(self, username: str, verb: str, resource: str, namespace: str) -> str:
        done = self.control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace,
                                          kubeconfig=self.kubeconfig(username), check=False)
        return done.stdout.strip() or done.stderr.strip()

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.control_plane.kubectl(*args, "-o", "json").stdout)

    def ours(self, kind: str, person: str | None = None) -> list[dict]:
        selector = "app.kubernetes.io/managed-by=syncd" + (f",syncd.io/person={person}" if person else "")
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
    write_yaml(tmp_path / "policy.yaml", {
        "defaults": {"token_ttl": "1h"},
        "rules": [
            {"name": "developers", "match": {"groups": ["developers"]},
             "grant": [{"cluster": "dev", "namespaces": [w.ns("team-a")], "role": "edit"}]},
            {"name": "sre", "match": {"groups": ["sre"]},
             "grant": [{"cluster": "dev", "namespaces": [w.ns("team-b")], "role": "view"}]},
        ],
    })
    write_yaml(w.config, {
        "policy": "policy.yaml",
        "ledger": {"url": "sqlite:///ledger.db"},
        "sources": [{"name": "hr", "type": "file", "path": "people.csv"}],
        "clusters": [{"name": "dev", "kubeconfig": str(control_plane.admin_kubeconfig),
                      "namespace": w.system_namespace}],
        "delivery": {"directory": "kubeconfigs"},
        "tokens": {"confirm_revocation_timeout": "90s"},
    })
    return w
