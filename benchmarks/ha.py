"""High availability benchmark: several syncd processes on one PostgreSQL ledger and one real control plane.

One function per figure, each printing its own lines, so that further figures (the leader's takeover) sit beside them:

1. `scim_throughput`: SCIM requests/s with one replica, and with two behind a round-robin client (the same requests,
   alternately to each), rounds alternating; medians and the ratio two/one.
2. `leaver_latency`: with two replicas, 50 leavers deactivated one at a time, alternately through each: from the
   PATCH's response to the person's RoleBindings being gone; p50/p99.

Replicas are `syncd serve` processes (the SCIM endpoint, each push reconciled at once), logging at info.

    .venv/bin/python benchmarks/ha.py [--requests 400] [--rounds 3] [--leavers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scim_throughput import (  # noqa: E402
    CONCURRENCY,
    HEADERS,
    PATCH,
    USER,
    percentile,
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


async def measure(urls: list[str], requests: list[tuple[str, str, dict | None, dict | None]]) -> float:
    """Requests/s with CONCURRENCY in flight, each request to the next URL in turn. Every answer must succeed."""
    queue = list(reversed(requests))
    clients = [httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) for url in urls]
    turn = itertools.cycle(clients)

    async def worker() -> None:
        while queue:
            method, path, body, params = queue.pop()
            response = await next(turn).request(method, path, content=json.dumps(body) if body else None,
                                                params=params)
            if response.status_code >= 300:
                raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.aclose()
    return len(requests) / elapsed


def scim_round(urls: list[str], prefix: str, count: int) -> dict[str, float]:
    posts = [("POST", "/Users", {"schemas": [USER], "userName": f"{prefix}{n}", "displayName": f"U {n}"}, None)
             for n in range(count)]
    result = {"POST": asyncio.run(measure(urls, posts))}
    gets = [("GET", "/Users", None, {"filter": f'userName eq "{prefix}{(n * 7919) % count}"'}) for n in range(count)]
    result["GET filter"] = asyncio.run(measure(urls, gets))
    ids = [u["id"] for u in httpx.get(f"{urls[0]}/Users", headers=HEADERS, timeout=60,
                                      params={"filter": f'userName sw "{prefix}"', "count": count}).json()["Resources"]]
    patches = [("PATCH", f"/Users/{ids[n % len(ids)]}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "displayName", "value": f"V {n}"}]}, None) for n in range(count)]
    result["PATCH name"] = asyncio.run(measure(urls, patches))
    return result


def scim_throughput(directory: Path, kubeconfig: Path, postgres_url: str, requests: int, rounds: int) -> None:
    """Figure 1: one replica vs two behind a round-robin client, on one PostgreSQL ledger."""
    with replicas(directory, kubeconfig, postgres_url, 2) as served:
        setups = {"one replica": [served[0][0]], "two replicas": [url for url, _ in served]}
        figures: dict[str, dict[str, list[float]]] = {name: {} for name in setups}
        for n in range(rounds):
            for name, urls in setups.items():
                for operation, rate in scim_round(urls, f"{name[:3]}{n}u", requests).items():
                    figures[name].setdefault(operation, []).append(rate)
                for _, pid in served:
                    wait_idle(pid)
    print(f"SCIM requests/s on one PostgreSQL ledger, median of {rounds} rounds of {requests} requests, "
          f"{CONCURRENCY} in flight")
    print(f"{'operation':<12}{'one replica':>14}{'two replicas':>14}{'two/one':>9}")
    for operation in figures["one replica"]:
        one, two = (statistics.median(figures[name][operation]) for name in setups)
        print(f"{operation:<12}{one:>14.0f}{two:>14.0f}{two / one:>9.2f}")


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
