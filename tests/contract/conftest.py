"""Contract suites: each port's behaviour, written once as a base class and run against the in-memory fake
(fast) and the real adapter on the real system, so a fake cannot drift from the real thing (the pattern of
scim2-server's `ScimStorageContract`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], timeout: float = 90, interval: float = 0.5) -> bool:
    """Whether `condition` holds within `timeout` seconds (an API server caches authentication for a few seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
