"""Anomalies in a credential's use, decided from the uses the audit events record (`syncd.core.usage.Use`) and what
the ledger knows: use after syncd revoked the credential, a burst of denied requests, a source IP or user agent the
credential (person and cluster) was never seen with. Pure: no I/O; each anomaly is found once."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from syncd.core.usage import Use

MAX_KNOWN = 64  # source IPs and user agents remembered per credential; beyond, the least recently seen is forgotten
MAX_TRACKED = 10_000  # credentials whose recent use is held in memory; beyond, the least recently used is forgotten
MAX_FLAGGED = 10_000  # revoked credentials remembered as flagged (the ledger remembers them too)
MAX_DETAIL = 200  # characters of a user agent named in an anomaly
# A credential's first use: its first request and those within this span after it (one command's requests: kubectl's
# dispatcher, discovery, the request itself) set what it is known by, and are never new.
FIRST_USE = timedelta(seconds=10)

Credential = tuple[str, str]  # person key, cluster: what the API server names before Kubernetes 1.29


class AnomalyKind(StrEnum):
    USE_AFTER_REVOCATION = "use-after-revocation"
    DENIED_BURST = "denied-burst"
    NEW_SOURCE_IP = "new-source-ip"
    NEW_USER_AGENT = "new-user-agent"


@dataclass(frozen=True)
class AnomalyRules:
    revocation_grace: timedelta  # how long the API server may accept a revoked token (its token cache)
    denied_burst: int  # more denied requests than this within denied_window is a burst
    denied_window: timedelta


@dataclass(frozen=True)
class CredentialLife:
    """One token the ledger recorded for a person on a cluster: from its issue to its revocation (None: live)."""

    fingerprint: str
    issued_at: datetime
    revoked_at: datetime | None
    jti: str = ""  # the token's jti claim, "" when the ledger does not know it


@dataclass(frozen=True)
class Anomaly:
    kind: AnomalyKind
    key: str
    cluster: str
    at: datetime  # the use that showed it
    detail: str  # what was seen, for people: never token material
    fingerprint: str | None = None  # the revoked credential used


def revoked_use(use: Use, lives: Sequence[CredentialLife], grace: timedelta) -> CredentialLife | None:
    """The revoked credential `use` was made with, beyond `grace` after its revocation, or None. The token the
    event names (its jti) when the ledger knows it; else the person had no credential live at the time (issued,
    not yet revoked, give or take `grace`), and the one revoked last before it is named."""
    if use.credential_id:
        named = next((life for life in lives if life.jti == use.credential_id), None)
        if named is not None:
            ended = named.revoked_at is not None and use.at > named.revoked_at + grace
            return named if ended else None
    if any(life.issued_at - grace <= use.at and (life.revoked_at is None or use.at <= life.revoked_at + grace)
           for life in lives):
        return None
    ended_before = [life for life in lives if life.revoked_at is not None and life.revoked_at + grace < use.at]
    return max(ended_before, key=lambda life: life.revoked_at) if ended_before else None  # type: ignore[arg-type,return-value]


class DeniedBurst:
    """Denied requests of one credential: a burst starts when more than `limit` fall within `window`, and ends once
    a denied request finds at most `limit` in the window before it."""

    def __init__(self, limit: int, window: timedelta) -> None:
        self.window = window
        self.limit = limit
        self.times: deque[datetime] = deque(maxlen=limit + 1)
        self.bursting = False

    def add(self, at: datetime) -> int | None:
        """Count a denied request; how many fell within the window when it starts a burst, else None."""
        self.times.append(at)
        while self.times and self.times[0] < at - self.window:
            self.times.popleft()
        if len(self.times) <= self.limit:
            self.bursting = False
            return None
        if self.bursting:
            return None
        self.bursting = True
        return len(self.times)


class Known:
    """Values (source IPs or user agents) a credential was seen with, at most MAX_KNOWN, least recently seen first."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: OrderedDict[str, None] = OrderedDict()
        for value in values:
            self.see(value)

    def see(self, value: str) -> bool:
        """Remember `value`; True when it is new."""
        if value in self.values:
            self.values.move_to_end(value)
            return False
        self.values[value] = None
        if len(self.values) > MAX_KNOWN:
            self.values.popitem(last=False)
        return True


