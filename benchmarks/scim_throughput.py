"""SCIM endpoint benchmark, side by side in one run.

1. Requests/s for POST /Users (joiners no rule entitles yet: no reconcile), GET /Users?filter=userName eq, and
   PATCH /Users/{id} of displayName (cannot change access: no reconcile) and of active (a targeted reconcile per
   change, coalesced): our endpoint (`syncd serve`,
   SQLite ledger, reconciling every change against a real control plane) vs scim2-server's in-memory storage, both
   as its demo (`scim2-server`, a threaded WSGI server) and under the same ASGI server as ours (uvicorn). Each
   server runs in its own process; rounds alternate; medians. Ours logs at info, as in production; after each of
   its rounds the benchmark waits until its process is idle (its reconciles done), so they never overlap another
   server's round.
2. Leaver latency on the real control plane: from a deactivation PATCH returning to the person's RoleBindings
   being gone, p50/p99 over 50 leavers, one at a time.

    .venv/bin/python benchmarks/scim_throughput.py [--requests 400] [--rounds 3] [--leavers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402

TOKEN = secrets.token_urlsafe(24)
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}
CONCURRENCY = 8

IN_MEMORY = """
import sys, uvicorn
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from syncd.scim import scim_provider
uvicorn.run(ASGIApplication(AsyncInMemoryStorage(), scim_provider()), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning", access_log=False)
"""



def wait_listening(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/ServiceProviderConfig", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server at {url} did not start (exit {process.poll()}): {' '.join(process.args)}")
        time.sleep(0.2)


async def measure(urls: list[str], requests: list[tuple[str, str, dict | None, dict | None]]) -> float:
    """Send requests with CONCURRENCY in flight, each to the next of `urls` in turn; requests/s. Every answer must be
    a success."""
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


def throughput_round(urls: list[str], prefix: str, count: int) -> Iterator[tuple[str, float]]:
    """Each operation in turn, `count` requests of it spread over `urls`: (operation, requests/s)."""
    posts = [("POST", "/Users", {"schemas": [USER], "userName": f"{prefix}{n}", "displayName": f"U {n}",
                                 "emails": [{"value": f"{prefix}{n}@example.org", "primary": True}]}, None)
             for n in range(count)]
    yield "POST", asyncio.run(measure(urls, posts))
    gets = [("GET", "/Users", None, {"filter": f'userName eq "{prefix}{(n * 7919) % count}"'}) for n in range(count)]
    yield "GET filter", asyncio.run(measure(urls, gets))
    ids = [u["id"] for u in httpx.get(f"{urls[0]}/Users", headers=HEADERS, timeout=60,
                                      params={"filter": f'userName sw "{prefix}"', "count": count}).json()["Resources"]]
    for label, path, value in (("PATCH name", "displayName", lambda n: f"V {n}"),
                               ("PATCH active", "active", lambda n: n % 3 != 0)):
        patches = [("PATCH", f"/Users/{ids[n % len(ids)]}", {"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": path, "value": value(n)}]}, None) for n in range(count)]
        yield label, asyncio.run(measure(urls, patches))


def write_config(directory: Path, kubeconfig: Path, port: int) -> Path:
    (directory / "bench.token").write_text(TOKEN)
    (directory / "bench.token").chmod(0o600)
    (directory / "policy.yaml").write_text(yaml.safe_dump({"defaults": {"token_ttl": "1h"}, "rules": [
        {"name": "developers", "match": {"groups": ["developers"]},
         "grant": [{"cluster": "dev", "namespaces": ["bench-team"], "role": "edit"}]}]}))
    config = directory / "syncd.yaml"
    config.write_text(yaml.safe_dump({
        "policy": "policy.yaml", "ledger": {"url": "sqlite:///ledger.db"},
        "sources": [{"name": "idp", "type": "scim", "mode": "push"}],
        "clusters": [{"name": "dev", "kubeconfig": str(kubeconfig), "namespace": "syncd-bench"}],
        "delivery": {"directory": "kubeconfigs"},
        "safety": {"max_revocations": 1000, "max_revocation_percent": 100},
        "scim": {"port": port, "tenants": [{"name": "bench", "source": "idp", "token_file": "bench.token"}]},
    }))
    return config


def leaver_latency(urls: list[str], kubeconfig: Path, leavers: int) -> list[float]:
    """Deactivation PATCH -> the leaver's RoleBindings gone, for each of `leavers` people, sent round-robin over the
    endpoints at `urls` (one syncd, or several replicas)."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from syncd.core.model import person_key

    api = k8s.RbacAuthorizationV1Api(k8s_config.new_client_from_config(str(kubeconfig)))
    clients = [httpx.Client(base_url=url, headers=HEADERS, timeout=60) for url in urls]
    ids = [clients[n % len(clients)].post("/Users", content=json.dumps({"schemas": [USER], "userName": f"leaver{n}"}))
           .json()["id"] for n in range(leavers)]
    clients[0].post("/Groups", content=json.dumps({"schemas": [GROUP], "displayName": "developers",
                                                   "members": [{"value": i} for i in ids]}))

    def bindings(person_id: str) -> int:
        return len(api.list_namespaced_role_binding("bench-team", label_selector=f"syncd.io/person="
                                                    f"{person_key(person_id)}").items)

    deadline = time.monotonic() + 300
    while not all(bindings(i) for i in ids):
        if time.monotonic() > deadline:
            raise SystemExit("joiners did not get their bindings within 300 s")
        time.sleep(0.5)
    latencies = []
    for n, person_id in enumerate(ids):
        response = clients[n % len(clients)].patch(f"/Users/{person_id}", content=json.dumps(
            {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}))
        returned = time.perf_counter()
        assert response.status_code == 200, response.text
        while bindings(person_id):
            if time.perf_counter() - returned > 60:
                raise SystemExit("a leaver kept their RoleBindings for 60 s")
            time.sleep(0.005)
        latencies.append(time.perf_counter() - returned)
    return latencies


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float = 300) -> None:
    """Until the process uses under 2% of a core over half a second (its background reconciles are done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.01:
            return
    raise SystemExit(f"process {pid} still busy after {timeout} s")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400, help="requests per operation and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--leavers", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="syncd-scim-bench-") as temp:
        directory = Path(temp)
        plane = directory / "kube"
        plane.mkdir()
        started = subprocess.run([str(ROOT / "scripts" / "kube-control-plane"), "start", str(plane)],
                                 capture_output=True, text=True, check=True, timeout=1800)
        kubeconfig = Path(started.stdout.strip().splitlines()[-1])
        servers: list[subprocess.Popen] = []
        try:
            subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "create", "namespace", "bench-team"],
                           check=True, capture_output=True)
            ours_port, theirs_port, demo_port = free_port(), free_port(), free_port()
            config = write_config(directory, kubeconfig, ours_port)
            env = os.environ | {"SYNCD_LOG_LEVEL": "info"}
            servers.append(subprocess.Popen([sys.executable, "-m", "syncd", "serve", "--config", str(config)],
                                            env=env, stderr=subprocess.DEVNULL))
            servers.append(subprocess.Popen([sys.executable, "-c", IN_MEMORY, str(theirs_port)], env=env))
            servers.append(subprocess.Popen([str(Path(sys.executable).parent / "scim2-server"), "--hostname",
                                             "127.0.0.1", "--port", str(demo_port), f"--bearer-token={TOKEN}"],
                                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls = {"ours": f"http://127.0.0.1:{ours_port}/scim/v2",
                    "in-memory/uvicorn": f"http://127.0.0.1:{theirs_port}/v2",
                    "demo/wsgiref": f"http://127.0.0.1:{demo_port}/v2"}
            for url, server in zip(urls.values(), servers, strict=True):
                wait_listening(url, server)

            figures: dict[str, dict[str, list[float]]] = {name: {} for name in urls}
            for n in range(args.rounds):
                for name, url in urls.items():
                    for operation, rate in throughput_round([url], f"r{n}u", args.requests):
                        figures[name].setdefault(operation, []).append(rate)
                    if name == "ours":
                        wait_idle(servers[0].pid)
            print(f"requests/s, median of {args.rounds} rounds of {args.requests} requests, "
                  f"{CONCURRENCY} in flight")
            print(f"{'operation':<12}" + "".join(f"{name:>20}" for name in urls)
                  + f"{'ours/in-memory':>16}{'ours/demo':>11}")
            for operation in figures["ours"]:
                medians = {name: statistics.median(figures[name][operation]) for name in urls}
                print(f"{operation:<12}" + "".join(f"{medians[name]:>20.0f}" for name in urls)
                      + f"{medians['ours'] / medians['in-memory/uvicorn']:>16.2f}"
                      + f"{medians['ours'] / medians['demo/wsgiref']:>11.2f}")

            latencies = leaver_latency([urls["ours"]], kubeconfig, args.leavers)
            print(f"deactivation PATCH -> RoleBindings gone, {len(latencies)} leavers: "
                  f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms")
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=60)
            subprocess.run([str(ROOT / "scripts" / "kube-control-plane"), "stop", str(plane)], timeout=120)


if __name__ == "__main__":
    main()
