"""The daemon's HTTP endpoint, plain ASGI: /healthz, /readyz, /metrics, and the SCIM app under /scim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from prometheus_client import make_asgi_app

from syncd.daemon.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCIM_PREFIX = "/scim"


class Readiness(Protocol):
    def readiness(self) -> tuple[bool, dict]:
        """Whether the daemon is ready, and why (blocking: may ask the ledger)."""
        ...

    @property
    def scim_app(self) -> ASGIApp | None: ...


async def send_json(send: Send, status: int, body: dict) -> None:
    data = json.dumps(body, sort_keys=True).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def counting_statuses(app: ASGIApp, metrics: Metrics) -> ASGIApp:
    """`app`, counting its responses in `syncd_scim_requests_total` by status."""

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.scim_requests.labels(str(message["status"])).inc()
            await send(message)

        await app(scope, receive, send_counted)

    return counted


class HttpApp:
    def __init__(self, daemon: Readiness, metrics: Metrics) -> None:
        self.daemon = daemon
        self.metrics_app = make_asgi_app(registry=metrics.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        scim = self.daemon.scim_app
        if path == "/healthz":
            await send_json(send, 200, {"status": "alive"})
        elif path == "/readyz":
            ready, detail = await asyncio.to_thread(self.daemon.readiness)
            await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "not ready"} | detail)
        elif path == "/metrics":
            await self.metrics_app(scope, receive, send)
        elif scim is not None and (path == SCIM_PREFIX or path.startswith(SCIM_PREFIX + "/")):
            await scim(scope, receive, send)
        else:
            await send_json(send, 404, {"status": "not found"})
