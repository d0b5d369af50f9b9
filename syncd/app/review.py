"""How `syncd review` reads: a table on a terminal, JSON, CSV (RFC 4180) and one self-contained HTML file a reviewer can
open, sort and print. Every row is one scope of one person's access on one cluster."""

from __future__ import annotations

import csv
import html
import io
from datetime import datetime, timedelta
from typing import Any

from syncd.core.review import AccessReview, ScopeReview

COLUMNS = ("username", "person_id", "cluster", "scope", "granted_by", "privileged", "why", "expires_at",
           "last_used", "idle", "fingerprint")
HEADINGS = ("Person", "Id", "Cluster", "Scope", "Granted by", "Privileged", "Why", "Expires", "Last used", "Idle",
            "Fingerprint")


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _yes_no(value: bool | None, unknown: str) -> str:
    return unknown if value is None else "yes" if value else "no"


def _rules(rules: tuple[str, ...] | None) -> str:
    return "(not recorded)" if rules is None else ", ".join(rules)


def _rows(reviews: list[AccessReview]) -> list[dict[str, str]]:
    """One row of plain strings per scope (a person with access but no scope left gets one row)."""
    rows = []
    for access in reviews:
        for scope in access.scopes or (None,):
            privilege = scope.privilege if scope else None
            why = ", ".join(privilege.why) if privilege else ""
            rows.append({
                "username": access.username, "person_id": access.person_id, "cluster": access.cluster,
                "scope": str(scope.scope) if scope else "", "granted_by": _rules(scope.rules) if scope else "",
                "privileged": _yes_no(privilege.privileged, "unknown") if privilege else "no",
                "why": "; ".join(filter(None, (why, privilege.note if privilege else ""))),
                "expires_at": _when(access.expires_at) or "", "last_used": _when(access.last_used) or "never",
                "idle": _yes_no(access.idle, ""), "fingerprint": access.fingerprint or "",
            })
    return rows


def _scope_json(scope: ScopeReview) -> dict[str, Any]:
    return {"scope": str(scope.scope), "namespace": scope.scope.namespace, "role_kind": str(scope.scope.role_kind),
            "role": scope.scope.role_name, "granted_by": list(scope.rules) if scope.rules is not None else None,
            "privileged": scope.privilege.privileged, "why": list(scope.privilege.why),
            "note": scope.privilege.note or None}


def review_json(reviews: list[AccessReview], now: datetime, idle_after: timedelta | None) -> dict[str, Any]:
    return {
        "generated_at": now.isoformat(),
        "idle_after_seconds": idle_after.total_seconds() if idle_after is not None else None,
        "access": [{
            "username": a.username, "person_id": a.person_id, "cluster": a.cluster, "privileged": a.privileged,
            "purpose": list(a.purpose) if a.purpose is not None else None, "fingerprint": a.fingerprint,
            "expires_at": _when(a.expires_at), "last_used": _when(a.last_used), "idle": a.idle,
            "scopes": [_scope_json(scope) for scope in a.scopes],
        } for a in reviews],
    }


def review_csv(reviews: list[AccessReview]) -> str:
    """RFC 4180: a header, CRLF line ends, fields with commas, quotes or line breaks quoted."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(_rows(reviews))
    return out.getvalue()


def review_table(reviews: list[AccessReview]) -> str:
    lines = [f"{'PERSON':<16} {'CLUSTER':<10} {'PRIVILEGED':<10} {'EXPIRES':<19} {'LAST USED':<19} {'IDLE':<4} "
             f"SCOPE (GRANTED BY; WHY)"]
    for row in _rows(reviews):
        detail = "; ".join(filter(None, (row["granted_by"], row["why"])))
        lines.append(f"{row['username']:<16} {row['cluster']:<10} {row['privileged']:<10} "
                     f"{row['expires_at'][:19] or '-':<19} {row['last_used'][:19]:<19} {row['idle'] or '-':<4} "
                     f"{row['scope'] or '-'} ({detail})")
    if not reviews:
        lines.append("(nobody holds access)")
    return "\n".join(lines)


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #bbb;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eee;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.yes td.privileged{background:#fdd;font-weight:bold}tr.unknown td.privileged{background:#ffd}
td.fingerprint{font-family:monospace;font-size:12px}
@media print{body{margin:0;font-size:10px}th{cursor:auto}th::after{content:""!important}
tr{page-break-inside:avoid}thead{display:table-header-group}}
"""

_SORT = """
document.querySelectorAll("th").forEach(function(th,i){th.addEventListener("click",function(){
var body=th.closest("table").tBodies[0],up=th.getAttribute("aria-sort")!=="ascending";
th.parentNode.querySelectorAll("th").forEach(function(h){h.removeAttribute("aria-sort")});
th.setAttribute("aria-sort",up?"ascending":"descending");
Array.from(body.rows).sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent;
return (up?1:-1)*x.localeCompare(y,undefined,{numeric:true})}).forEach(function(r){body.appendChild(r)})})});
"""


def review_html(reviews: list[AccessReview], now: datetime, idle_after: timedelta | None) -> str:
    """One file: inline style and a few lines of script to sort by a column; every value escaped."""
    def cell(value: str) -> str:
        return html.escape(value, quote=True)

    rows = _rows(reviews)
    privileged = sum(1 for a in reviews if a.privileged)
    unknown = sum(1 for a in reviews if a.privileged is None)
    head = "".join(f'<th scope="col">{cell(h)}</th>' for h in HEADINGS)
    body = "\n".join(
        f'<tr class="{cell(row["privileged"])}">'
        + "".join(f'<td class="{name.replace("_", "-")}">{cell(row[name])}</td>' for name in COLUMNS) + "</tr>"
        for row in rows)
    idle = f"idle after {cell(str(idle_after))}" if idle_after is not None else "idleness not judged"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>syncd access review {cell(now.isoformat())}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>Access review</h1><p>Generated {cell(now.isoformat())}: {len(reviews)} access(es), {privileged} "
        f"privileged, {unknown} unknown (a cluster or role that could not be read); {idle}. Click a column to "
        "sort.</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>\n"
        f"<script>{_SORT}</script></body></html>\n")
