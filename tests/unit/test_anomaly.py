"""Anomalies in a credential's use, decided purely: one decision per test."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from syncd.core.anomaly import (
    FIRST_USE,
    MAX_KNOWN,
    AnomalyDetector,
    AnomalyKind,
    AnomalyRules,
    CredentialLife,
    DeniedBurst,
    Known,
    revoked_use,
)
from syncd.core.usage import Use

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
GRACE = timedelta(seconds=10)
RULES = AnomalyRules(revocation_grace=GRACE, denied_burst=20, denied_window=timedelta(minutes=1))
ALICE = ("alice", "dev")


def use(at: datetime = T0, *, denied: bool = False, ip: str = "10.0.0.7", agent: str = "kubectl/v1.20",
        credential_id: str = "") -> Use:
    return Use(key="alice", cluster="dev", credential_id=credential_id, at=at, denied=denied, source_ips=(ip,),
               user_agent=agent, verb="list", resource="pods", namespace="team-a")


def life(fingerprint: str, issued: datetime, revoked: datetime | None = None, jti: str = "") -> CredentialLife:
    return CredentialLife(fingerprint, issued, revoked, jti)


def detector(ips: tuple[str, ...] = ("10.0.0.7",), agents: tuple[str, ...] = ("kubectl/v1.20",)) -> AnomalyDetector:
    found = AnomalyDetector(RULES)
    found.remember(ALICE, ips, agents)
    return found


# Use after revocation

def test_use_beyond_the_grace_after_the_only_credential_was_revoked_is_use_after_revocation():
    revoked = life("sha256:a", T0 - timedelta(hours=1), T0)
    assert revoked_use(use(T0 + GRACE + timedelta(seconds=1)), [revoked], GRACE) == revoked


def test_use_within_the_grace_is_the_api_servers_token_cache_not_an_anomaly():
    assert revoked_use(use(T0 + GRACE), [life("sha256:a", T0 - timedelta(hours=1), T0)], GRACE) is None


def test_use_while_another_credential_of_the_person_is_live_is_no_anomaly_without_a_jti():
    lives = [life("sha256:a", T0 - timedelta(hours=1), T0), life("sha256:b", T0)]
    assert revoked_use(use(T0 + timedelta(minutes=5)), lives, GRACE) is None


def test_use_in_a_gap_between_a_revocation_and_the_next_issue_is_use_after_revocation():
    old = life("sha256:a", T0 - timedelta(hours=1), T0)
    lives = [old, life("sha256:b", T0 + timedelta(hours=1))]
    assert revoked_use(use(T0 + timedelta(minutes=5)), lives, GRACE) == old


def test_the_credential_revoked_last_before_the_use_is_named():
    first = life("sha256:a", T0 - timedelta(hours=2), T0 - timedelta(hours=1))
    second = life("sha256:b", T0 - timedelta(minutes=50), T0)
    assert revoked_use(use(T0 + timedelta(minutes=1)), [second, first], GRACE) == second


def test_a_token_named_by_its_jti_is_judged_alone_even_while_another_is_live():
    revoked = life("sha256:a", T0 - timedelta(hours=1), T0, jti="j-1")
    lives = [revoked, life("sha256:b", T0, jti="j-2")]
    assert revoked_use(use(T0 + timedelta(minutes=1), credential_id="j-1"), lives, GRACE) == revoked
    assert revoked_use(use(T0 + timedelta(minutes=1), credential_id="j-2"), lives, GRACE) is None


def test_a_jti_the_ledger_does_not_know_falls_back_to_the_persons_credentials():
    revoked = life("sha256:a", T0 - timedelta(hours=1), T0)
    assert revoked_use(use(T0 + timedelta(minutes=1), credential_id="j-9"), [revoked], GRACE) == revoked


def test_a_person_syncd_never_revoked_has_no_use_after_revocation():
    assert revoked_use(use(T0), [], GRACE) is None
    assert revoked_use(use(T0), [life("sha256:a", T0 - timedelta(hours=1))], GRACE) is None


def test_use_after_revocation_is_flagged_once_however_many_uses_follow():
    lives = {ALICE: [life("sha256:a", T0 - timedelta(hours=1), T0)]}
    found = detector().observe([use(T0 + timedelta(minutes=m)) for m in (1, 2, 3)], lives)
    assert [(a.kind, a.fingerprint) for a in found] == [(AnomalyKind.USE_AFTER_REVOCATION, "sha256:a")]


def test_a_credential_missing_from_the_lives_given_is_not_judged_for_revocation():
    assert detector().observe([use(T0 + timedelta(minutes=1))], {}) == []


# Denied bursts

def test_more_denied_requests_than_the_limit_within_the_window_is_one_burst():
    burst = DeniedBurst(20, timedelta(minutes=1))
    counts = [burst.add(T0 + timedelta(seconds=i)) for i in range(40)]
    assert [count for count in counts if count is not None] == [21]


def test_as_many_denied_requests_as_the_limit_is_no_burst():
    burst = DeniedBurst(20, timedelta(minutes=1))
    assert all(burst.add(T0 + timedelta(seconds=i)) is None for i in range(20))


def test_denied_requests_spread_wider_than_the_window_are_no_burst():
    burst = DeniedBurst(20, timedelta(minutes=1))
    assert all(burst.add(T0 + timedelta(seconds=4 * i)) is None for i in range(100))


def test_a_burst_after_a_quiet_spell_is_a_new_burst():
    burst = DeniedBurst(2, timedelta(minutes=1))
    first = [burst.add(T0 + timedelta(seconds=i)) for i in range(5)]
    quiet = burst.add(T0 + timedelta(minutes=10))
    second = [burst.add(T0 + timedelta(minutes=10, seconds=i)) for i in range(1, 5)]
    assert (first.count(3), quiet, second.count(3)) == (1, None, 1)


def test_the_detector_flags_a_denied_burst_once_and_allowed_requests_do_not_count():
    uses = [use(T0 + timedelta(seconds=i), denied=True) for i in range(25)] + [use(T0) for _ in range(50)]
    found = detector().observe(uses, {})
    assert [(a.kind, a.detail) for a in found] == [(AnomalyKind.DENIED_BURST, "21 denied requests within 60s")]


# New source IPs and user agents

def test_a_source_ip_never_seen_for_the_credential_is_flagged_once():
    found = detector().observe([use(ip="192.0.2.1"), use(ip="192.0.2.1")], {})
    assert [(a.kind, a.detail) for a in found] == [(AnomalyKind.NEW_SOURCE_IP, "source IP 192.0.2.1")]


def test_a_user_agent_never_seen_for_the_credential_is_flagged_once():
    found = detector().observe([use(agent="curl/8.5"), use(agent="curl/8.5")], {})
    assert [(a.kind, a.detail) for a in found] == [(AnomalyKind.NEW_USER_AGENT, "user agent curl/8.5")]


def test_what_the_credential_was_seen_with_before_is_no_anomaly():
    assert detector(ips=("10.0.0.7", "10.0.0.8")).observe([use(ip="10.0.0.8")], {}) == []


def test_the_first_use_of_a_credential_never_used_is_no_anomaly_but_sets_what_is_known():
    fresh = detector(ips=(), agents=())
    first_use = [use(), use(T0 + FIRST_USE, agent="kubectl-dispatcher/v1.0")]  # one command's requests
    assert fresh.observe(first_use, {}) == []
    later = use(T0 + FIRST_USE + timedelta(seconds=1), agent="k9s")
    assert [a.kind for a in fresh.observe([later, use(later.at)], {})] == [AnomalyKind.NEW_USER_AGENT]


def test_a_credential_whose_history_is_not_remembered_is_not_judged():
    fresh = AnomalyDetector(RULES)
    assert fresh.unknown([ALICE]) == {ALICE}
    assert fresh.observe([use(ip="192.0.2.1")], {}) == []


def test_the_values_known_per_credential_are_bounded_forgetting_the_least_recently_seen():
    known = Known(f"10.0.{i // 256}.{i % 256}" for i in range(MAX_KNOWN + 5))
    assert len(known.values) == MAX_KNOWN
    assert "10.0.0.0" not in known.values and f"10.0.0.{MAX_KNOWN + 4}" in known.values


def test_an_anomaly_names_no_more_than_a_bounded_user_agent():
    [found] = detector().observe([replace(use(), user_agent="x" * 5000)], {})
    assert len(found.detail) < 300
