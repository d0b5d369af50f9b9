"""Shared fixtures. Real systems only: the tests start them on loopback themselves."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FAST_FOLDERS = ("unit", "fast")  # every test in these needs no external system (`pytest -m fast`)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).relative_to(ROOT / "tests").parts[0] in FAST_FOLDERS:
            item.add_marker(pytest.mark.fast)


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


@dataclass(frozen=True)
class PostgresServer:
    """A real PostgreSQL server started for this test session, trusting local connections."""

    port: int
    pg_ctl: tuple[str, ...] = ()  # pg_ctl as its owner, on its data directory
    options: str = ""

    def stop(self) -> None:
        """Stop it at once, as a crash would: every connection drops."""
        subprocess.run([*self.pg_ctl, "-m", "immediate", "stop"], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        subprocess.run([*self.pg_ctl, "-o", self.options, "-w", "start"], check=True, capture_output=True,
                       timeout=120)

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"syncd_{uuid.uuid4().hex[:10]}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                        "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True, timeout=30)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def started_postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server on loopback (for the `postgres` fixture and the benchmarks)."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not binaries:
        pytest.fail("PostgreSQL is not installed; run the README's test command, which installs it")
    bin_dir = binaries[-1].parent
    # PostgreSQL refuses to run as root: run it as the `postgres` user the Debian package creates.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    directory = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
    if as_owner:
        shutil.chown(directory, "postgres", "postgres")
    data, port = directory / "data", free_port()
    subprocess.run([*as_owner, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
    server = PostgresServer(port, (*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log")),
                            options)
    server.start()
    try:
        yield server
    finally:
        subprocess.run([*server.pg_ctl, "-m", "immediate", "stop"], check=False, capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with started_postgres() as started:
        yield started


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def syncd_env() -> dict[str, str]:
    """Environment for `syncd` subprocesses: JSON logs, no colour."""
    return {**os.environ, "NO_COLOR": "1", "SYNCD_LOG_LEVEL": "info"}


def self_signed_certificate(directory: Path, name: str = "tls") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, written by openssl: NAME.crt, NAME.key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key
