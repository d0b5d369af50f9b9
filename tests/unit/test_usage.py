"""The pure mapping of audit events to a credential's use, and its per-day aggregates: one rule per test."""

import base64
import json
from datetime import UTC, date, datetime

from syncd.core.usage import (
    MAX_DISTINCT,
    MAX_TOP,
    OTHER,
    Aggregator,
    DayUsage,
    attribute,
    credential_last_used,
    token_last_used,
    user_prefix,
)
from syncd.ports import IssuedToken

PREFIX = user_prefix("syncd")


def event(username: str = "system:serviceaccount:syncd:syncd-alice", **fields) -> dict:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "a1",
            "stage": "ResponseComplete", "verb": "list", "userAgent": "kubectl/v1.20.2",
            "user": {"username": username, "groups": ["system:serviceaccounts"]}, "sourceIPs": ["10.0.0.7"],
            "objectRef": {"resource": "pods", "namespace": "team-a", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": "2026-12-01T10:00:00.000001Z",
            "stageTimestamp": "2026-12-01T10:00:00.020000Z"} | fields


def test_a_syncd_service_account_maps_to_its_person_key_and_the_sender_cluster():
    use = attribute(event(), "dev", PREFIX)
    assert use is not None
    assert (use.key, use.cluster, use.verb, use.resource, use.namespace) == ("alice", "dev", "list", "pods", "team-a")
    assert use.at == datetime(2026, 12, 1, 10, 0, 0, 20000, tzinfo=UTC)


def test_other_users_are_ignored():
    assert attribute(event("system:serviceaccount:kube-system:deployment-controller"), "dev", PREFIX) is None
    assert attribute(event("admin"), "dev", PREFIX) is None


def test_service_accounts_of_another_syncd_namespace_are_ignored():
    assert attribute(event("system:serviceaccount:other:syncd-alice"), "dev", PREFIX) is None


def test_service_accounts_in_syncds_namespace_not_named_by_syncd_are_ignored():
    assert attribute(event("system:serviceaccount:syncd:default"), "dev", PREFIX) is None
    assert attribute(event("system:serviceaccount:syncd:syncd-"), "dev", PREFIX) is None


def test_other_users_are_ignored_before_anything_else_is_read():
    class Tripwire(dict):
        def get(self, name, default=None):
            if name != "user":
                raise AssertionError(f"read {name} of a foreign event")
            return super().get(name, default)

    assert attribute(Tripwire(event("admin")), "dev", PREFIX) is None


def test_only_the_final_stage_of_a_request_counts():
    assert attribute(event(stage="RequestReceived"), "dev", PREFIX) is None
    assert attribute(event(stage="ResponseStarted"), "dev", PREFIX) is None
    assert attribute(event(stage="Panic"), "dev", PREFIX) is not None


def test_an_event_without_a_user_or_a_time_is_ignored():
    assert attribute({"stage": "ResponseComplete"}, "dev", PREFIX) is None
    assert attribute(event(user="nobody"), "dev", PREFIX) is None
    assert attribute(event(stageTimestamp="yesterday", requestReceivedTimestamp=None), "dev", PREFIX) is None


def test_a_403_is_a_denied_request_and_other_codes_are_not():
    assert attribute(event(responseStatus={"code": 403}), "dev", PREFIX).denied
    assert not attribute(event(responseStatus={"code": 404}), "dev", PREFIX).denied


def test_the_credential_id_is_kept_when_the_event_carries_one():
    user = {"username": "system:serviceaccount:syncd:syncd-alice",
            "extra": {"authentication.kubernetes.io/credential-id": ["JTI=6f1c-42"]}}
    assert attribute(event(user=user), "dev", PREFIX).credential_id == "6f1c-42"
    assert attribute(event(), "dev", PREFIX).credential_id == ""


def test_a_subresource_is_counted_with_its_resource():
    ref = {"resource": "pods", "subresource": "exec", "namespace": "team-a"}
    assert attribute(event(objectRef=ref), "dev", PREFIX).resource == "pods/exec"


def test_a_day_counts_requests_denied_requests_and_first_and_last_use():
    uses = [attribute(event(stageTimestamp=f"2026-12-01T1{h}:00:00Z", responseStatus={"code": code}), "dev", PREFIX)
            for h, code in ((5, 200), (1, 403), (9, 200))]
    day = DayUsage.of(uses[0])
    for use in uses[1:]:
        day.add(use)
    assert (day.requests, day.denied) == (3, 1)
    assert (day.first.hour, day.last.hour) == (11, 19)


def test_distinct_source_ips_and_user_agents_are_bounded():
    day = DayUsage.of(attribute(event(), "dev", PREFIX))
    for n in range(3 * MAX_DISTINCT):
        day.add(attribute(event(sourceIPs=[f"10.1.0.{n}"], userAgent=f"agent/{n}"), "dev", PREFIX))
    assert len(day.source_ips) == MAX_DISTINCT and len(day.user_agents) == MAX_DISTINCT
    assert day.source_ips[0] == "10.0.0.7"


