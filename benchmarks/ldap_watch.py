"""LDAP watch benchmark: how long an LDAP leaver keeps access with `syncd run` watching the directory (RFC 4533
content sync against a real slapd with syncprov) and a real control plane.

A directory of --people people (slapadd, offline), the first 2 x --leavers of them in the entitling group; `syncd run`
reads it in full at start and opens its watch. Then, one at a time:

1. delete: from `ldapdelete` returning to the person's RoleBindings gone on the control plane;
2. disable: from `ldapmodify` (ppolicy lock) returning to the same.

Prints p50/p99/max of each, and how many full reads of the directory ran during the measurement (goal: none).

    .venv/bin/python benchmarks/ldap_watch.py [--people 100000] [--leavers 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scim_throughput import percentile  # noqa: E402
from tests.conftest import free_port, started_control_plane  # noqa: E402
from tests.ldap.slapd import BASE_LDIF, BIND_DN, BIND_PASSWORD, SUFFIX, Slapd  # noqa: E402

PEOPLE_BASE, GROUP_BASE = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"
NAMESPACE = "bench-team"


def uid(n: int) -> str:
    return f"u{n:06d}"


def ldif(people: int, members: int) -> str:
    chunks = [BASE_LDIF]  # memberOf by hand: slapadd (offline) does not run the memberof overlay
    chunks += [f"\ndn: uid={uid(n)},{PEOPLE_BASE}\nobjectClass: inetOrgPerson\nuid: {uid(n)}\ncn: User {n}\n"
               f"sn: {n}\nmail: {uid(n)}@example.org\n"
               + (f"memberOf: cn=developers,{GROUP_BASE}\n" if n < members else "") for n in range(people)]
    chunks.append(f"\ndn: cn=developers,{GROUP_BASE}\nobjectClass: groupOfNames\ncn: developers\n"
                  + "".join(f"member: uid={uid(n)},{PEOPLE_BASE}\n" for n in range(members)))
    return "".join(chunks)


def write_config(directory: Path, kubeconfig: Path, server: Slapd, port: int) -> Path:
    (directory / "policy.yaml").write_text(yaml.safe_dump({"defaults": {"token_ttl": "1h"}, "rules": [
        {"name": "developers", "match": {"groups": ["developers"]},
         "grant": [{"cluster": "dev", "namespaces": [NAMESPACE], "role": "edit"}]}]}))
    config = directory / "syncd.yaml"
    config.write_text(yaml.safe_dump({
        "policy": "policy.yaml", "ledger": {"url": "sqlite:///ledger.db"},
        "sources": [{"name": "directory", "type": "ldap", "servers": [server.url], "tls": "none", "bind_dn": BIND_DN,
                     "password_env": "BENCH_LDAP_PASSWORD", "people_base": PEOPLE_BASE, "group_base": GROUP_BASE,
                     "page_size": 1000, "disabled": {"ppolicy_locked": True},
                     "incremental": {"attribute": "entryCSN", "full_interval": "24h"}, "watch": {"mode": "auto"}}],
        "clusters": [{"name": "dev", "kubeconfig": str(kubeconfig), "namespace": "syncd-bench"}],
        "delivery": {"directory": "kubeconfigs"},
        "safety": {"max_revocations": 1000, "max_revocation_percent": 100},
        "daemon": {"listen": "127.0.0.1", "port": port},
    }))
    return config


def full_reads(log: Path) -> int:
    """Full reads of the directory logged so far by `syncd run`."""
    count = 0
    for line in log.read_text().splitlines():
        try:
            count += json.loads(line).get("event") == "read the directory"
        except ValueError:
            continue
    return count


def watch_state(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as answer:
            return json.loads(answer.read())["watches"]["directory"]["state"]
    except (OSError, ValueError, KeyError):
        return "unreachable"


def wait(condition, what: str, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise SystemExit(f"syncd run exited {process.returncode} while waiting: {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--leavers", type=int, default=50, help="people deleted, and as many disabled")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncd-ldap-watch-bench-") as temp:
        directory = Path(temp)
        (directory / "kube").mkdir()
        with started_control_plane(directory / "kube") as plane:
            run(directory, plane.admin_kubeconfig, args)


def run(directory: Path, kubeconfig: Path, args: argparse.Namespace) -> None:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from syncd.core.model import person_key

    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "create", "namespace", NAMESPACE], check=True,
                   capture_output=True)
    server = Slapd(directory / "slapd")
    server.configure()
    started = time.perf_counter()
    server.slapadd(ldif(args.people, 2 * args.leavers))
    print(f"slapadd of {args.people} people: {time.perf_counter() - started:.1f} s")
    server.start()
    ids = {n: server.search(f"uid={uid(n)},{PEOPLE_BASE}", "(objectClass=*)", "entryUUID").split("entryUUID: ")[1]
           .split()[0] for n in range(2 * args.leavers)}
    api = k8s.RbacAuthorizationV1Api(k8s_config.new_client_from_config(str(kubeconfig)))

    def bindings(n: int) -> int:
        return len(api.list_namespaced_role_binding(
            NAMESPACE, label_selector=f"syncd.io/person={person_key(ids[n])}").items)

    port = free_port()
    config = write_config(directory, kubeconfig, server, port)
    log = directory / "syncd.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "syncd", "run", "--config", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT, cwd=directory,
                                   env=os.environ | {"BENCH_LDAP_PASSWORD": BIND_PASSWORD, "SYNCD_LOG_LEVEL": "info"})
    try:
        started = time.perf_counter()
        wait(lambda: all(bindings(n) for n in range(2 * args.leavers)), "the members issued", 1800, process)
        wait(lambda: watch_state(port) == "connected", "the watch connected", 1800, process)
        print(f"syncd run: members issued and the watch connected {time.perf_counter() - started:.1f} s after start "
              f"({full_reads(log)} full reads at start)")
        before = full_reads(log)
        figures = {}
        for name, change in (("delete", lambda n: server.delete(f"uid={uid(n)},{PEOPLE_BASE}")),
                             ("disable", lambda n: server.modify(
                                 f"dn: uid={uid(n)},{PEOPLE_BASE}\nchangetype: modify\nreplace: pwdAccountLockedTime\n"
                                 "pwdAccountLockedTime: 000001010000Z\n"))):
            offset = 0 if name == "delete" else args.leavers
            latencies = []
            for n in range(offset, offset + args.leavers):
                change(n)
                returned = time.perf_counter()
                while bindings(n):
                    if time.perf_counter() - returned > 60:
                        raise SystemExit(f"{uid(n)} kept their RoleBindings for 60 s after the {name}")
                    time.sleep(0.005)
                latencies.append(time.perf_counter() - returned)
            figures[name] = latencies
        during = full_reads(log) - before
    finally:
        process.terminate()
        process.wait(timeout=120)
        server.stop()
    for name, latencies in figures.items():
        print(f"{name} returned -> RoleBindings gone, {len(latencies)} people, {args.people} in the directory: "
              f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms")
    print(f"full reads of the directory during the measurement: {during}")


if __name__ == "__main__":
    main()
