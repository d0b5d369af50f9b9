"""The Kubernetes adapter's translation of API server answers into our errors: each says what happened."""

import pytest
from kubernetes.client.exceptions import ApiException

from syncd.adapters.kube import cluster_error
from syncd.errors import (
    ClusterRejected,
    ClusterUnavailable,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TemporaryError,
    Unauthorized,
)


@pytest.mark.parametrize(("status", "expected"), [
    (401, Unauthorized), (403, Forbidden), (404, NotFound), (409, Conflict), (422, Invalid), (400, ClusterRejected),
    (410, ClusterRejected), (0, ClusterUnavailable), (429, ClusterUnavailable), (500, ClusterUnavailable),
    (503, ClusterUnavailable), (504, ClusterUnavailable),
])
def test_each_status_maps_to_the_error_saying_what_happened(status: int, expected: type):
    error = cluster_error(ApiException(status=status, reason="why"), "cluster dev: do something")
    assert type(error) is expected
    assert str(error) == "cluster dev: do something"


def test_refusals_are_permanent_and_unavailability_is_retryable():
    for status in (401, 403, 404, 409, 422):
        error = cluster_error(ApiException(status=status), "m")
        assert isinstance(error, ClusterRejected) and not error.retryable and error.exit_code == 77
    unavailable = cluster_error(ApiException(status=503), "m")
    assert isinstance(unavailable, TemporaryError) and unavailable.retryable and unavailable.exit_code == 69
