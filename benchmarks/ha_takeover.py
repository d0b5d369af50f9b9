"""Leader takeover: time from the leader's kill -9 to the follower's first scheduled run.

Two `syncd run` replicas share one PostgreSQL ledger (a real PostgreSQL and a real control plane, both started
here). Each round starts a leader, then a follower, waits until the leader has run its schedule, kills the leader
with SIGKILL and polls the follower's /metrics every 20 ms until a scheduled run is counted there; then stops the
follower, which hands the lease over for the next round. Prints each round and the median.

    .venv/bin/python benchmarks/ha_takeover.py [--rounds 5] [--lease 15s] [--interval 5s]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, started_control_plane, started_postgres  # noqa: E402

POLICY = {"rules": [{"name": "dev", "match": {"groups": ["developers"]},
                     "grant": [{"cluster": "dev", "namespaces": ["bench-ha"], "role": "edit"}]}]}


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.read().decode()


def scheduled_runs(port: int) -> float:
    """Runs counted by `syncd_runs_total` on that replica, every job and result."""
    return sum(float(line.rpartition(" ")[2]) for line in get(port, "/metrics").splitlines()
               if line.startswith("syncd_runs_total{"))


def role(port: int) -> str | None:
    try:
        return json.loads(get(port, "/readyz"))["leader"]["role"]
    except (OSError, ValueError):  # not listening yet, or 503 while a source is pending
        return None


def wait(check, what: str, timeout: float = 120):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return result


def start(directory: Path, config: dict, name: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config | {"daemon": config["daemon"] | {"port": port}}))
    env = {**os.environ, "NO_COLOR": "1", "SYNCD_LOG_LEVEL": "warning"}
    with (directory / f"{name}.log").open("a") as log:
        process = subprocess.Popen([sys.executable, "-m", "syncd", "run", "--config", str(path)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd=directory)
    return process, port


def takeover(directory: Path, config: dict, number: int) -> float:
    """One round: seconds from the leader's kill -9 to the follower's first scheduled run."""
    leader, leader_port = start(directory, config, f"leader-{number}")
    wait(lambda: role(leader_port) == "leader", "the first replica leads")
    follower, follower_port = start(directory, config, f"follower-{number}")
    wait(lambda: role(follower_port) == "follower", "the second replica follows")
    wait(lambda: scheduled_runs(leader_port) >= 2, "the leader runs its schedule")
    assert scheduled_runs(follower_port) == 0, "a follower ran a scheduled job"
    killed = time.monotonic()
    leader.kill()
    wait(lambda: scheduled_runs(follower_port) >= 1, "the follower takes over", timeout=300)
    took = time.monotonic() - killed
    leader.wait()
    follower.send_signal(signal.SIGTERM)
    follower.wait(timeout=120)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lease", default="15s")
    parser.add_argument("--interval", default="5s", help="the sweep job's interval: the scheduled job timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncd-bench-ha-") as tmp, \
            started_control_plane(Path(tmp) / "kube") as plane, started_postgres() as postgres:
        directory = Path(tmp)
        (directory / "people.csv").write_text("id,username,email,groups,active\n"
                                              "1,alice,alice@example.org,developers,true\n")
        (directory / "policy.yaml").write_text(yaml.safe_dump(POLICY))
        config = {
            "policy": "policy.yaml", "ledger": {"url": postgres.new_database()},
            "sources": [{"name": "hr", "type": "file", "path": "people.csv"}],
            "clusters": [{"name": "dev", "kubeconfig": str(plane.admin_kubeconfig), "namespace": "syncd-bench-ha"}],
            "daemon": {"listen": "127.0.0.1", "leader": {"lease": args.lease},
                       "jobs": {"reconcile": {"every": "1h"}, "sweep": {"every": args.interval}}},
        }
        takeovers = []
        for number in range(1, args.rounds + 1):
            takeovers.append(takeover(directory, config, number))
            print(f"round {number}: takeover {takeovers[-1]:.2f} s", flush=True)
        print(f"median takeover over {args.rounds} rounds: {statistics.median(takeovers):.2f} s "
              f"(min {min(takeovers):.2f}, max {max(takeovers):.2f}); lease {args.lease}, job interval "
              f"{args.interval}")


if __name__ == "__main__":
    main()
