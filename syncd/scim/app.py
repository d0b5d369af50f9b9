"""The SCIM 2.0 endpoint identity providers push to: scim2-server's protocol core over our ledger storage,
one bearer token (and one store) per tenant, served at /scim/v2."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import random
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import structlog
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Error,
    External,
    PatchOp,
    PayloadTooLargeException,
    PreconditionFailedException,
    Reference,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimProvider,
    UnauthorizedException,
)
from scim2_server.applications.asgi import ASGIApplication, Receive, Scope, Send
from scim2_server.conditions import Conditions
from scim2_server.handler import AsyncScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService
from scim2_server.utils import load_default_resource_types, load_default_schemas, load_default_service_provider_config

from syncd.config import ScimSettings, Settings, read_secret
from syncd.core.policy import Policy
from syncd.errors import ConfigError, SyncdError
from syncd.scim import quirks
from syncd.scim.reconciler import Reconciler, Reconciles
from syncd.scim.storage import LedgerStorage, Relevance
from syncd.scim.store import PushedResources

log = structlog.get_logger("syncd.scim")

PREFIX = "/scim"
BEARER = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken, name="Bearer token", primary=True,
    description="One static bearer token per identity provider tenant",
    spec_uri=Reference[External]("https://datatracker.ietf.org/doc/html/rfc6750"),
)


class Engine(Reconciles, Protocol):
    """What the endpoint needs of the engine (`syncd.runtime.engine.Engine` is one): targeted runs, and the policy
    that tells which changes can alter access."""

    policy: Policy


def scim_provider() -> ScimProvider:
    """RFC 7643 Users (with the enterprise extension) and Groups; no bulk, and no passwords kept; what Entra ID
    expects of filtered PATCH paths (`quirks.POLICY`)."""
    config = load_default_service_provider_config()
    config.bulk = Bulk(supported=False, max_operations=0, max_payload_size=0)
    config.change_password = ChangePassword(supported=False)
    config.authentication_schemes = [BEARER]
    return ScimProvider.from_discovery(load_default_schemas().values(), load_default_resource_types().values(),
                                       config=config, policy=quirks.POLICY)


class SyncdScimService(ScimService):
    def __init__(self, provider: ScimProvider, max_body_bytes: int) -> None:
        super().__init__(provider)
        self.max_body_bytes = max_body_bytes

    def max_body_size(self, request: ScimRequest) -> int | None:
        limit = super().max_body_size(request)
        return self.max_body_bytes if limit is None else min(limit, self.max_body_bytes)

    def patch_response(self, base_url: str, resource: Any, response_parameters: ResponseParameters[Any]
                       ) -> ScimResponse:
        # Okta and Entra expect the patched resource back, not 204.
        from scim2_models import Context

        return self.resource_response(self.publish(base_url, resource), Context.RESOURCE_REPLACEMENT_RESPONSE,
                                      response_parameters)

    def error_of(self, exception: Exception) -> Error:  # type: ignore[override]
        if isinstance(exception, SyncdError):
            return Error(status=exception.http_status, detail=exception.message)
        return super().error_of(exception)


# How often a write without If-Match is applied again after another syncd process wrote the resource first, after a
# random pause of up to RETRY_PAUSE seconds times the attempt, so that two busy replicas stop colliding.
WRITE_ATTEMPTS = 10
RETRY_PAUSE = 0.01


class RetryingHandler(AsyncScimHandler):
    """A PATCH, PUT or DELETE without If-Match that lost the race to another process (the storage refuses a write
    over a version it did not read) is applied again to the current version, as one server would have applied it
    after the other write. With If-Match, the client asked for that version: 412."""

    @staticmethod
    async def _retry(conditions: Conditions, attempt: int) -> bool:
        unconditional = conditions.if_match is None and conditions.if_none_match is None
        if unconditional and attempt < WRITE_ATTEMPTS:
            log.info("apply a SCIM write again on the version another process wrote", attempt=attempt)
            await asyncio.sleep(random.uniform(0, RETRY_PAUSE * attempt))  # noqa: S311  (jitter, not a secret)
            return True
        return False

    async def patch_resource(self, resource_type: ResourceType, resource_id: str, patch_op: PatchOp[Any],
                             conditions: Conditions) -> Resource[Any]:
        for attempt in itertools.count(1):
            try:
                return await super().patch_resource(resource_type, resource_id, patch_op, conditions)
            except PreconditionFailedException:
                if not await self._retry(conditions, attempt):
                    raise

    async def replace_resource(self, resource_type: ResourceType, current: Resource[Any], replacement: Resource[Any],
                               conditions: Conditions) -> Resource[Any]:
        for attempt in itertools.count(1):
            try:
                return await super().replace_resource(resource_type, current, replacement, conditions)
            except PreconditionFailedException:
                if not await self._retry(conditions, attempt):
                    raise
                current = await self.storage.get(resource_type, str(current.id))

    async def delete_resource(self, resource_type: ResourceType, resource_id: str, conditions: Conditions) -> None:
        for attempt in itertools.count(1):
            try:
                return await super().delete_resource(resource_type, resource_id, conditions)
            except PreconditionFailedException:
                if not await self._retry(conditions, attempt):
                    raise


def serving(storage: LedgerStorage, provider: ScimProvider, service: ScimService) -> ASGIApplication:
    """scim2-server's ASGI application over this storage, retrying writes that lost a race (`RetryingHandler`)."""
    app = ASGIApplication(storage, provider, service)
    app.handler = RetryingHandler(service, storage)
    return app


