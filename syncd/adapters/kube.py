"""The Kubernetes adapter: the only module that talks to an API server.

Per person per cluster it keeps a ServiceAccount in syncd's namespace, RoleBindings (or ClusterRoleBindings where
allowed) for each scope, and one Opaque Secret per token, to which the token is bound through TokenRequest, so that
deleting that Secret revokes that token alone. Client exceptions become `ClusterUnavailable` (unreachable, 429,
5xx) or the `ClusterRejected` subclass saying what the API server refused (`cluster_error`).

It spares the API server: at most `qps` requests a second on average (`burst` at once), a 429 pauses every request to
that cluster for its `Retry-After`, and a 429 or 5xx answer is sent again a few times, backing off; a request that
timed out is never sent again.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar
from urllib.parse import quote, urlencode

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTResponse
from kubernetes.config.config_exception import ConfigException

from syncd.config import ClusterSettings
from syncd.core.leadership import LeaseRecord, after, decide, released
from syncd.core.model import (
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PERSON_ID_ANNOTATION,
    PERSON_LABEL,
    SCOPE_LABEL,
    UNOWNED,
    USERNAME_ANNOTATION,
    Endpoint,
    ObservedAccount,
    ObservedBinding,
    ObservedCluster,
    RoleKind,
    Scope,
    binding_name,
    person_key,
    service_account_name,
)
from syncd.core.review import RbacRule, Role
from syncd.errors import (
    ClusterRejected,
    ClusterUnavailable,
    ConfigError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SyncdError,
    Unauthorized,
)
from syncd.ports import IssuedToken, ServiceAccountRef

TOKEN_LABEL = "syncd.io/token"  # noqa: S105 (a label name)
RBAC_GROUP = "rbac.authorization.k8s.io"
SELECTOR_BATCH = 50  # people per label selector: 50 keys of up to 63 characters stay well within a URL
ATTEMPTS = 6  # a request answered 429 or 5xx is sent at most this many times in all
BACKOFF = 0.5  # seconds before sending again after a 5xx (or a 429 without Retry-After); doubles each time
LONGEST_WAIT = 60.0  # the longest wait one answer's Retry-After may impose
CREDENTIAL_CHECK = 1.0  # seconds between the client's checks that the kubeconfig's credential needs refreshing
JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
T = TypeVar("T")

log = structlog.get_logger("syncd.kube")


def _status_message(error: ApiException) -> str:
    try:
        return json.loads(error.body or "{}").get("message") or error.reason or ""
    except (ValueError, AttributeError):
        return error.reason or ""


REJECTIONS: dict[int, type[ClusterRejected]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: Invalid,
}


def retry_after(error: ApiException, now: datetime | None = None) -> float | None:
    """The answer's `Retry-After` in seconds (a number or an HTTP date), capped at LONGEST_WAIT; None if absent."""
    value = (error.headers or {}).get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - (now or datetime.now(UTC))).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), LONGEST_WAIT)