class _Track:
    def __init__(self, rules: AnomalyRules, ips: Iterable[str], agents: Iterable[str]) -> None:
        self.ips, self.agents = Known(ips), Known(agents)
        self.never_used = not self.ips.values and not self.agents.values
        self.first_use_ends: datetime | None = None
        self.denied = DeniedBurst(rules.denied_burst, rules.denied_window)


class AnomalyDetector:
    """Finds the anomalies in a stream of uses. What each credential was seen with before comes from the ledger
    (`remember`) the first time it is met; `observe` judges only credentials remembered."""

    def __init__(self, rules: AnomalyRules) -> None:
        self.rules = rules
        self._tracks: OrderedDict[Credential, _Track] = OrderedDict()
        self._flagged: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def unknown(self, credentials: Iterable[Credential]) -> set[Credential]:
        """The credentials whose history `remember` must give before `observe` judges their use."""
        return {credential for credential in credentials if credential not in self._tracks}

    def remember(self, credential: Credential, ips: Iterable[str], agents: Iterable[str]) -> None:
        """What the credential was seen with before (none: it was never used)."""
        self._tracks[credential] = _Track(self.rules, ips, agents)
        while len(self._tracks) > MAX_TRACKED:
            self._tracks.popitem(last=False)

    def observe(self, uses: Iterable[Use], lives: Mapping[Credential, Sequence[CredentialLife]]) -> list[Anomaly]:
        """The anomalies `uses` show, each once. `lives`: the tokens the ledger recorded per credential (a
        credential missing there is not judged for use after revocation)."""
        found: list[Anomaly] = []
        for use in uses:
            credential = (use.key, use.cluster)
            track = self._tracks.get(credential)
            if track is None:
                continue
            self._tracks.move_to_end(credential)
            if credential in lives:
                found.extend(self._revoked(use, lives[credential]))
            if use.denied:
                count = track.denied.add(use.at)
                if count is not None:
                    window = int(self.rules.denied_window.total_seconds())
                    found.append(Anomaly(AnomalyKind.DENIED_BURST, use.key, use.cluster, use.at,
                                         f"{count} denied requests within {window}s"))
            found.extend(self._places(use, track))
        return found

    def _revoked(self, use: Use, lives: Sequence[CredentialLife]) -> list[Anomaly]:
        life = revoked_use(use, lives, self.rules.revocation_grace)
        if life is None or (use.key, use.cluster, life.fingerprint) in self._flagged:
            return []
        self._flagged[(use.key, use.cluster, life.fingerprint)] = None
        while len(self._flagged) > MAX_FLAGGED:
            self._flagged.popitem(last=False)
        assert life.revoked_at is not None
        return [Anomaly(AnomalyKind.USE_AFTER_REVOCATION, use.key, use.cluster, use.at,
                        f"used at {use.at.isoformat()}, revoked at {life.revoked_at.isoformat()}", life.fingerprint)]

    @staticmethod
    def _places(use: Use, track: _Track) -> list[Anomaly]:
        """New source IPs and user agents; the first use of a credential never used before (FIRST_USE) only sets
        them."""
        if track.never_used:
            track.never_used, track.first_use_ends = False, use.at + FIRST_USE
        first_use = track.first_use_ends is not None and use.at <= track.first_use_ends
        found = []
        for ip in use.source_ips:
            if track.ips.see(ip) and not first_use:
                found.append(Anomaly(AnomalyKind.NEW_SOURCE_IP, use.key, use.cluster, use.at, f"source IP {ip}"))
        if use.user_agent and track.agents.see(use.user_agent) and not first_use:
            found.append(Anomaly(AnomalyKind.NEW_USER_AGENT, use.key, use.cluster, use.at,
                                 f"user agent {use.user_agent[:MAX_DETAIL]}"))
        return found