@dataclass(frozen=True)
class Tenant:
    name: str
    token: bytes
    app: ASGIApplication


def read_token(path: Path, tenant: str) -> bytes:
    token = read_secret(path, f"scim tenant {tenant}: token_file").strip()
    if len(token) < 16:
        raise ConfigError(f"scim tenant {tenant}: the token in {path} is shorter than 16 characters")
    return token.encode()


class ScimApp:
    """ASGI app: /scim/v2/... The bearer token picks the tenant; discovery needs none."""

    def __init__(self, engine: Engine, settings: ScimSettings, store: PushedResources, reconciler: Reconciler
                 ) -> None:
        self.settings = settings
        self.reconciler = reconciler
        provider = scim_provider()
        self.service = SyncdScimService(provider, settings.max_body_bytes)
        self.known_schemas = {s for rt in provider.resource_types
                              for s in [rt.schema_, *(e.schema_ for e in rt.schema_extensions or [])] if s}
        relevance = Relevance(engine.policy)
        self.tenants = [
            Tenant(t.name, read_token(t.token_file, t.name), serving(
                LedgerStorage(store, t.name, t.source, provider, relevance, reconciler.submit), provider, self.service))
            for t in settings.tenants
        ]

    def _tenant(self, request: ScimRequest) -> Tenant:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        presented = token.strip().encode()
        # Compare with every tenant's token, in constant time, whatever matches.
        matches = [t for t in self.tenants if hmac.compare_digest(presented, t.token)]
        if scheme.lower() != "bearer" or not matches:
            raise UnauthorizedException(detail="a valid bearer token is required")
        return matches[0]

    async def serve(self, request: ScimRequest) -> ScimResponse:
        first = self.tenants[0].app
        try:
            if len(request.body) > self.settings.max_body_bytes:
                raise PayloadTooLargeException(detail=f"the body exceeds {self.settings.max_body_bytes} bytes")
            tenant = self._tenant(request) if first.needs_auth(request) and not self._discovery(request) else None
            app = tenant.app if tenant else first
            if request.body:
                request.body = quirks.normalise(request.body, request.method.upper(), self.known_schemas)
            response = await app.dispatch_request(request)
        except Exception as exception:  # every error becomes a SCIM error body
            response = first.handle_exception(request, exception)
        log.debug("answer a SCIM request", method=request.method, path=request.path, status=int(response.status))
        return first.finalize_response(request, response)

    @staticmethod
    def _discovery(request: ScimRequest) -> bool:
        path = request.path.strip("/").split("/")[0]
        return request.method.upper() == "GET" and path in ("ServiceProviderConfig", "ResourceTypes", "Schemas")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await ASGIApplication.serve_lifespan(receive, send)
            return
        root = scope.get("root_path", "")
        path = scope["path"].removeprefix(root) if root else scope["path"]
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            error = Error(status=404, detail="not found; SCIM lives under /scim/v2")
            await ASGIApplication.send_response(ScimResponse(HTTPStatus.NOT_FOUND, error.model_dump()), send)
            return
        scope = {**scope, "root_path": root + PREFIX, "path": root + path}
        first = self.tenants[0].app
        request = await first.read_request(scope, receive)
        await first.send_response(await self.serve(request), send)


def create_app(engine: Engine, settings: Settings, store: PushedResources, reconciler: Reconciler | None = None
               ) -> ScimApp:
    """The SCIM endpoint as an ASGI app serving /scim/v2/..., keeping what is pushed in `store`. Mount it at the
    root, or forward every path under /scim to it (a mount that sets root_path works too). Changes are reconciled
    through `engine` by `reconciler`, a new one by default; close it (`app.reconciler.close()`) when done."""
    if settings.scim is None:
        raise ConfigError("no `scim:` section in the configuration", hint="see configs/syncd.example.yaml")
    return ScimApp(engine, settings.scim, store, reconciler or Reconciler(
        engine, batch_interval=settings.scim.batch_interval.total_seconds()))