class Throttle:
    """One cluster's client-side rate limit, shared by the threads applying to it: a token bucket (`qps` a second,
    `burst` at once; qps 0 is no limit), and a pause every request waits out after a 429's Retry-After."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1 / qps if qps > 0 else 0.0
        self.burst = burst
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = 0.0  # when the bucket is next empty: the theoretical arrival time of the next request
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)

    def acquire(self) -> None:
        """Wait until a request may be sent."""
        with self._lock:
            now = self.clock()
            start = max(now, self._paused_until)
            send_at = start
            if self.interval:
                due = max(self._next, start)
                send_at = max(start, due - (self.burst - 1) * self.interval)
                self._next = due + self.interval
        if send_at > now:
            self.sleep(send_at - now)


def cluster_error(error: ApiException, message: str) -> SyncdError:
    """What an API server's answer means: `ClusterUnavailable` when it was not reached (status 0) or was busy or
    failing (429, 5xx), else the `ClusterRejected` subclass for its status."""
    status = error.status or 0
    if status in (0, 429) or status >= 500:
        return ClusterUnavailable(message)
    return REJECTIONS.get(status, ClusterRejected)(message)


def _timestamp(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def at_most_every(seconds: float, hook: Callable[[k8s.Configuration], None],
                  clock: Callable[[], float] = time.monotonic) -> Callable[[k8s.Configuration], None]:
    """`hook`, called at most once every `seconds` (the calls between do nothing)."""
    lock = threading.Lock()
    last = [-float("inf")]

    def call(configuration: k8s.Configuration) -> None:
        with lock:
            now = clock()
            if now - last[0] < seconds:
                return
            last[0] = now
        hook(configuration)

    return call


def credential_only(hook: Callable[[k8s.Configuration], None]) -> Callable[[k8s.Configuration], None]:
    """The kubeconfig loader's refresh hook, taking only the credential it refreshes. Run on the configuration, the
    loader's hook sets every setting again and puts itself back as the hook, replacing any wrapper around it (so
    `at_most_every` held for one call); here it runs on a scratch object and only its `api_key` is copied."""
    def refresh(configuration: k8s.Configuration) -> None:
        scratch = SimpleNamespace(api_key={})
        hook(scratch)  # type: ignore[arg-type]
        configuration.api_key.update(scratch.api_key)

    return refresh


class KubernetesCluster:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.namespace = settings.namespace
        self.instance_labels = {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: self.namespace}
        self.ours = ",".join(f"{key}={value}" for key, value in self.instance_labels.items())
        self.writes = 0
        self._writes_lock = threading.Lock()
        self.throttle = Throttle(settings.qps, settings.burst)
        self._in_flight = threading.BoundedSemaphore(settings.concurrency)  # requests sent and not yet answered
        configuration = k8s.Configuration()
        try:
            k8s_config.load_kube_config(config_file=str(settings.kubeconfig), context=settings.context,
                                        client_configuration=configuration)
        except (ConfigException, OSError, ValueError) as error:
            raise ConfigError(
                f"cluster {self.name}: cannot load kubeconfig {settings.kubeconfig}: {error}",
                hint="check clusters[].kubeconfig and clusters[].context",
            ) from None
        # The client runs this hook before every request: for a kubeconfig with a token it sets the whole
        # configuration again (its host setter scans the environment for proxies), CPU every apply worker competes
        # for. A credential that expires is refreshed five minutes early, so once a second is often enough.
        if configuration.refresh_api_key_hook is not None:
            configuration.refresh_api_key_hook = at_most_every(
                CREDENTIAL_CHECK, credential_only(configuration.refresh_api_key_hook))
        # Every call is bounded by the timeout, to connect and to each read: no retry may add a second wait.
        configuration.retries = False
        # One kept-alive connection per request in flight, and a few spare.
        configuration.connection_pool_maxsize = settings.concurrency + 4
        self.api = k8s.ApiClient(configuration)
        seconds = settings.timeout.total_seconds()
        self.timeout = (seconds, seconds)
        self._timeout = urllib3.Timeout(connect=seconds, read=seconds)
        self.core = k8s.CoreV1Api(self.api)
        self.rbac = k8s.RbacAuthorizationV1Api(self.api)
        self._endpoint: Endpoint | None = None

    def close(self) -> None:
        self.api.close()

    # Error translation

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except ApiException as error:
            message = f"cluster {self.name}: {doing}: {error.status} {_status_message(error)}"
            raise cluster_error(error, message) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ClusterUnavailable(
                f"cluster {self.name}: {doing}: {error.__class__.__name__}",
                hint=f"is {self.api.configuration.host} reachable?",
            ) from None

    def _send(self, doing: str, request: Callable[[], T], *, write: bool = False, idempotent: bool = True) -> T:
        """Send a request within the rate limit, at most `concurrency` in flight. A 429 pauses the cluster's
        requests for its Retry-After (or a backoff) and sends again; a 5xx waits a backoff and sends again, unless the
        request is not `idempotent` (a second create under a generated name would make a second object). Each attempt
        counts as a call; after ATTEMPTS the error stands."""
        attempt = 0
        while True:
            attempt += 1
            self.throttle.acquire()
            if write:
                with self._writes_lock:
                    self.writes += 1
            with self._errors(doing):
                try:
                    with self._in_flight:
                        return request()
                except ApiException as error:
                    status = error.status or 0
                    if attempt == ATTEMPTS or not (status == 429 or (status >= 500 and idempotent)):
                        raise
                    wait = retry_after(error)
            wait = BACKOFF * 2 ** (attempt - 1) if wait is None else wait
            log.warning("send again: the API server is busy or failing", cluster=self.name, doing=doing,
                        status=status, wait_s=wait, attempt=attempt)
            if status == 429:
                self.throttle.pause(wait)  # every request to this cluster waits it out
            else:
                time.sleep(wait)

    def _call(self, doing: str, call: Callable[..., T], *args, write: bool = False, idempotent: bool = True,
              **kwargs) -> T:
        return self._send(doing, lambda: call(*args, _request_timeout=self.timeout, **kwargs), write=write,
                          idempotent=idempotent)

    def _call_json(self, doing: str, method: str, path: str, body: dict | None = None, *, write: bool = False,
                   idempotent: bool = True, query: dict[str, str] | None = None, **path_params: str) -> dict:
        """`_request`, sent as `_send` sends (rate limit, in-flight cap, retries); `_call`'s twin for it."""
        return self._send(doing, lambda: self._request(method, path, body, query, **path_params), write=write,
                          idempotent=idempotent)

    def _request(self, method: str, path: str, body: dict | None = None, query: dict[str, str] | None = None,
                 **path_params: str) -> dict:
        """One request on the client's connection pool, with a plain dict body, and the JSON answer as a dict. The
        writes on the apply path and TokenReview go this way: the generated API methods validate every argument
        (pydantic) and walk request and answer models field by field, and even the client's lower layer walks the
        body and matches its content type with regular expressions, all CPU every apply worker competes for. Auth
        (the credential-refresh hook included), TLS, proxy and the pool itself are the client's, as for its
        generated methods; an answer that is not 2xx raises the client's `ApiException`, as they do."""
        url = self.api.configuration.host + path.format(**{name: quote(value, safe="")
                                                            for name, value in path_params.items()})
        if query:
            url += "?" + urlencode(query)
        headers = {**self.api.default_headers, **JSON_HEADERS}
        self.api.update_params_for_auth(headers, None, ["BearerToken"], path, method, body)
        try:
            response = self.api.rest_client.pool_manager.request(
                method, url, body=None if body is None else json.dumps(body), headers=headers,
                timeout=self._timeout, preload_content=False)
        except urllib3.exceptions.SSLError as error:  # as the client's lower layer reports it
            raise ApiException(status=0, reason=f"{type(error).__name__}\n{error}") from None
        try:
            if not 200 <= response.status <= 299:
                answer = RESTResponse(response)
                answer.read()
                raise ApiException.from_response(http_resp=answer, body=None, data=None)
            return json.loads(response.read())
        finally:
            response.release_conn()

    def _create_or_get(self, doing: str, create: Callable[[], T], read: Callable[[], T],
                       ours: Callable[[T], bool] | None = None) -> tuple[T, bool]:
        """Create; on 409 (it exists) read what is there, which must pass `ours` (a name squatted by someone else
        never counts as made). Returns the object and whether we created it."""
        try:
            return self._send(doing, create, write=True), True
        except Conflict:
            pass  # it exists: read it
        existing = self._send(doing, read)
        if ours is not None and not ours(existing):
            raise Conflict(
                f"cluster {self.name}: {doing}: the name is taken by an object that is not this syncd's "
                f"(its {MANAGED_BY_LABEL}, {INSTANCE_LABEL} or {PERSON_LABEL} labels, subjects or role differ)",
                hint="delete or rename that object; the next run creates syncd's own")
        return existing, False

    def _labelled_for(self, person_id: str, obj) -> bool:  # type: ignore[no-untyped-def]
        """Whether an object carries this syncd's labels for this person."""
        labels = obj.metadata.labels or {}
        return all(labels.get(key) == value for key, value in self.instance_labels.items()) \
            and labels.get(PERSON_LABEL) == person_key(person_id)

    # Reading

    def endpoint(self) -> Endpoint:
        """What delivered kubeconfigs point at; read once (the kubeconfig it comes from is loaded once)."""
        if self._endpoint is None:
            configuration = self.api.configuration
            ca_data = None
            if configuration.ssl_ca_cert:
                ca_data = base64.b64encode(Path(configuration.ssl_ca_cert).read_bytes()).decode()
            self._endpoint = Endpoint(self.settings.server or configuration.host, ca_data)
        return self._endpoint

    def observe(self, people: Collection[str] | None = None) -> ObservedCluster:
        """Everything in the cluster that carries our label, grouped by person. Given `people` (person keys), it
        reads just their objects when they are few, so a targeted run does not read the whole cluster."""
        accounts: dict[str, dict] = {}

        def account(obj: dict) -> dict:
            """The person the object is labelled for; objects under our labels naming nobody go to UNOWNED."""
            key = (obj["metadata"].get("labels") or {}).get(PERSON_LABEL) or UNOWNED
            return accounts.setdefault(key, {"key": key, "service_accounts": [], "bindings": [], "token_secrets": []})

        def listed(doing: str, path: str, selector: str) -> list[dict]:
            # Read as JSON: the client's models, validated field by field, cost more than the reading itself.
            return self._call_json(doing, "GET", path, query={"labelSelector": selector},
                                   namespace=self.namespace)["items"] or []

        for selector in self._selectors(people):
            for sa in listed("list ServiceAccounts", "/api/v1/namespaces/{namespace}/serviceaccounts", selector):
                account(sa)["service_accounts"].append(sa["metadata"]["name"])
            for secret in listed("list token Secrets", "/api/v1/namespaces/{namespace}/secrets",
                                 f"{selector},{TOKEN_LABEL}=true"):
                if secret["metadata"].get("deletionTimestamp") is None:
                    account(secret)["token_secrets"].append(secret["metadata"]["name"])
            bindings = [*listed("list RoleBindings", f"/apis/{RBAC_GROUP}/v1/rolebindings", selector),
                        *listed("list ClusterRoleBindings", f"/apis/{RBAC_GROUP}/v1/clusterrolebindings", selector)]
            for binding in bindings:
                found = account(binding)
                found["bindings"].append(self._observed_binding(found["key"], binding))
        return ObservedCluster(
            self.name,
            {
                key: ObservedAccount(key, bool(found["service_accounts"]), tuple(found["bindings"]),
                                     tuple(sorted(found["token_secrets"])), tuple(sorted(found["service_accounts"])))
                for key, found in accounts.items()
            },
            self.namespace,
        )

    def _selectors(self, people: Collection[str] | None) -> list[str]:
        """Label selectors for our objects: one for all, or one per batch of people (selectors go in the URL)."""
        if people is None or len(people) > SELECTOR_BATCH * 10:
            return [self.ours]  # past ten batches, one read of everything costs less
        keys = sorted(people)
        return [f"{self.ours},{PERSON_LABEL} in ({','.join(keys[n:n + SELECTOR_BATCH])})"
                for n in range(0, len(keys), SELECTOR_BATCH)]

    def _observed_binding(self, key: str, binding: dict) -> ObservedBinding:
        namespace = binding["metadata"].get("namespace")
        scope = Scope(namespace, RoleKind(binding["roleRef"]["kind"]), binding["roleRef"]["name"])
        subjects = [(s.get("kind"), s.get("name"), s.get("namespace")) for s in binding.get("subjects") or []]
        intact = subjects == [("ServiceAccount", service_account_name(key), self.namespace)]
        return ObservedBinding(binding["metadata"]["name"], namespace, scope, intact)

    def missing_roles(self, scopes: Iterable[Scope]) -> frozenset[Scope]:
        """The roles these scopes bind that do not exist, as scopes of their own (a ClusterRole's namespace is
        None). One list of ClusterRoles, and one list of Roles per namespace a Role is granted in."""
        scopes = list(scopes)
        missing: set[Scope] = set()
        cluster_roles = {s.role_name for s in scopes if s.role_kind is RoleKind.CLUSTER_ROLE}
        if cluster_roles:
            found = self._call("list ClusterRoles", self.rbac.list_cluster_role).items
            missing |= {Scope(None, RoleKind.CLUSTER_ROLE, name)
                        for name in cluster_roles - {role.metadata.name for role in found}}
        roles: dict[str, set[str]] = {}
        for scope in scopes:
            if scope.role_kind is RoleKind.ROLE and scope.namespace is not None:
                roles.setdefault(scope.namespace, set()).add(scope.role_name)
        for namespace, names in sorted(roles.items()):
            found = self._call(f"list Roles in {namespace}", self.rbac.list_namespaced_role, namespace).items
            missing |= {Scope(namespace, RoleKind.ROLE, name)
                        for name in names - {role.metadata.name for role in found}}
        return frozenset(missing)

    def role_rules(self, role: Role) -> tuple[RbacRule, ...] | None:
        """The rules of a ClusterRole (an aggregated one's as aggregated) or Role; None when it does not exist."""
        try:
            if role.kind is RoleKind.CLUSTER_ROLE:
                found = self._call(f"read ClusterRole {role.name}", self.rbac.read_cluster_role, role.name)
            else:
                found = self._call(f"read Role {role.namespace}/{role.name}", self.rbac.read_namespaced_role,
                                   role.name, role.namespace)
        except NotFound:
            return None
        return tuple(RbacRule(tuple(rule.verbs or ()), tuple(rule.api_groups or ()), tuple(rule.resources or ()),
                              tuple(rule.non_resource_urls or ())) for rule in found.rules or ())

    def token_authenticates(self, token: str) -> bool:
        """Ask the API server (TokenReview) whether this token still logs in."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        result = self._call_json("review a token", "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review)
        return bool((result.get("status") or {}).get("authenticated"))

    # Writing

    def _meta(self, person_id: str, username: str, labels: dict[str, str] | None = None, **fields) -> dict:
        """An object's metadata as the API spells it; `fields` are further metadata fields (name, generateName)."""
        return {
            **fields,
            "labels": {**self.instance_labels, PERSON_LABEL: person_key(person_id), **(labels or {})},
            "annotations": {USERNAME_ANNOTATION: username, PERSON_ID_ANNOTATION: person_id},
        }

    def ensure_namespace(self) -> None:
        try:
            self._call("read namespace", self.core.read_namespace, self.namespace)
        except NotFound:
            body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(
                name=self.namespace, labels=self.instance_labels))
            self._create_or_get(
                "create namespace",
                lambda: self.core.create_namespace(body, _request_timeout=self.timeout),
                lambda: self.core.read_namespace(self.namespace, _request_timeout=self.timeout),
            )

    def ensure_service_account(self, person_id: str, username: str) -> ServiceAccountRef:
        name = service_account_name(person_id)
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self._meta(person_id, username, name=name),
                "automountServiceAccountToken": False}
        account, created = self._create_or_get(
            f"create ServiceAccount {name}",
            lambda: self._request("POST", "/api/v1/namespaces/{namespace}/serviceaccounts", body,
                                  namespace=self.namespace),
            lambda: self.core.read_namespaced_service_account(name, self.namespace, _request_timeout=self.timeout),
            lambda existing: self._labelled_for(person_id, existing),
        )
        if created:
            return ServiceAccountRef(account["metadata"]["name"], account["metadata"]["uid"])
        if (account.metadata.annotations or {}).get(USERNAME_ANNOTATION) != username:
            patch = {"metadata": {"annotations": {USERNAME_ANNOTATION: username, PERSON_ID_ANNOTATION: person_id}}}
            account = self._call(f"annotate ServiceAccount {name}", self.core.patch_namespaced_service_account,
                                 name, self.namespace, patch, write=True)
        return ServiceAccountRef(account.metadata.name, account.metadata.uid)

    def issue_token(self, account: ServiceAccountRef, person_id: str, username: str, ttl: timedelta
                    ) -> IssuedToken:
        """A new Secret owned by the person's ServiceAccount (as `ensure_service_account` returned it), and a token
        bound to that Secret."""
        owner = {"apiVersion": "v1", "kind": "ServiceAccount", "name": account.name, "uid": account.uid}
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": self._meta(
            person_id, username, labels={TOKEN_LABEL: "true"}, generateName=f"syncd-{person_key(person_id)}-",
            ownerReferences=[owner])}
        secret = self._call_json("create token Secret", "POST", "/api/v1/namespaces/{namespace}/secrets", body,
                                 write=True, idempotent=False, namespace=self.namespace)["metadata"]
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "audiences": [],
            "expirationSeconds": int(ttl.total_seconds()),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret["name"], "uid": secret["uid"]},
        }}
        issued_at = datetime.now(UTC)
        try:
            status = self._call_json(f"request a token for {account.name}", "POST",
                                     "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request,
                                     write=True, namespace=self.namespace, name=account.name)["status"]
        except Exception:
            self.delete_token_secret(secret["name"])
            raise
        return IssuedToken(status["token"], secret["name"], issued_at, _timestamp(status["expirationTimestamp"]))

    def create_binding(self, person_id: str, username: str, scope: Scope) -> None:
        name = binding_name(person_id, scope, self.namespace)
        subject = ("ServiceAccount", service_account_name(person_id), self.namespace)
        role_ref = (str(scope.role_kind), scope.role_name)
        body = {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "metadata": self._meta(person_id, username, labels={SCOPE_LABEL: scope.key}, name=name),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_ref[0], "name": role_ref[1]},
            "subjects": [dict(zip(("kind", "name", "namespace"), subject, strict=True))],
        }

        def ours(existing) -> bool:  # type: ignore[no-untyped-def]
            subjects = [(s.kind, s.name, s.namespace) for s in existing.subjects or []]
            return (self._labelled_for(person_id, existing) and subjects == [subject]
                    and (existing.role_ref.kind, existing.role_ref.name) == role_ref)

        if scope.namespace is None:
            self._create_or_get(
                f"bind {scope}",
                lambda: self._request("POST", f"/apis/{RBAC_GROUP}/v1/clusterrolebindings",
                                      body | {"kind": "ClusterRoleBinding"}),
                lambda: self.rbac.read_cluster_role_binding(name, _request_timeout=self.timeout),
                ours,
            )
            return
        self._create_or_get(
            f"bind {scope}",
            lambda: self._request("POST", f"/apis/{RBAC_GROUP}/v1/namespaces/{{namespace}}/rolebindings",
                                  body | {"kind": "RoleBinding"}, namespace=scope.namespace),
            lambda: self.rbac.read_namespaced_role_binding(name, scope.namespace, _request_timeout=self.timeout),
            ours,
        )

    def _delete(self, doing: str, path: str, **path_params: str) -> None:
        """A plain DELETE (no DeleteOptions: the default propagation suits every object syncd deletes)."""
        with suppress(NotFound):  # already gone
            self._call_json(doing, "DELETE", path, write=True, **path_params)

    def delete_binding(self, binding: ObservedBinding) -> None:
        if binding.namespace is None:
            self._delete(f"delete ClusterRoleBinding {binding.name}",
                         f"/apis/{RBAC_GROUP}/v1/clusterrolebindings/{{name}}", name=binding.name)
        else:
            self._delete(f"delete RoleBinding {binding.namespace}/{binding.name}",
                         f"/apis/{RBAC_GROUP}/v1/namespaces/{{namespace}}/rolebindings/{{name}}",
                         namespace=binding.namespace, name=binding.name)

    def delete_token_secret(self, name: str) -> None:
        self._delete(f"delete token Secret {name}", "/api/v1/namespaces/{namespace}/secrets/{name}",
                     namespace=self.namespace, name=name)

    def delete_account(self, service_accounts: tuple[str, ...], token_secrets: tuple[str, ...]) -> None:
        """Token Secrets first (each kills its token), then the ServiceAccounts."""
        for name in token_secrets:
            self.delete_token_secret(name)
        for name in service_accounts:
            self._delete(f"delete ServiceAccount {name}", "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
                         namespace=self.namespace, name=name)