def test_verbs_resources_and_namespaces_are_bounded_counters_with_the_rest_as_other():
    day = DayUsage.of(attribute(event(), "dev", PREFIX))
    for n in range(2 * MAX_TOP):
        day.add(attribute(event(objectRef={"resource": f"kind{n}", "namespace": "team-a"}), "dev", PREFIX))
    assert len(day.resources) == MAX_TOP + 1
    assert day.resources[OTHER] == 2 * MAX_TOP + 1 - MAX_TOP
    assert day.namespaces == {"team-a": 2 * MAX_TOP + 1}


def test_merging_two_aggregates_of_a_day_adds_them_up_within_the_bounds():
    morning = DayUsage.of(attribute(event(stageTimestamp="2026-12-01T08:00:00Z"), "dev", PREFIX))
    evening = DayUsage.of(attribute(event(stageTimestamp="2026-12-01T20:00:00Z", sourceIPs=["10.9.9.9"],
                                          responseStatus={"code": 403}), "dev", PREFIX))
    morning.merge(evening)
    assert (morning.requests, morning.denied, morning.first.hour, morning.last.hour) == (2, 1, 8, 20)
    assert morning.source_ips == ["10.0.0.7", "10.9.9.9"] and morning.verbs == {"list": 2}


def test_the_aggregator_keeps_one_day_per_person_cluster_day_and_credential_and_drains_empty():
    aggregator = Aggregator()
    aggregator.add([attribute(event(), "dev", PREFIX), attribute(event(), "dev", PREFIX),
                    attribute(event(), "prod", PREFIX),
                    attribute(event(stageTimestamp="2026-12-02T00:00:01Z"), "dev", PREFIX)])
    days = aggregator.drain()
    assert {key: day.requests for key, day in days.items()} == {
        ("alice", "dev", date(2026, 12, 1), ""): 2, ("alice", "prod", date(2026, 12, 1), ""): 1,
        ("alice", "dev", date(2026, 12, 2), ""): 1}
    assert aggregator.drain() == {}


def test_the_aggregator_takes_back_a_drained_batch_folded_into_what_came_since():
    aggregator = Aggregator()
    aggregator.add([attribute(event(), "dev", PREFIX)])
    drained = aggregator.drain()
    aggregator.add([attribute(event(), "dev", PREFIX)])
    aggregator.restore(drained)
    assert [day.requests for day in aggregator.drain().values()] == [2]


def test_a_credential_is_credited_with_the_last_use_within_its_life_only():
    issued, revoked = datetime(2026, 12, 1, 9, tzinfo=UTC), datetime(2026, 12, 1, 12, tzinfo=UTC)
    use = datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert credential_last_used(use, issued, None) == use
    assert credential_last_used(use, issued, revoked) == use
    assert credential_last_used(use, datetime(2026, 12, 1, 11, tzinfo=UTC), None) is None
    assert credential_last_used(datetime(2026, 12, 1, 13, tzinfo=UTC), issued, revoked) is None
    assert credential_last_used(None, issued, None) is None


def test_a_token_is_credited_with_the_uses_naming_it_and_those_naming_none_within_its_life():
    issued, revoked = datetime(2026, 12, 1, 9, tzinfo=UTC), datetime(2026, 12, 1, 12, tzinfo=UTC)
    named, unnamed = datetime(2026, 12, 1, 10, tzinfo=UTC), datetime(2026, 12, 1, 11, tzinfo=UTC)
    assert token_last_used({"jti-a": named, "jti-b": unnamed}, "jti-a", issued, None) == named  # b's use is not a's
    assert token_last_used({"jti-a": named, "": unnamed}, "jti-a", issued, None) == unnamed
    assert token_last_used({"": unnamed}, None, issued, None) == unnamed  # Kubernetes before 1.29: as before
    assert token_last_used({"": datetime(2026, 12, 1, 13, tzinfo=UTC)}, "jti-a", issued, revoked) is None
    assert token_last_used({"jti-b": named}, None, issued, None) is None


def test_an_issued_tokens_jti_is_read_from_its_claims():
    def jwt(claims: dict) -> str:
        def part(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
        return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"

    issued = datetime(2026, 12, 1, tzinfo=UTC)
    kubernetes_1_29 = {"aud": ["https://kubernetes.default.svc"], "exp": 1, "jti": "5b0c-41", "sub": "x"}
    assert IssuedToken(jwt(kubernetes_1_29), "s", issued, issued).jti == "5b0c-41"
    assert IssuedToken(jwt({"exp": 1, "sub": "x"}), "s", issued, issued).jti == ""  # v1.20 tokens have none
    assert IssuedToken("not-a-jwt", "s", issued, issued).jti == ""
    assert IssuedToken(jwt({"jti": 7}), "s", issued, issued).jti == ""
