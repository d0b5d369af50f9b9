"""How plans, runs and ledger events look on a terminal and as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from syncd.adapters.ledger.tables import CredentialRow, EventRow, aware, purpose_from_json
from syncd.core.model import Purpose, Scope, person_key, purpose_rules
from syncd.core.plan import Action, Kind, Plan
from syncd.core.usage import DayUsage, UsageKey, token_last_used, top
from syncd.runtime.engine import RunReport

_MARK = {Kind.ISSUE: "+", Kind.RESCOPE: "~", Kind.REFRESH: "~", Kind.ROTATE: "~", Kind.RETIRE: "-", Kind.REPAIR: "~",
         Kind.REVOKE: "-", Kind.ORPHAN: "-"}


def _details(action: Action) -> list[str]:
    """What the action writes, one object a line."""
    lines = [f"      {change}" for change in action.changes]
    if action.previous_username and action.previous_username != action.username and action.kind is Kind.RESCOPE:
        lines.append(f"      renamed from {action.previous_username}")
    return lines


def plan_text(report: RunReport) -> str:
    plan = report.plan if report.plan is not None else Plan(report.source)
    verb = "Would apply" if report.dry_run else "Plan"
    lines = [f"{verb} for source {report.source}: {len(plan.actions)} change(s), {len(plan.held)} held"]
    if report.error is not None:
        lines.append(f"  ! source could not be read: {report.error}")
    for problem in report.problems:
        lines.append(f"  ! skipped: {problem}")
    for cluster in plan.skipped_clusters:
        lines.append(f"  ! cluster {cluster} skipped: {report.cluster_errors.get(cluster, 'unreachable')}")
    for note in plan.notes:
        lines.append(f"  ! warning: {note}")
    failed = {id(a): e for a, e in (report.outcome.failed if report.outcome else [])}
    for action in plan.actions:
        status = f"  FAILED: {failed[id(action)]}" if id(action) in failed else ""
        lines.append(f"  {_MARK[action.kind]} {action.kind:<8} {action.username} on {action.cluster} "
                     f"({action.reason}){status}")
        lines.extend(_details(action))
    for held in plan.held:
        lines.append(f"  ! held    {held.action.kind} {held.action.username} on {held.action.cluster} "
                     f"({held.action.reason}): {held.why}")
        lines.extend(_details(held.action))
    for idle in plan.idle:
        lines.append(f"  ! idle    {idle.username} on {idle.cluster}: no use since {idle.since:%Y-%m-%d %H:%M:%S}")
    if not report.dry_run and report.plan is not None:
        lines.append(f"  run {report.run_id}: {report.result}, {report.writes} write call(s)"
                     + (f", {report.confirmed_rejections} revoked token(s) confirmed rejected"
                        if report.confirmed_rejections else ""))
        if plan.actions and report.apply_seconds:
            lines.append(f"  applied {len(plan.actions)} action(s) in {report.apply_seconds:.1f} s "
                         f"({len(plan.actions) / report.apply_seconds:.1f} actions/s)")
    return "\n".join(lines)


def action_json(action: Action) -> dict[str, Any]:
    return {
        "kind": str(action.kind),
        "reason": str(action.reason),
        "cluster": action.cluster,
        "person_id": action.person_id,
        "username": action.username,
        "message": action.message,
        "before": sorted(str(s) for s in action.before),
        "after": sorted(str(s) for s in action.after),
        "changes": [{"op": c.op, "kind": c.kind, "namespace": c.namespace, "name": c.name, "detail": c.detail}
                    for c in action.changes],
    }


def report_json(report: RunReport) -> dict[str, Any]:
    plan = report.plan if report.plan is not None else Plan(report.source)
    failed = {id(a): str(e) for a, e in (report.outcome.failed if report.outcome else [])}
    return {
        "source": report.source,
        "run_id": report.run_id,
        "dry_run": report.dry_run,
        "result": report.result,
        "error": str(report.error) if report.error else None,
        "problems": list(report.problems),
        "actions": [action_json(a) | {"error": failed.get(id(a))} for a in plan.actions],
        "held": [action_json(h.action) | {"why": h.why} for h in plan.held],
        "skipped_clusters": list(plan.skipped_clusters),
        "notes": list(plan.notes),
        "idle": [{"person_id": i.person_id, "username": i.username, "cluster": i.cluster, "since": _when(i.since)}
                 for i in plan.idle],
        "writes": report.writes,
        "confirmed_rejections": report.confirmed_rejections,
    }


LastUsed = Mapping[tuple[str, str], Mapping[str, datetime]]  # (person key, cluster) -> jti or "" -> last use,
# `ReadModel.last_used_by_token()`


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _last_used(row: CredentialRow, last_used: LastUsed) -> datetime | None:
    return token_last_used(last_used.get((person_key(row.person_id), row.cluster), {}), row.jti,
                           aware(row.issued_at), aware(row.revoked_at))  # type: ignore[arg-type]


def purpose_json(purpose: Purpose | None) -> list[str] | None:
    """The names of the rules that grant a credential; None when its purpose was never recorded."""
    return None if purpose is None else list(purpose_rules(purpose))


def purpose_text(purpose: Purpose | None) -> str:
    return "(not recorded)" if purpose is None else ", ".join(purpose_rules(purpose)) or "-"


def credential_json(row: CredentialRow, username: str, scopes: frozenset[Scope],
                    last_used: LastUsed | None = None) -> dict[str, Any]:
    when = _when  # short, for the many times below
    return {
        "owner": username, "person_id": row.person_id, "cluster": row.cluster, "state": row.state,
        "fingerprint": row.fingerprint, "secret": row.secret_name, "scopes": sorted(str(s) for s in scopes),
        "purpose": purpose_json(purpose_from_json(row.purpose)),
        "issued_at": when(row.issued_at), "expires_at": when(row.expires_at), "retire_at": when(row.retire_at),
        "revoked_at": when(row.revoked_at), "revoke_reason": row.revoke_reason, "rejected_at": when(row.rejected_at),
        "last_used": when(_last_used(row, last_used or {})),
    }


def credentials_text(rows: list[tuple[CredentialRow, str, frozenset[Scope]]],
                     last_used: LastUsed | None = None) -> str:
    header = f"{'OWNER':<16} {'CLUSTER':<10} {'STATE':<9} {'FINGERPRINT':<24} {'ISSUED (LAST ROTATION)':<20} " \
             f"{'EXPIRES':<20} {'LAST USED':<20} {'PURPOSE':<20} SCOPES"
    lines = [header]
    for row, username, scopes in rows:
        state = row.state + (f" ({row.revoke_reason})" if row.state != "active" and row.revoke_reason else "")
        used = _last_used(row, last_used or {})
        lines.append(f"{username:<16} {row.cluster:<10} {state:<9} {row.fingerprint[:24]:<24} "
                     f"{row.issued_at:%Y-%m-%d %H:%M:%S}  {row.expires_at:%Y-%m-%d %H:%M:%S}  "
                     f"{f'{used:%Y-%m-%d %H:%M:%S}' if used else 'never':<20} "
                     f"{purpose_text(purpose_from_json(row.purpose)):<20} "
                     f"{', '.join(sorted(str(s) for s in scopes)) or '-'}")
    return "\n".join(lines)


def access_json(person_id: str, username: str, cluster: str, state: str, since: datetime | None,
                scopes: frozenset[Scope], last_used: LastUsed) -> dict[str, Any]:
    """One person's access to one cluster: `active` since its grant, or `suspended` (idle) since its suspension."""
    return {"person": username, "person_id": person_id, "cluster": cluster, "state": state, "since": _when(since),
            "last_used": _when(last_used.get((person_key(person_id), cluster))),
            "scopes": sorted(str(s) for s in scopes)}


