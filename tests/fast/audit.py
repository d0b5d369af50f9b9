"""What the audit webhook tests share: an EventList body, and a POST to the receiver's ASGI app."""

from __future__ import annotations

import asyncio
import json

import httpx


def event_list(*events: dict) -> bytes:
    return json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": list(events)}).encode()


def post_audit(app: object, body: bytes, token: str | None) -> int:
    """POST `body` to the app's /audit with `token` as the bearer (none when None); the status code."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def send() -> int:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://syncd.test") as client:
            return (await client.post("/audit", content=body, headers=headers)).status_code

    return asyncio.run(send())
