"""scim2-tester's full check set against our endpoint, over real HTTP: anything but SUCCESS fails."""

from __future__ import annotations

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.scim.conftest import TOKEN, Endpoint

pytestmark = pytest.mark.kube


def test_scim2_tester_full_check_set_succeeds(scim: Endpoint):
    with httpx2.Client(base_url=scim.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        client = SyncSCIMClient(http)
        client.discover()
        results = check_server(client)
    scim.settle()
    assert len(results) > 50
    failures = [f"{r.status.name} {r.title}: {r.reason}" for r in results if r.status is not Status.SUCCESS]
    assert not failures, "\n".join(failures)