class KubernetesLease:
    """The leader lease as a coordination.k8s.io/v1 Lease, for replicas inside a cluster. Every write carries the
    Lease's resourceVersion: of two replicas stepping at once, one is refused (409) and follows. Expiry is
    renewTime + leaseDurationSeconds, read by each replica's own clock, as Kubernetes' own controllers do."""

    backend = "kubernetes"

    def __init__(self, settings: ClusterSettings, namespace: str, name: str) -> None:
        self.cluster = KubernetesCluster(settings)
        self.api = k8s.CoordinationV1Api(self.cluster.api)
        self.namespace, self.name = namespace, name

    def step(self, me: str, ttl: timedelta) -> LeaseRecord:
        lease = self._read()
        current = self._record(lease)
        now = datetime.now(UTC)
        record = after(current, decide(current, me, now), me, now, ttl)
        if record is None or record == current:
            return current or LeaseRecord("", None)
        try:
            self._write(lease, record, ttl)
        except Conflict:  # another replica wrote it first: follow it until the next step
            return self._record(self._read()) or LeaseRecord("", None)
        return record

    def release(self, me: str) -> None:
        lease = self._read()
        current = self._record(lease)
        if current is None or lease is None:
            return
        record = released(current, me, datetime.now(UTC))
        if record != current:
            with suppress(ClusterRejected, ClusterUnavailable):  # it expires on its own
                self._write(lease, record, timedelta(seconds=lease.spec.lease_duration_seconds or 0))

    def close(self) -> None:
        self.cluster.close()

    def _read(self) -> k8s.V1Lease | None:
        try:
            return self.cluster._call("read the leader Lease", self.api.read_namespaced_lease, self.name,
                                      self.namespace)
        except NotFound:
            return None

    @staticmethod
    def _record(lease: k8s.V1Lease | None) -> LeaseRecord | None:
        if lease is None or lease.spec is None:
            return None
        spec = lease.spec
        expires = (spec.renew_time + timedelta(seconds=spec.lease_duration_seconds or 0)
                   if spec.renew_time is not None else None)
        return LeaseRecord(spec.holder_identity or "", expires, spec.lease_transitions or 0)

    def _write(self, lease: k8s.V1Lease | None, record: LeaseRecord, ttl: timedelta) -> None:
        assert record.expires_at is not None
        spec = k8s.V1LeaseSpec(holder_identity=record.holder, lease_duration_seconds=int(ttl.total_seconds()),
                               renew_time=record.expires_at - ttl, lease_transitions=record.transitions)
        if lease is None:
            spec.acquire_time = spec.renew_time
            body = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace), spec=spec)
            self.cluster._call("create the leader Lease", self.api.create_namespaced_lease, self.namespace, body)
            return
        changed_hands = (lease.spec.holder_identity or "") != record.holder
        spec.acquire_time = spec.renew_time if changed_hands else lease.spec.acquire_time
        lease.spec = spec  # the metadata keeps its resourceVersion: a write over someone else's is refused
        self.cluster._call("renew the leader Lease", self.api.replace_namespaced_lease, self.name, self.namespace,
                           lease)