def accesses_text(entries: list[dict[str, Any]]) -> str:
    lines = [f"{'PERSON':<16} {'CLUSTER':<10} {'STATE':<10} {'SINCE':<20} {'LAST USED':<20} SCOPES"]
    for entry in entries:
        since, used = (entry[name][:19].replace("T", " ") if entry[name] else None for name in ("since", "last_used"))
        lines.append(f"{entry['person']:<16} {entry['cluster']:<10} {entry['state']:<10} {since or '-':<20} "
                     f"{used or 'never':<20} {', '.join(entry['scopes']) or '-'}")
    return "\n".join(lines)


Purposes = Mapping[str, Purpose | None]  # cluster -> the purpose of the person's newest credential there


def usage_json(person_id: str, username: str, days: list[tuple[UsageKey, DayUsage]],
               purposes: Purposes | None = None) -> dict[str, Any]:
    return {"person_id": person_id, "username": username,
            "purpose": {cluster: purpose_json(purpose) for cluster, purpose in sorted((purposes or {}).items())},
            "days": [
        {"day": on.isoformat(), "cluster": cluster, "credential_id": credential_id or None,
         "requests": day.requests, "denied": day.denied, "first_use": _when(day.first), "last_use": _when(day.last),
         "source_ips": day.source_ips, "user_agents": day.user_agents, "verbs": day.verbs,
         "resources": day.resources, "namespaces": day.namespaces}
        for (_, cluster, on, credential_id), day in days]}


