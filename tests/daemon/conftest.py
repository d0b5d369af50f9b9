"""`syncd run` as a real subprocess: a datagram socket standing in for systemd's NOTIFY_SOCKET, real HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.integration.conftest import World, world  # noqa: F401  (the fixture, for these tests too)
from tests.ldap.conftest import directory, ldap_world, slapd  # noqa: F401  (a real slapd for the LDAP source)

START_TIMEOUT = 60.0


@dataclass
class RunningDaemon:
    world: World
    process: subprocess.Popen
    port: int
    notify: socket.socket
    log_path: Path
    messages: list[str] = field(default_factory=list)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def get_json(self, path: str) -> tuple[int, dict]:
        status, body = self.get(path)
        return status, json.loads(body)

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample on /metrics, or None when absent."""
        _, body = self.get("/metrics")
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in body.splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, label_text = sample.partition("{")
            if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
                return float(value)
        return None

    def read_notifications(self) -> list[str]:
        """Everything sent to NOTIFY_SOCKET so far."""
        return list(self.messages)

    def drain_notifications(self) -> None:
        """Read NOTIFY_SOCKET until it is closed, as systemd would (a full socket would drop notifications)."""
        while True:
            try:
                self.messages.extend(self.notify.recv(4096).decode().split("\n"))
            except OSError:
                return

    def wait_notification(self, predicate: Callable[[str], bool], timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.read_notifications() if predicate(m)]
            if found:
                return found[-1]
            self.assert_alive()
            assert time.monotonic() < deadline, f"no such notification in {timeout} s; got {self.messages}"
            time.sleep(0.2)

    def wait_until(self, check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            self.assert_alive()
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s\n{self.log_text()[-3000:]}"
            time.sleep(0.5)

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"syncd run exited {self.process.returncode}\n{self.log_text()[-4000:]}"

    def log_text(self) -> str:
        return self.log_path.read_text()

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def ledger_events(self, **filters: str) -> list[dict]:
        args = [arg for key, value in filters.items() for arg in (f"--{key}", value)]
        done = self.world.syncd("ledger", "log", "--config", str(self.world.config), "--output", "json", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def revocations(self) -> list[dict]:
        """Revocations applied (held ones are recorded too, with result `held`)."""
        return [e for e in self.ledger_events() if e["action"] == "revoke" and e["result"] != "held"]

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        self.send(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@pytest.fixture
def start_daemon(world: World) -> Iterator[Callable[..., RunningDaemon]]:  # noqa: F811
    """Start `syncd run` on the world's config, with `daemon:` settings merged in."""
    started: list[RunningDaemon] = []
    sockets = Path(tempfile.mkdtemp(prefix="syncd-notify-"))  # short: socket paths are limited to 108 bytes

    def start(**daemon: Any) -> RunningDaemon:
        port = free_port()
        world.configure(daemon={"listen": "127.0.0.1", "port": port, "backoff": {"initial": "1s", "max": "5s"}}
                        | daemon)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(sockets / f"notify-{len(started)}"))
        log_path = world.directory / f"daemon-{len(started)}.log"
        env = world.env | {"NOTIFY_SOCKET": notify.getsockname(), "WATCHDOG_USEC": "2000000"}
        with log_path.open("w") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "syncd", "run", "--config", str(world.config)],
                                       stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=world.directory)
        running = RunningDaemon(world, process, port, notify, log_path)
        started.append(running)
        threading.Thread(target=running.drain_notifications, daemon=True).start()
        running.wait_notification(lambda m: m == "READY=1")
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(timeout=30)
        running.notify.shutdown(socket.SHUT_RDWR)
        running.notify.close()
    shutil.rmtree(sockets, ignore_errors=True)

