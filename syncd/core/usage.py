"""A credential's use, from the API server's audit events (`audit.k8s.io/v1` Event dicts): which person and cluster an
event belongs to, and the per-day aggregates syncd keeps of it. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

MAX_DISTINCT = 16  # source IPs and user agents kept per credential per day
MAX_TOP = 20  # verbs, resources and namespaces counted per credential per day; the rest count as OTHER
OTHER = "(other)"
COUNTED_STAGES = ("ResponseComplete", "Panic")  # one per request: ResponseStarted precedes a long request's end
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


def user_prefix(namespace: str) -> str:
    """What `user.username` starts with for a ServiceAccount syncd keeps in `namespace` (`syncd-<person key>`)."""
    return f"system:serviceaccount:{namespace}:syncd-"


@dataclass(frozen=True)
class Use:
    """One request a person's credential made."""

    key: str  # the person key (service_account_name's suffix)
    cluster: str
    credential_id: str  # the token's jti (`JTI=...` in the event) or "" when the API server does not say
    at: datetime
    denied: bool
    source_ips: tuple[str, ...]
    user_agent: str
    verb: str
    resource: str
    namespace: str

    @property
    def day(self) -> date:
        return self.at.date()


def attribute(event: Mapping[str, Any], cluster: str, prefix: str) -> Use | None:
    """The use an audit event records of a syncd credential on `cluster`, or None for any other user, stage or a
    malformed event. The username's prefix is checked before anything else is read."""
    user = event.get("user")
    username = user.get("username") if isinstance(user, dict) else None
    if not isinstance(username, str) or not username.startswith(prefix):
        return None
    key = username[len(prefix):]
    if not key or event.get("stage") not in COUNTED_STAGES:
        return None
    at = _timestamp(event.get("stageTimestamp") or event.get("requestReceivedTimestamp"))
    if at is None:
        return None
    status = event.get("responseStatus")
    code = status.get("code") if isinstance(status, dict) else None
    ref = event.get("objectRef")
    ref = ref if isinstance(ref, dict) else {}
    resource = str(ref.get("resource") or "")
    if resource and ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    ips = event.get("sourceIPs")
    return Use(key=key, cluster=cluster, credential_id=_credential_id(user), at=at, denied=code == 403,
               source_ips=tuple(str(ip) for ip in ips) if isinstance(ips, list) else (),
               user_agent=str(event.get("userAgent") or ""), verb=str(event.get("verb") or ""),
               resource=resource, namespace=str(ref.get("namespace") or ""))


def _credential_id(user: Mapping[str, Any]) -> str:
    extra = user.get("extra")
    values = extra.get(CREDENTIAL_ID) if isinstance(extra, dict) else None
    for value in values if isinstance(values, list) else ():
        if isinstance(value, str) and value.startswith("JTI="):
            return value[4:]
    return ""


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _add_bounded(values: list[str], value: str) -> None:
    if value and value not in values and len(values) < MAX_DISTINCT:
        values.append(value)


def _count_bounded(counter: dict[str, int], name: str, times: int = 1) -> None:
    if not name:
        return
    if name not in counter and len(counter) >= MAX_TOP:
        name = OTHER
    counter[name] = counter.get(name, 0) + times


@dataclass
class DayUsage:
    """What one credential did on one day: requests, denied (403) requests, first and last use, distinct source IPs
    and user agents (at most MAX_DISTINCT each), and counts by verb, resource and namespace (at most MAX_TOP each,
    the rest under OTHER)."""

    first: datetime
    last: datetime
    requests: int = 0
    denied: int = 0
    source_ips: list[str] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)
    verbs: dict[str, int] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)
    namespaces: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, use: Use) -> DayUsage:
        day = cls(first=use.at, last=use.at)
        day.add(use)
        return day

    def add(self, use: Use) -> None:
        self.requests += 1
        self.denied += use.denied
        self.first, self.last = min(self.first, use.at), max(self.last, use.at)
        for ip in use.source_ips:
            _add_bounded(self.source_ips, ip)
        _add_bounded(self.user_agents, use.user_agent)
        _count_bounded(self.verbs, use.verb)
        _count_bounded(self.resources, use.resource)
        _count_bounded(self.namespaces, use.namespace)

    def merge(self, other: DayUsage) -> None:
        """Fold in another aggregate of the same credential and day (what the ledger holds, or a later batch)."""
        self.requests += other.requests
        self.denied += other.denied
        self.first, self.last = min(self.first, other.first), max(self.last, other.last)
        for ip in other.source_ips:
            _add_bounded(self.source_ips, ip)
        for agent in other.user_agents:
            _add_bounded(self.user_agents, agent)
        for mine, theirs in ((self.verbs, other.verbs), (self.resources, other.resources),
                             (self.namespaces, other.namespaces)):
            for name, times in theirs.items():
                _count_bounded(mine, name, times)


UsageKey = tuple[str, str, date, str]  # person key, cluster, day, credential id


class Aggregator:
    """Uses gathered in memory until drained: one DayUsage per credential and day."""

    def __init__(self) -> None:
        self.days: dict[UsageKey, DayUsage] = {}

    def add(self, uses: Iterable[Use]) -> None:
        for use in uses:
            key = (use.key, use.cluster, use.day, use.credential_id)
            day = self.days.get(key)
            if day is None:
                self.days[key] = DayUsage.of(use)
            else:
                day.add(use)

    def restore(self, days: Mapping[UsageKey, DayUsage]) -> None:
        """Take back what was drained (a flush that failed), folded into what came since."""
        for key, day in days.items():
            kept = self.days.setdefault(key, day)
            if kept is not day:
                kept.merge(day)

    def drain(self) -> dict[UsageKey, DayUsage]:
        days, self.days = self.days, {}
        return days


def top(counter: Mapping[str, int], limit: int = 5) -> list[tuple[str, int]]:
    """The most counted names, most first (ties by name)."""
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:limit]


def credential_last_used(last_use: datetime | None, issued_at: datetime, ended_at: datetime | None) -> datetime | None:
    """A credential's last use, where the API server names no token (before Kubernetes 1.29): the person's last use
    on the cluster, if it falls within the credential's life (from its issue to its revocation)."""
    if last_use is None or last_use < issued_at or (ended_at is not None and last_use > ended_at):
        return None
    return last_use


def token_last_used(last_uses: Mapping[str, datetime], jti: str | None, issued_at: datetime,
                    ended_at: datetime | None) -> datetime | None:
    """A token's last use, from the person's last uses on its cluster by token (jti -> last use; "" for uses that
    name no token the ledger recorded): the uses that name it (Kubernetes 1.29+), and those naming none that fall
    within its life (`credential_last_used`)."""
    named = last_uses.get(jti) if jti else None
    unnamed = credential_last_used(last_uses.get(""), issued_at, ended_at)
    return max((at for at in (named, unnamed) if at is not None), default=None)
