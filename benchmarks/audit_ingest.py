"""The audit webhook's ingest rate: audit events per second `syncd audit serve` accepts over real HTTP (loopback,
EventList batches of 400 as kube-apiserver sends them, 90% of events from users that are not syncd's), side by side
with a plain `json.loads` of the same batches in this process (the floor), and the receiver's RSS after a run and
after one 10x longer (flat: storage and memory are bounded by credentials x days, not by events). Then the same for
the audit log file follower: the events written as JSON lines to a file `syncd audit serve` follows, its RSS once it
caught up with one round and with 10x more (caught up: the position in the ledger is the file's end, so the rate
includes up to one flush interval, 1 s).

    .venv/bin/python benchmarks/audit_ingest.py [--batches 500] [--rounds 3] [--senders 2]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

BATCH = 400
TOKEN = "benchmark-audit-sender-token"  # noqa: S105 (a throwaway sender on loopback)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_batches(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 (test data)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    batches = []
    for _ in range(count):
        items = []
        for n in range(BATCH):
            ours = rng.random() < 0.1
            user = (f"system:serviceaccount:syncd:syncd-u{rng.randrange(100)}" if ours
                    else rng.choice(["system:kube-controller-manager", "system:node:node-1",
                                     f"system:serviceaccount:kube-system:sa-{rng.randrange(50)}"]))
            items.append({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                          "auditID": f"{rng.getrandbits(64):016x}-{n}", "stage": "ResponseComplete",
                          "requestURI": "/api/v1/namespaces/team-a/pods?limit=500", "verb": rng.choice(["get", "list"]),
                          "user": {"username": user, "groups": ["system:serviceaccounts", "system:authenticated"]},
                          "sourceIPs": [f"10.0.{rng.randrange(4)}.{rng.randrange(250)}"],
                          "userAgent": "kubectl/v1.20.2 (linux/amd64) kubernetes/faecb19",
                          "objectRef": {"resource": "pods", "namespace": f"team-{rng.randrange(5)}",
                                        "apiVersion": "v1"},
                          "responseStatus": {"metadata": {}, "code": rng.choice([200] * 9 + [403])},
                          "requestReceivedTimestamp": stamp, "stageTimestamp": stamp,
                          "annotations": {"authorization.k8s.io/decision": "allow",
                                          "authorization.k8s.io/reason": ""}})
        batches.append(json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
                                   "items": items}).encode())
    return batches


def floor(batches: list[bytes]) -> float:
    started = time.perf_counter()
    for body in batches:
        json.loads(body)
    return time.perf_counter() - started


class Receiver:
    def __init__(self, directory: Path, log: Path | None = None) -> None:
        """The webhook, or with `log` the follower of that file alone."""
        self.port = free_port()
        self.ledger = directory / "ledger.db"
        (directory / "token").write_text(TOKEN)
        (directory / "policy.yaml").write_text("rules: []\n")
        (directory / "people.csv").write_text("id,username\n")
        audit = ({"files": [{"cluster": "dev", "path": str(log)}], "flush_interval": "1s", "poll_interval": "100ms"}
                 if log else {"port": self.port, "flush_interval": "2s", "queue_batches": 1000,
                              "senders": [{"cluster": "dev", "token_file": "token"}]})
        (directory / "syncd.yaml").write_text(json.dumps({
            "policy": "policy.yaml", "ledger": {"url": "sqlite:///ledger.db"},
            "sources": [{"name": "hr", "type": "file", "path": "people.csv"}],
            "clusters": [{"name": "dev", "kubeconfig": "none.kubeconfig"}], "audit": audit}))
        self.process = subprocess.Popen([sys.executable, "-m", "syncd", "audit", "serve", "--config",
                                         str(directory / "syncd.yaml")], stderr=subprocess.PIPE, text=True)
        if log is None:
            self._wait_listening()

    def followed_to(self, size: int) -> None:
        """Wait until the follower's position in the ledger is `size` bytes into its file."""
        while True:
            try:
                with sqlite3.connect(self.ledger) as ledger:
                    rows = ledger.execute("SELECT cookie FROM watch_cursor WHERE source = 'audit-files'").fetchall()
            except sqlite3.Error:
                rows = []
            if rows and json.loads(base64.b64decode(rows[0][0]))["offset"] >= size:
                return
            if self.process.poll() is not None:
                raise SystemExit(f"syncd audit serve stopped: {self.process.communicate()[1]}")
            time.sleep(0.05)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"syncd audit serve did not start: {self.process.communicate()[1]}") from None
                time.sleep(0.1)

    def send(self, batches: list[bytes], senders: int) -> float:
        def post(share: list[bytes]) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{self.port}",
                              headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                for body in share:
                    status = client.post("/audit", content=body).status_code
                    assert status == 200, status

        threads = [threading.Thread(target=post, args=(batches[i::senders],)) for i in range(senders)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    def rss_mb(self) -> tuple[float, float]:
        """The receiver's RSS now and at its peak, MB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--senders", type=int, default=2)
    args = parser.parse_args()
    batches = make_batches(args.batches)
    events = len(batches) * BATCH
    with tempfile.TemporaryDirectory() as directory:
        receiver = Receiver(Path(directory))
        try:
            receiver.send(batches[:20], args.senders)  # warm up
            floors, receives, ratios = [], [], []
            for _ in range(args.rounds):
                took_floor, took = floor(batches), receiver.send(batches, args.senders)
                floors.append(events / took_floor)
                receives.append(events / took)
                ratios.append(took / took_floor)
            rss_short, _ = receiver.rss_mb()
            for _ in range(10):
                receiver.send(batches, args.senders)
            rss_long, peak = receiver.rss_mb()
        finally:
            receiver.stop()
    print(f"{events} events a round ({len(batches)} batches of {BATCH}, 10% syncd's), {args.rounds} rounds, "
          f"{args.senders} sender connection(s)")
    print(f"json.loads floor:      median {statistics.median(floors):>10,.0f} events/s")
    print(f"syncd audit serve:     median {statistics.median(receives):>10,.0f} events/s")
    print(f"ratio (time, receiver / floor): median {statistics.median(ratios):.2f} "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"receiver RSS: {rss_short:.0f} MB after the rounds, {rss_long:.0f} MB after 10x more events "
          f"(peak {peak:.0f} MB)")
    follow_file(batches)


def follow_file(batches: list[bytes]) -> None:
    """The follower: one round's events as lines, then 10x more, each time until it caught up."""
    lines = b"".join(json.dumps(item).encode() + b"\n" for body in batches for item in json.loads(body)["items"])
    events = len(batches) * BATCH
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "audit.log"
        log.write_bytes(lines[:lines.index(b"\n") + 1])
        receiver = Receiver(Path(directory), log)
        try:
            receiver.followed_to(log.stat().st_size)  # started, and following
            started = time.perf_counter()
            with log.open("ab") as handle:
                handle.write(lines)
            receiver.followed_to(log.stat().st_size)
            took = time.perf_counter() - started
            rss_short, _ = receiver.rss_mb()
            with log.open("ab") as handle:
                for _ in range(10):
                    handle.write(lines)
            receiver.followed_to(log.stat().st_size)
            rss_long, peak = receiver.rss_mb()
        finally:
            receiver.stop()
    print(f"file follower:         {events / took:>10,.0f} events/s ({events} lines, {len(lines) / 1e6:.0f} MB, "
          "until its position was flushed)")
    print(f"follower RSS: {rss_short:.0f} MB after one round, {rss_long:.0f} MB after 10x more lines "
          f"(peak {peak:.0f} MB)")


if __name__ == "__main__":
    main()