def usage_text(person_id: str, username: str, days: list[tuple[UsageKey, DayUsage]],
               purposes: Purposes | None = None) -> str:
    granted = [f"  purpose on {cluster}: {purpose_text(purpose)}"
               for cluster, purpose in sorted((purposes or {}).items())]
    if not days:
        return "\n".join([f"{username} (id {person_id}): no use recorded", *granted])
    first, last = min(day.first for _, day in days), max(day.last for _, day in days)
    lines = [f"{username} (id {person_id}): {sum(d.requests for _, d in days)} request(s), "
             f"{sum(d.denied for _, d in days)} denied; first use {first:%Y-%m-%d %H:%M:%S}, last use "
             f"{last:%Y-%m-%d %H:%M:%S}", *granted,
             f"{'DAY':<10}  {'CLUSTER':<10} {'REQUESTS':>8} {'DENIED':>6}  {'LAST USE':<8}  {'SOURCE IPS':<20} "
             f"TOP VERBS / RESOURCES / NAMESPACES"]
    for (_, cluster, on, _), day in days:
        tops = " / ".join(", ".join(f"{name} {count}" for name, count in top(counter, 3)) or "-"
                          for counter in (day.verbs, day.resources, day.namespaces))
        lines.append(f"{on.isoformat():<10}  {cluster:<10} {day.requests:>8} {day.denied:>6}  {day.last:%H:%M:%S}  "
                     f"{', '.join(day.source_ips) or '-':<20} {tops}")
    return "\n".join(lines)


def event_json(row: EventRow) -> dict[str, Any]:
    return {
        "seq": row.seq, "at": row.at.isoformat(), "run_id": row.run_id, "person_id": row.person_id,
        "username": row.username, "cluster": row.cluster, "action": row.action, "reason": row.reason,
        "before": row.before, "after": row.after, "result": row.result, "error": row.error,
        "fingerprint": row.fingerprint, "hash": row.hash,
    }


def event_text(row: EventRow) -> str:
    where = f" on {row.cluster}" if row.cluster else ""
    error = f" error={row.error}" if row.error else ""
    return (f"{row.seq:>5} {row.at:%Y-%m-%d %H:%M:%S} run={row.run_id or '-'} {row.action} {row.username} "
            f"(id {row.person_id}){where} "
            f"({row.reason}) {row.result}{error}")


def source_check_json(result: dict[str, Any]) -> dict[str, Any]:
    """`syncd source test`: the counts, and the sample identity as plain data."""
    sample = result.get("sample")
    return result | {"sample": None if sample is None else {
        "id": sample.id, "username": sample.username, "email": sample.email, "display_name": sample.display_name,
        "groups": sorted(sample.groups), "active": sample.active, "attributes": sample.attributes}}


def source_check_text(result: dict[str, Any]) -> str:
    data = source_check_json(result)
    lines = [f"source {data['source']}: ok" + (f" ({data['server']} as {data['bind_dn']})" if "server" in data else "")]
    lines.append(f"  people: {data['people']}" + (f", groups: {data['groups']}" if "groups" in data else ""))
    if "watch" in data:
        lines.append(f"  watch: {data['watch']} (what the server supports)")
    sample = data["sample"]
    if sample:
        lines.append(f"  sample: {sample['username']} (id {sample['id']}) <{sample['email']}> "
                     f"\"{sample['display_name']}\" active={str(sample['active']).lower()}")
        lines.append(f"    groups: {', '.join(sample['groups']) or '-'}")
        lines += [f"    {key}: {value}" for key, value in sorted(sample["attributes"].items())]
    lines += [f"  problem: {problem}" for problem in data["problems"]]
    return "\n".join(lines)
