"""Shared fixtures. Real systems only: the tests start them on loopback themselves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ControlPlane:
    """A real etcd + kube-apiserver + kube-controller-manager started for this test session."""

    directory: Path
    admin_kubeconfig: Path

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The API server hangs (SIGSTOP), as a cluster behind a dead network would, then comes back."""
        pid = int((self.directory / "kube-apiserver.pid").read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def kubectl(self, *args: str, kubeconfig: Path | None = None, check: bool = True, stdin: str | None = None
                ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig or self.admin_kubeconfig), *args],
            input=stdin, capture_output=True, text=True, check=check, timeout=60,
        )


@contextmanager
def started_control_plane(directory: Path) -> Iterator[ControlPlane]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not installed; run the README's test command, which installs it")
    script = ROOT / "scripts" / "kube-control-plane"
    started = subprocess.run([str(script), "start", str(directory)], capture_output=True, text=True, timeout=1800)
    if started.returncode != 0:
        pytest.fail(f"the control plane did not start:\n{started.stderr[-4000:]}")
    try:
        yield ControlPlane(directory, Path(started.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run([str(script), "stop", str(directory)], check=False, timeout=60)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with started_control_plane(tmp_path_factory.mktemp("kube")) as started:
        yield started


@pytest.fixture(scope="session")
def second_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Another cluster, for people with access to several."""
    with started_control_plane(tmp_path_factory.mktemp("kube-second")) as started:
        yield started


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def syncd_env() -> dict[str, str]:
    """Environment for `syncd` subprocesses: JSON logs, no colour."""
    return {**os.environ, "NO_COLOR": "1", "SYNCD_LOG_LEVEL": "info"}
