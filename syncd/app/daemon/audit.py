"""The audit webhook receiver, plain ASGI: kube-apiserver POSTs `audit.k8s.io/v1` EventLists with a bearer token
and/or a TLS client certificate that name the cluster it is; the events of syncd's ServiceAccounts are queued for
aggregation (`UsageRecorder`) and the API server is answered at once. It never waits on the ledger: a full queue drops
the batch and counts it. And the followers of the audit log files (`syncd.runtime.audit_files`) the `audit:` section
names."""

from __future__ import annotations

import hmac
import json
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from syncd.app.daemon.http import Receive, Scope, Send, send_json
from syncd.app.daemon.metrics import Metrics
from syncd.config import AuditSettings, Settings, read_secret
from syncd.core.anomaly import AnomalyKind
from syncd.core.usage import Use, attribute, user_prefix
from syncd.errors import ConfigError
from syncd.runtime.alert import AlertCommand
from syncd.runtime.audit_files import AuditFileFollower
from syncd.runtime.usage import UsageLedger, UsageRecorder

PATH = "/audit"  # any path is served; this is the one the example webhook config names


def file_followers(settings: Settings, recorder: UsageRecorder, cursors: Mapping[str, bytes],
                   metrics: Metrics) -> list[AuditFileFollower]:
    """A follower per audit log file of the `audit:` section (not started), starting where `cursors` (the ledger's
    `watch_cursors(AUDIT_FILES)`) say, counting in `syncd_audit_events_total{source="file"}`."""
    assert settings.audit is not None
    namespaces = {c.name: c.namespace for c in settings.clusters}

    def count(result: str, times: int) -> None:
        metrics.audit_events.labels("file", result).inc(times)

    return [AuditFileFollower(f.cluster, f.path, user_prefix(namespaces[f.cluster]), recorder, cursors,
                              poll_interval=settings.audit.poll_interval.total_seconds(), count=count)
            for f in settings.audit.files]


Name = tuple  # a certificate's subject or issuer as `ssl.SSLSocket.getpeercert()` gives it


@dataclass(frozen=True)
class Sender:
    """An API server that sends to the webhook, and what it must present: its token, a client certificate issued by
    one of `issuers` (with the common name `cn`), or both."""

    cluster: str
    token: bytes | None = None
    issuers: frozenset[Name] | None = None
    cn: str | None = None


def ca_subjects(path: Path, what: str) -> frozenset[Name]:
    """The subjects of the CA certificates in a PEM file (a `ConfigError` when it holds none or cannot be read)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"{what}: cannot read the CA certificates in {path}: {error}") from None
    subjects = frozenset(cert["subject"] for cert in context.get_ca_certs())
    if not subjects:
        raise ConfigError(f"{what}: {path} holds no CA certificate")
    return subjects


def senders(settings: Settings) -> list[Sender]:
    """Each sender with its token and client CAs, read now: a missing or empty file is a ConfigError."""
    audit = settings.audit
    assert audit is not None
    return [Sender(s.cluster, s.token_file and read_secret(s.token_file, f"audit sender {s.cluster}").encode(),
                   s.client_ca and ca_subjects(s.client_ca, f"audit sender {s.cluster}"), s.client_cn)
            for s in audit.senders]


def usage_recorder(settings: Settings, ledger: Callable[[], UsageLedger], metrics: Metrics) -> UsageRecorder:
    """The recorder of the use the receiver accepts, counting anomalies and alert_command's runs in `metrics`."""
    audit, usage = settings.audit, settings.usage
    assert audit is not None
    anomalies = {str(kind): metrics.anomalies.labels(str(kind)) for kind in AnomalyKind}
    alert = None
    if usage.alert_command is not None:
        alerts = metrics.anomaly_alerts
        alert = AlertCommand(usage.alert_command, timeout=usage.alert_timeout.total_seconds(),
                             queue_size=usage.alert_queue, on_result=lambda result: alerts.labels(result).inc())
    return UsageRecorder(ledger, flush_interval=audit.flush_interval.total_seconds(),
                         queue_batches=audit.queue_batches, usage=usage,
                         on_anomaly=lambda anomaly: anomalies[anomaly["kind"]].inc(), alert=alert)


