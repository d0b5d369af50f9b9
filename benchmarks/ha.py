"""High availability benchmark: several syncd processes on one PostgreSQL ledger and one real control plane.

One function per figure, each printing its own lines, so that further figures (the leader's takeover) sit beside them:

1. `scim_throughput`: SCIM requests/s with one replica, and with two behind a round-robin client (the same requests,
   alternately to each), rounds alternating; medians and the ratio two/one, and the CPU each request cost the
   replicas and PostgreSQL (a 2-core machine cannot give two replicas and PostgreSQL a core each: the CPU cost per
   request says whether throughput would scale where it can).
2. `leaver_latency`: with two replicas, 50 leavers deactivated one at a time, alternately through each: from the
   PATCH's response to the person's RoleBindings being gone; p50/p99.

Replicas are `syncd serve` processes (the SCIM endpoint, each push reconciled at once), logging at info.

    .venv/bin/python benchmarks/ha.py [--requests 400] [--rounds 3] [--leavers 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scim_throughput import (  # noqa: E402
    CONCURRENCY,
    cpu_seconds,
    percentile,
    throughput_round,
    wait_idle,
    wait_listening,
    write_config,
)
from benchmarks.scim_throughput import leaver_latency as scim_leaver_latency  # noqa: E402
from tests.conftest import (  # noqa: E402
    ControlPlane,
    PostgresServer,
    free_port,
    started_control_plane,
    started_postgres,
)


@contextmanager
def replicas(directory: Path, kubeconfig: Path, ledger_url: str, count: int) -> Iterator[list[tuple[str, int]]]:
    """`count` `syncd serve` processes on one ledger: their SCIM URLs and pids."""
    processes, served = [], []
    try:
        for n in range(count):
            port = free_port()
            config = write_config(directory, kubeconfig, port)
            settings = yaml.safe_load(config.read_text())
            settings["ledger"]["url"] = ledger_url
            (replica_config := directory / f"replica-{n}.yaml").write_text(yaml.safe_dump(settings))
            process = subprocess.Popen([sys.executable, "-m", "syncd", "serve", "--config", str(replica_config)],
                                       env=os.environ | {"SYNCD_LOG_LEVEL": "info"}, stderr=subprocess.DEVNULL,
                                       cwd=directory)
            processes.append(process)
            url = f"http://127.0.0.1:{port}/scim/v2"
            wait_listening(url, process)
            served.append((url, process.pid))
        yield served
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)


def postgres_cpu_seconds() -> float:
    """CPU time used so far by PostgreSQL: its processes alive now, and the backends that exited (counted in their
    parent's children times)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, fields = stat.read_text().split(" (", 1)[1].split(")", 1)
            if name == "postgres":
                times = fields.split()[11:15]  # utime stime cutime cstime
                total += sum(int(t) for t in times) / ticks
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total


def scim_throughput(directory: Path, kubeconfig: Path, postgres_url: str, requests: int, rounds: int) -> None:
    """Figure 1: one replica vs two behind a round-robin client, on one PostgreSQL ledger. Beside the rates, the CPU
    each request cost the replicas and PostgreSQL (the background reconciles included): on a machine with a core per
    replica, throughput scales with the replicas as long as that cost stays the same."""
    with replicas(directory, kubeconfig, postgres_url, 2) as served:
        pids = [pid for _, pid in served]
        setups = {"one replica": [served[0][0]], "two replicas": [url for url, _ in served]}
        rates: dict[str, dict[str, list[float]]] = {name: {} for name in setups}
        costs: dict[str, dict[str, list[tuple[float, float]]]] = {name: {} for name in setups}
        for n in range(rounds):
            for name, urls in setups.items():
                operations = throughput_round(urls, f"{name[:3]}{n}u", requests)
                while True:
                    replica_cpu, database_cpu = sum(map(cpu_seconds, pids)), postgres_cpu_seconds()
                    if (measured := next(operations, None)) is None:
                        break
                    for pid in pids:
                        wait_idle(pid)
                    operation, rate = measured
                    rates[name].setdefault(operation, []).append(rate)
                    costs[name].setdefault(operation, []).append(
                        ((sum(map(cpu_seconds, pids)) - replica_cpu) / requests * 1000,
                         (postgres_cpu_seconds() - database_cpu) / requests * 1000))
    print(f"SCIM requests/s on one PostgreSQL ledger, median of {rounds} rounds of {requests} requests, "
          f"{CONCURRENCY} in flight; CPU ms per request (replicas / PostgreSQL)")
    print(f"{'operation':<14}{'one replica':>12}{'two replicas':>14}{'two/one':>9}{'CPU one':>14}{'CPU two':>14}")
    for operation in rates["one replica"]:
        one, two = (statistics.median(rates[name][operation]) for name in setups)
        cpu = {name: "{:.1f} / {:.1f}".format(*(statistics.median(c[i] for c in costs[name][operation])
                                                 for i in (0, 1))) for name in setups}
        print(f"{operation:<14}{one:>12.0f}{two:>14.0f}{two / one:>9.2f}"
              f"{cpu['one replica']:>14}{cpu['two replicas']:>14}")


def leaver_latency(directory: Path, kubeconfig: Path, postgres_url: str, leavers: int) -> None:
    """Figure 2: deactivation -> RoleBindings gone, leavers deactivated alternately through two replicas."""
    with replicas(directory, kubeconfig, postgres_url, 2) as served:
        latencies = scim_leaver_latency([url for url, _ in served], kubeconfig, leavers)
    print(f"two replicas: deactivation PATCH -> RoleBindings gone, {len(latencies)} leavers: "
          f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400, help="requests per operation and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--leavers", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="syncd-ha-bench-") as temp, started_postgres() as postgres:
        directory = Path(temp)
        (directory / "kube").mkdir()
        with started_control_plane(directory / "kube") as plane:
            run(directory, plane, postgres, args)


def run(directory: Path, plane: ControlPlane, postgres: PostgresServer, args: argparse.Namespace) -> None:
    """Every figure, one after the other, each on a fresh ledger."""
    subprocess.run(["kubectl", "--kubeconfig", str(plane.admin_kubeconfig), "create", "namespace", "bench-team"],
                   check=True, capture_output=True)
    scim_throughput(directory, plane.admin_kubeconfig, postgres.new_database(), args.requests, args.rounds)
    leaver_latency(directory, plane.admin_kubeconfig, postgres.new_database(), args.leavers)


if __name__ == "__main__":
    main()
