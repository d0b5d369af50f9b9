"""The daemon's HTTP apps, plain ASGI: /healthz, /readyz and /metrics; and the SCIM endpoint's app, which forwards
to the current SCIM app (replaced on reload) and counts its responses by status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from prometheus_client import make_asgi_app

from syncd.app.daemon.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Readiness(Protocol):
    def readiness(self) -> tuple[bool, dict]:
        """Whether the daemon is ready, and why (blocking: may ask the ledger)."""
        ...


async def send_json(send: Send, status: int, body: dict) -> None:
    data = json.dumps(body, sort_keys=True).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def counting_statuses(current: Callable[[], ASGIApp], metrics: Metrics) -> ASGIApp:
    """Serves each HTTP request with the app `current()` returns then, counting its responses in
    `syncd_scim_requests_total` by status."""

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.scim_requests.labels(str(message["status"])).inc()
            await send(message)

        await current()(scope, receive, send_counted)

    return counted


class HttpApp:
    def __init__(self, daemon: Readiness, metrics: Metrics) -> None:
        self.daemon = daemon
        self.metrics_app = make_asgi_app(registry=metrics.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            await send_json(send, 200, {"status": "alive"})
        elif path == "/readyz":
            ready, detail = await asyncio.to_thread(self.daemon.readiness)
            await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "not ready"} | detail)
        elif path == "/metrics":
            await self.metrics_app(scope, receive, send)
        else:
            await send_json(send, 404, {"status": "not found"})