class AuditApp:
    def __init__(self, audit: AuditSettings, senders: Sequence[Sender], prefixes: Mapping[str, str],
                 recorder: UsageRecorder, metrics: Metrics) -> None:
        """`prefixes`: cluster -> the username prefix of syncd's ServiceAccounts there (`user_prefix` of its
        namespace)."""
        self.max_body = audit.max_body_bytes
        self.senders = list(senders)
        self.prefixes = dict(prefixes)
        self.recorder = recorder
        self.events = {result: metrics.audit_events.labels("webhook", result)
                       for result in ("received", "accepted", "ignored", "dropped", "malformed")}

    @classmethod
    def from_settings(cls, settings: Settings, recorder: UsageRecorder, metrics: Metrics) -> AuditApp:
        assert settings.audit is not None
        return cls(settings.audit, senders(settings),
                   {c.name: user_prefix(c.namespace) for c in settings.clusters}, recorder, metrics)

    def sender(self, scope: Scope) -> str | None | bool:
        """The sending cluster: the one sender whose every credential the request presents; None when it presents
        neither a bearer token nor a client certificate, False when what it presents is no single sender's. Every
        sender's token is compared, each in constant time, so the time taken tells nothing of which came closest."""
        authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        given = (authorization[len(b"Bearer "):].strip()
                 if authorization is not None and authorization.startswith(b"Bearer ") else None)
        certificate = scope.get("extensions", {}).get("tls", {})
        issuer, subject = certificate.get("client_cert_issuer"), certificate.get("client_cert_subject")
        if given is None and issuer is None:
            return None
        common_names = {value for part in subject or () for key, value in part if key == "commonName"}
        found = set()
        for sender in self.senders:
            token_ok = sender.token is None or (given is not None and hmac.compare_digest(given, sender.token))
            certificate_ok = sender.issuers is None or (
                issuer in sender.issuers and (sender.cn is None or sender.cn in common_names))
            if token_ok and certificate_ok:
                found.add(sender.cluster)
        return found.pop() if len(found) == 1 else False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await send_json(send, 405, {"status": "send audit events with POST"})
            return
        cluster = self.sender(scope)
        if cluster is None:
            await send_json(send, 401, {"status": "a bearer token or a client certificate is required"})
            return
        if cluster is False:
            await send_json(send, 403, {"status": "these credentials are no audit sender's"})
            return
        body = await self._body(scope, receive)
        if body is None:
            self.events["malformed"].inc()
            await send_json(send, 413, {"status": f"bodies are at most {self.max_body} bytes"})
            return
        items = _event_list(body)
        if items is None:
            self.events["malformed"].inc()
            await send_json(send, 400, {"status": "expected an audit.k8s.io/v1 EventList"})
            return
        assert isinstance(cluster, str)
        prefix = self.prefixes[cluster]
        uses = [use for use in (attribute(item, cluster, prefix) if isinstance(item, dict) else None
                                for item in items) if use is not None]
        self._count(len(items), uses)
        await send_json(send, 200, {"status": "ok"})

    def _count(self, received: int, uses: list[Use]) -> None:
        self.events["received"].inc(received)
        self.events["ignored"].inc(received - len(uses))
        if not uses:
            return
        if self.recorder.offer(uses):
            self.events["accepted"].inc(len(uses))
        else:
            self.events["dropped"].inc(len(uses))

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request body, or None when it is larger than allowed (by its Content-Length or as it arrives)."""
        length = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _event_list(body: bytes) -> list | None:
    """The events of an EventList body, or None when it is none."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("kind") != "EventList":
        return None
    items = document.get("items")
    return items if isinstance(items, list) else [] if items is None else None

