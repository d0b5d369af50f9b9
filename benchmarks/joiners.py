"""Onboarding benchmark on a fresh control plane, side by side in one run.

1. The floor: the raw `kubernetes` client doing what a careful client must per joiner (ServiceAccount, token Secret,
   TokenRequest bound to it, one RoleBinding), one person after another.
2. --rounds rounds, side by side: the raw client with --threads threads, and syncd's first run of --people joiners
   (`Engine.reconcile`, SQLite ledger, file delivery, logging at info to /dev/null), clusters[].concurrency =
   --threads and, like the raw client, no client-side rate limit (clusters[].qps 0). Each round in namespaces, a
   ledger and a delivery folder of its own; the order within a round alternates, so that neither always runs on the
   control plane the other just loaded.
3. With the first round's syncd: a no-op rerun, every joiner moved (one binding replaced), and every one a leaver
   with revocation confirmed by TokenReview. Then --people other joiners under the default rate limit
   (clusters[].qps).

Before each phase the control plane is let settle (its processes under a quarter of a core for a second, at most a
minute): for a while after a phase, its controller-manager still works through what that phase created, and the next
phase would pay for it. This machine is noisy, so the joiners goal is judged on the median of the rounds' ratios.

Each phase runs in its own child process, which reports its peak RSS. For syncd it reports the apply time, API write
calls per person, ledger write transactions per person and the commits they were grouped into, the share of the
apply time the ledger was busy (its SQLite write lock held: ledger work is serialised, so this is its wall-clock
occupancy) over the whole run, the share of the workers' apply time spent writing and removing delivered files, and
the CPU time of the process.

    .venv/bin/python benchmarks/joiners.py [--people 1000] [--threads 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TEAM_A, TEAM_B = "bench-team-a", "bench-team-b"


# Children


def raw(kubeconfig: Path, people: int, threads: int, namespace: str) -> dict:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = threads + 4
    api = k8s.ApiClient(configuration)
    core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))

    def joiner(n: int) -> None:
        name = f"raw-{n}"
        account = core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(
            metadata=k8s.V1ObjectMeta(name=name), automount_service_account_token=False))
        owner = k8s.V1OwnerReference(api_version="v1", kind="ServiceAccount", name=name, uid=account.metadata.uid)
        secret = core.create_namespaced_secret(namespace, k8s.V1Secret(type="Opaque", metadata=k8s.V1ObjectMeta(
            generate_name=f"{name}-", owner_references=[owner])))
        bound = k8s.V1BoundObjectReference(api_version="v1", kind="Secret", name=secret.metadata.name,
                                           uid=secret.metadata.uid)
        core.create_namespaced_service_account_token(name, namespace, k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600, bound_object_ref=bound)))
        rbac.create_namespaced_role_binding(TEAM_A, k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name=f"{namespace}-{name}"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="edit"),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)]))

    started, cpu = time.monotonic(), time.process_time()
    if threads == 1:
        for n in range(people):
            joiner(n)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(joiner, range(people)))
    return {"seconds": time.monotonic() - started, "writes_per_person": 4.0,
            "cpu_seconds": time.process_time() - cpu}


class TimedLock:
    """The ledger's write lock, timing how long it is held."""

    def __init__(self, lock) -> None:  # type: ignore[no-untyped-def]
        self.lock, self.held, self.depth, self.since = lock, 0.0, 0, 0.0

    def __enter__(self) -> None:
        self.lock.acquire()
        self.depth += 1
        if self.depth == 1:
            self.since = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.held += time.perf_counter() - self.since
        self.lock.release()


