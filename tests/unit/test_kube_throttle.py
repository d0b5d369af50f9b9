"""The Kubernetes adapter's manners: its client-side rate limit (QPS, burst, a pause after a 429) and how it reads
Retry-After."""

from datetime import UTC, datetime
from email.utils import format_datetime

import yaml
from kubernetes.client import configuration as client_configuration
from kubernetes.client.exceptions import ApiException

from syncd.adapters.kube import LONGEST_WAIT, KubernetesCluster, Throttle, at_most_every, retry_after
from syncd.config import ClusterSettings


class Clock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def sends(throttle: Throttle, clock: Clock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        throttle.acquire()
        times.append(round(clock.now, 6))
    return times


def test_a_burst_goes_at_once_then_requests_are_spaced_by_qps():
    clock = Clock()
    throttle = Throttle(qps=10, burst=3, clock=lambda: clock.now, sleep=clock.sleep)
    assert sends(throttle, clock, 6) == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3]
    clock.now += 10  # a quiet spell fills the bucket again
    assert sends(throttle, clock, 4) == [10.3, 10.3, 10.3, 10.4]


def test_a_pause_holds_every_request_until_it_ends():
    clock = Clock()
    throttle = Throttle(qps=0, burst=1, clock=lambda: clock.now, sleep=clock.sleep)  # no rate limit
    assert sends(throttle, clock, 3) == [0.0, 0.0, 0.0]
    throttle.pause(2.5)
    assert sends(throttle, clock, 2) == [2.5, 2.5]


def answer(retry: str | None) -> ApiException:
    error = ApiException(status=429, reason="Too Many Requests")
    error.headers = {"Retry-After": retry} if retry is not None else {}
    return error


def test_retry_after_in_seconds_or_as_a_date_capped():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after(answer("3")) == 3.0
    assert retry_after(answer(format_datetime(datetime(2024, 5, 1, 12, 0, 7, tzinfo=UTC), usegmt=True)), now) == 7.0
    assert retry_after(answer("86400")) == LONGEST_WAIT
    assert retry_after(answer("-4")) == 0.0
    assert retry_after(answer("soon")) is None
    assert retry_after(answer(None)) is None


def test_the_credential_refresh_hook_runs_at_most_once_a_second():
    clock, calls = Clock(), []
    hook = at_most_every(1.0, calls.append, clock=lambda: clock.now)
    for _ in range(5):
        hook("configuration")  # type: ignore[arg-type]
    clock.sleep(0.5)
    hook("configuration")  # type: ignore[arg-type]
    clock.sleep(0.5)
    hook("configuration")  # type: ignore[arg-type]
    assert calls == ["configuration", "configuration"]


def test_the_credential_is_checked_at_most_once_a_second_however_many_requests(tmp_path, monkeypatch):
    """The kubeconfig loader's hook put itself back as the hook each time it ran: the once-a-second wrapper held for
    one request, then every request set the whole configuration again (scanning the environment for proxies)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "a-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    cluster = KubernetesCluster(ClusterSettings(name="c", kubeconfig=kubeconfig))
    configuration = cluster.api.configuration
    scans = []
    monkeypatch.setattr(client_configuration, "getproxies", lambda: scans.append(1) or {})
    for _ in range(5):
        assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer a-token"
    assert len(scans) <= 1
    cluster.close()
