"""LDAP source benchmark: 100,000 people and 1,000 groups loaded with slapadd into a throwaway slapd, then, side by
side in one run (alternating, each measurement in a fresh child process that reports its own peak RSS):

- raw:  ldap3 paged reads of the same entries and attributes syncd asks for, decoding only (the floor for ldap3);
- full: syncd's full read (LdapSource.read) + plan against a ledger/cluster state that already matches (no changes);
- poll: after 10 people changed, syncd's incremental poll + the targeted plan.

Run: .venv/bin/python benchmarks/ldap_read.py [--people 100000] [--groups 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ldap.slapd import BASE_LDIF, BIND_DN, BIND_PASSWORD, SUFFIX, Slapd  # noqa: E402

PEOPLE_BASE, GROUP_BASE = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"
PAGE_SIZE = 1000


def ldif(people: int, groups: int) -> str:
    per_group = max(people // groups, 1)
    chunks = [BASE_LDIF]
    for i in range(people):
        chunks.append(f"\ndn: uid=u{i:06d},{PEOPLE_BASE}\nobjectClass: inetOrgPerson\nuid: u{i:06d}\n"
                      f"cn: User {i}\nsn: {i}\nmail: u{i:06d}@example.org\n"
                      f"memberOf: cn=g{(i // per_group) % groups:04d},{GROUP_BASE}\n")
    for g in range(groups):
        members = "".join(f"member: uid=u{i:06d},{PEOPLE_BASE}\n"
                          for i in range(g * per_group, min((g + 1) * per_group, people)))
        chunks.append(f"\ndn: cn=g{g:04d},{GROUP_BASE}\nobjectClass: groupOfNames\ncn: g{g:04d}\n"
                      f"{members or 'member: cn=nobody' + chr(10)}")
    return "".join(chunks)


def settings(server_url: str, ca_file: str, groups: int):
    from syncd.config import LdapSourceSettings

    return LdapSourceSettings.model_validate({
        "type": "ldap", "name": "bench", "servers": [server_url], "tls": "none", "bind_dn": BIND_DN,
        "password_env": "BENCH_LDAP_PASSWORD", "people_base": PEOPLE_BASE, "group_base": GROUP_BASE,
        "page_size": PAGE_SIZE, "incremental": {"attribute": "entryCSN"},
    })


def policy(groups: int):
    from syncd.core.policy import Policy

    # Everyone is entitled (the planner's most work per person); a group rule that matches some as well.
    return Policy.model_validate({"defaults": {"token_ttl": "8h"}, "rules": [
        {"name": "staff", "match": {"everyone": True},
         "grant": [{"cluster": "dev", "namespaces": ["team-a"], "role": "edit"}]},
        {"name": "first groups", "match": {"groups": [f"g{g:04d}" for g in range(min(groups, 10))]},
         "grant": [{"cluster": "dev", "namespaces": ["team-a"], "role": "edit"}]}]})


def steady_state(snapshot, rules):
    """Ledger and cluster state that already match the snapshot, as they would after a completed run (the
    planner's inputs as the ledger and the cluster would give them; built here without either)."""
    from syncd.core.model import KnownAccess, KnownCredential, KnownPerson, ObservedAccount, ObservedCluster, person_key
    from tests.unit.plan.builders import EDIT_A, NOW, binding

    scopes, issued = frozenset((EDIT_A,)), NOW - timedelta(hours=1)
    people, accounts = {}, {}
    for identity in snapshot.identities:
        if not rules.access_for(identity):
            continue
        key = person_key(identity.id)
        secret = f"syncd-{key}-abcde"
        credential = KnownCredential(secret, "sha256:00", issued, issued + timedelta(hours=8))
        people[identity.id] = KnownPerson(identity.id, snapshot.source, identity.username,
                                          {"dev": KnownAccess("dev", scopes, credential)})
        accounts[key] = ObservedAccount(key, True, (binding(identity.id, EDIT_A),), (secret,))
    return people, {"dev": ObservedCluster("dev", accounts)}


def plan(snapshot, rules, people, observed, only=None):
    from syncd.core.plan import Inputs, make_plan
    from tests.unit.plan.builders import NOW, SAFETY

    return make_plan(Inputs(snapshot, rules, people, observed, NOW, SAFETY, only))


def child_raw(url: str, attrs: dict) -> dict:
    import ldap3
    from ldap3.extend.standard.PagedSearch import paged_search_generator

    server = ldap3.Server(url, get_info=ldap3.NONE)
    connection = ldap3.Connection(server, BIND_DN, BIND_PASSWORD, auto_bind=True, read_only=True, check_names=False,
                                  fast_decoder=True, auto_range=False, return_empty_attributes=False)
    started = time.perf_counter()
    count = 0
    for base, filter_, attributes in ((GROUP_BASE, attrs["group_filter"], attrs["group"]),
                                      (PEOPLE_BASE, attrs["people_filter"], attrs["people"])):
        for entry in paged_search_generator(connection, base, filter_, attributes=attributes, paged_size=PAGE_SIZE):
            count += entry["type"] == "searchResEntry"
    return {"seconds": time.perf_counter() - started, "entries": count}


def child_syncd(url: str, groups: int, changed_dns: list[str]) -> dict:
    from syncd.adapters.ldap import LdapSource

    os.environ["BENCH_LDAP_PASSWORD"] = BIND_PASSWORD
    source, rules = LdapSource(settings(url, "", groups)), policy(groups)
    warm = source.read()  # what the previous run saw; the ledger and cluster match it
    people, observed = steady_state(warm, rules)
    del warm
    started = time.perf_counter()
    snapshot = source.read()
    read = time.perf_counter() - started
    full_plan = plan(snapshot, rules, people, observed)
    full = time.perf_counter() - started
    assert not full_plan.actions and not full_plan.held, (full_plan.actions[:3], full_plan.held[:3])
    result = {"full_seconds": full, "read_seconds": read, "people": len(snapshot.identities)}
    if changed_dns:
        modify = "".join(f"dn: {dn}\nchangetype: modify\nreplace: mail\nmail: moved-{n}@example.net\n\n"
                         for n, dn in enumerate(changed_dns))
        subprocess.run(["ldapmodify", "-x", "-H", url, "-D", f"cn=admin,{SUFFIX}", "-w", "admin-secret"],
                       input=modify, text=True, check=True, capture_output=True)
        started = time.perf_counter()
        changes = source.poll()
        poll_plan = plan(changes, rules, people, observed, frozenset(i.id for i in changes.identities))
        result["poll_seconds"] = time.perf_counter() - started
        result["poll_people"] = len(changes.identities)
        result["poll_actions"] = len(poll_plan.actions)
    source.close()
    return result


def run_child(kind: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True,
                          check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, url, groups, *rest = args.child
        result = child_raw(url, json.loads(rest[0])) if kind == "raw" else child_syncd(url, int(groups), rest)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as temp:
        server = Slapd(Path(temp))
        server.configure()
        started = time.perf_counter()
        server.slapadd(ldif(args.people, args.groups))
        print(f"slapadd {args.people} people + {args.groups} groups: {time.perf_counter() - started:.1f} s")
        server.start()
        try:
            os.environ["BENCH_LDAP_PASSWORD"] = BIND_PASSWORD
            from syncd.adapters.ldap import LdapSource

            probe = LdapSource(settings(server.url, "", args.groups))
            attrs = json.dumps({"people": probe._people_attributes(), "group": probe._group_attributes(),
                                "people_filter": probe.settings.people_filter,
                                "group_filter": probe.settings.group_filter})
            raw, full, polls = [], [], []
            for round_ in range(args.rounds):
                raw.append(run_child("raw", server.url, str(args.groups), attrs))
                changed = [f"uid=u{(round_ * 7919 + n * 104729) % args.people:06d},{PEOPLE_BASE}" for n in range(10)]
                full.append(run_child("syncd", server.url, str(args.groups), *changed))
                print(f"round {round_ + 1}: raw {raw[-1]['seconds']:.2f} s, syncd full read + plan "
                      f"{full[-1]['full_seconds']:.2f} s, poll {full[-1]['poll_seconds'] * 1000:.0f} ms "
                      f"({full[-1]['poll_people']} people)", flush=True)
                polls.append(full[-1]["poll_seconds"])
        finally:
            server.stop()

    raw_median = statistics.median(r["seconds"] for r in raw)
    full_median = statistics.median(f["full_seconds"] for f in full)
    print(f"\n{args.people} people, {args.groups} groups, page size {PAGE_SIZE}, medians of {args.rounds} rounds:")
    print(f"  raw ldap3 paged read (people + groups):      {raw_median:7.2f} s   peak RSS "
          f"{max(r['peak_rss_mb'] for r in raw):.0f} MB")
    ratios = [f["full_seconds"] / r["seconds"] for r, f in zip(raw, full, strict=True)]
    print(f"  syncd full read + plan, no changes:          {full_median:7.2f} s   ratio {full_median / raw_median:.2f}x"
          f" (goal <= 1.3x; per round {', '.join(f'{r:.2f}' for r in ratios)}, median {statistics.median(ratios):.2f})")
    print(f"    of which the read (LdapSource.read):      {statistics.median(f['read_seconds'] for f in full):7.2f} s"
          f"   ratio {statistics.median(f['read_seconds'] for f in full) / raw_median:.2f}x")
    print(f"  syncd incremental poll + plan, 10 changes:   {statistics.median(polls) * 1000:7.0f} ms  "
          f"({full[-1]['poll_people']} people returned, {full[-1]['poll_actions']} actions)")
    print(f"  syncd peak RSS (two full reads, a plan, a poll): {max(f['peak_rss_mb'] for f in full):.0f} MB "
          f"(goal < 300 MB)")


if __name__ == "__main__":
    main()