def syncd(config: Path, people: int, allow: bool) -> dict:
    from sqlalchemy import event

    from syncd import logs
    from syncd.config import load_settings
    from syncd.runtime.engine import Engine

    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the log, at info as in production, goes nowhere
    logs.configure("info", json=True)
    delivering = {"seconds": 0.0}
    counting = threading.Lock()

    @contextmanager
    def timed():  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            yield
        finally:
            with counting:
                delivering["seconds"] += time.perf_counter() - started

    settings = load_settings(config)
    counts = {"writes": 0, "commits": 0}

    def committed(_connection: object) -> None:
        with counting:
            counts["commits"] += 1

    def counted(name: str, call):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            with counting:
                counts[name] += 1
            return call(*args, **kwargs)
        return wrapped

    with Engine.from_settings(settings) as engine:
        ledger = engine.database._one_at_a_time = TimedLock(engine.database._one_at_a_time)  # noqa: SLF001
        engine.database.write = counted("writes", engine.database.write)  # type: ignore[method-assign]
        event.listen(engine.database.engine, "commit", committed)
        for method in ("deliver", "replace_token", "remove"):
            original = getattr(engine.delivery, method)

            def wrapped(*args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
                with timed():
                    return _original(*args, **kwargs)

            setattr(engine.delivery, method, wrapped)
        started, cpu = time.monotonic(), time.process_time()
        (report,) = engine.reconcile("hr", allow_mass_revocation=allow)
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu
        ledger_held = ledger.held
    workers = settings.clusters[0].concurrency
    apply_seconds = report.apply_seconds or 1e-9
    return {"seconds": seconds, "apply_seconds": report.apply_seconds, "actions": len(report.plan.actions),
            "failed": len(report.outcome.failed) if report.outcome else 0, "result": report.result,
            "writes_per_person": report.writes / people, "confirmed": report.confirmed_rejections,
            "ledger_share": min(ledger_held / seconds, 1.0), "cpu_seconds": cpu,
            "ledger_writes_per_person": counts["writes"] / people, "commits_per_person": counts["commits"] / people,
            "delivery_share": delivering["seconds"] / (apply_seconds * workers)}


# Parent


def child(*args: str) -> dict:
    """Run a phase in a child process; its figures with its peak RSS."""
    process = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"phase {args} failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1]) | {"rss_mb": usage.ru_maxrss / 1024}


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")


def settle(plane: Path, quiet: float = 0.25, timeout: float = 60.0) -> float:
    """Wait until the control plane's processes use under `quiet` of a core over a second, at most `timeout`
    seconds; the seconds waited."""
    pids = [int((plane / f"{name}.pid").read_text()) for name in CONTROL_PLANE]

    def ticks() -> int:
        return sum(sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
                   for pid in pids)

    per_second = os.sysconf("SC_CLK_TCK")
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = ticks()
        time.sleep(1)
        if ticks() - before < quiet * per_second:
            break
    return time.monotonic() - started


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def write_people(path: Path, people: int, group: str, leave: bool = False) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "username", "email", "groups", "active"])
        writer.writerow(["stayer", "stayer", "stayer@example.org", "sre", "true"])  # a source never empty
        for n in range([people, 0][leave]):
            writer.writerow([f"p{n}", f"person{n}", f"person{n}@example.org", group, "true"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        figures = raw(Path(rest[0]), int(rest[1]), int(rest[2]), rest[3]) if mode == "raw" else \
            syncd(Path(rest[0]), int(rest[1]), rest[2] == "allow")
        print(json.dumps(figures))
        return

    with tempfile.TemporaryDirectory(prefix="syncd-joiners-bench-") as temp:
        directory = Path(temp)
        plane = directory / "kube"
        plane.mkdir()
        started = subprocess.run([str(ROOT / "scripts" / "kube-control-plane"), "start", str(plane)],
                                 capture_output=True, text=True, check=True, timeout=1800)
        kubeconfig = Path(started.stdout.strip().splitlines()[-1])
        try:
            for namespace in (TEAM_A, TEAM_B):
                subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "create", "namespace", namespace],
                               check=True, capture_output=True)
            (directory / "policy.yaml").write_text(yaml.safe_dump({"defaults": {"token_ttl": "1h"}, "rules": [
                {"name": "developers", "match": {"groups": ["developers"]},
                 "grant": [{"cluster": "dev", "namespaces": [TEAM_A], "role": "edit"}]},
                {"name": "sre", "match": {"groups": ["sre"]},
                 "grant": [{"cluster": "dev", "namespaces": [TEAM_B], "role": "view"}]}]}))
            def configure(name: str, **cluster: object) -> Path:
                config = directory / f"{name}.yaml"
                config.write_text(yaml.safe_dump({
                    "policy": "policy.yaml", "ledger": {"url": f"sqlite:///{name}.db"},
                    "sources": [{"name": "hr", "type": "file", "path": "people.csv"}],
                    "clusters": [{"name": "dev", "kubeconfig": str(kubeconfig), "namespace": f"syncd-{name}",
                                  "concurrency": args.threads, **cluster}],
                    "delivery": {"directory": f"kubeconfigs-{name}"},
                    "tokens": {"confirm_revocation_timeout": "120s"},
                    "safety": {"max_revocations": args.people + 1, "max_revocation_percent": 100}}))
                return config

            people = directory / "people.csv"
            rows = []
            settled = [settle(plane)]
            sequential = child("raw", str(kubeconfig), str(args.people), "1", "raw-1")
            rows.append(("raw client, 1 thread", sequential))
            rounds: list[dict[str, dict]] = []
            for n in range(args.rounds):
                found: dict[str, dict] = {}
                for which in ("raw", "syncd") if n % 2 == 0 else ("syncd", "raw"):
                    settled.append(settle(plane))
                    if which == "raw":
                        found[which] = child("raw", str(kubeconfig), str(args.people), str(args.threads),
                                             f"raw-{args.threads}-{n}")
                    else:
                        # Like the raw client, no client-side rate limit: the concurrency bounds what is in flight.
                        write_people(people, args.people, "developers")
                        found[which] = child("syncd", str(configure(f"bench-{n}", qps=0)), str(args.people), "no")
                rounds.append(found)
                rows.append((f"raw client, {args.threads} threads, round {n + 1}", found["raw"]))
                rows.append((f"syncd joiners, round {n + 1}", found["syncd"]))
            phases = [("no-op rerun", "developers", False), ("movers", "sre", False),
                      ("leavers (confirmed)", "sre", True)]
            results = {}
            for name, group, leave in phases:
                settled.append(settle(plane))
                write_people(people, args.people, group, leave)
                results[name] = child("syncd", str(directory / "bench-0.yaml"), str(args.people),
                                      "allow" if leave else "no")
                rows.append((f"syncd {name}", results[name]))
            # Joiners under the default limit (clusters[].qps), into a namespace of their own.
            settled.append(settle(plane))
            write_people(people, args.people, "developers")
            results["joiners at default qps"] = child("syncd", str(configure("bench-default-qps")), str(args.people),
                                                      "no")
            rows.append(("syncd joiners, default qps", results["joiners at default qps"]))
        finally:
            subprocess.run([str(ROOT / "scripts" / "kube-control-plane"), "stop", str(plane)], timeout=120)

    print(f"{args.people} people, {args.threads} threads / clusters[].concurrency, {args.rounds} round(s), "
          f"load average {os.getloadavg()[0]:.1f}, waited {sum(settled):.0f} s in all for the control plane to "
          f"settle (longest {max(settled):.0f} s)")
    print(f"{'phase':<32}{'seconds':>9}{'apply s':>9}{'CPU s':>7}{'writes/p':>10}{'ledger tx/p':>12}"
          f"{'commits/p':>10}{'ledger':>8}{'files':>7}{'RSS MB':>8}  notes")
    for name, row in rows:
        extra = f"{row['actions']} actions, {row['failed']} failed, {row.get('confirmed', 0)} confirmed" \
            if "actions" in row else ""
        print(f"{name:<32}{row['seconds']:>9.1f}{row.get('apply_seconds', row['seconds']):>9.1f}"
              f"{row['cpu_seconds']:>7.1f}{row['writes_per_person']:>10.2f}"
              f"{row.get('ledger_writes_per_person', 0):>12.2f}{row.get('commits_per_person', 0):>10.2f}"
              f"{row.get('ledger_share', 0) * 100:>7.0f}%{row.get('delivery_share', 0) * 100:>6.0f}%"
              f"{row['rss_mb']:>8.0f}  {extra}")
    ratios = [found["syncd"]["seconds"] / found["raw"]["seconds"] for found in rounds]
    print(f"joiners / raw client with {args.threads} threads: median {median(ratios):.2f}x (goal 1.3x), rounds "
          f"{', '.join(f'{ratio:.2f}x' for ratio in ratios)}; CPU median "
          f"{median([found['syncd']['cpu_seconds'] / found['raw']['cpu_seconds'] for found in rounds]):.2f}x")
    joiners = median([found["syncd"]["seconds"] for found in rounds])  # what the other phases compare with
    print(f"joiners (median of the rounds, {joiners:.1f} s) / raw sequential: {joiners / sequential['seconds']:.2f}x")
    print(f"no-op rerun / joiners: {results['no-op rerun']['seconds'] / joiners:.1%} (goal < 10%)")
    print(f"leavers / joiners: {results['leavers (confirmed)']['seconds'] / joiners:.2f}x (goal 1.5x)")


if __name__ == "__main__":
    main()
