"""The audit webhook's TLS client certificates over real TLS on loopback (the daemon's own listener and the real app,
the real ledger on SQLite; certificates made by openssl): a sender is known by the CA that issued its certificate
and its common name, with or without a token; a certificate no sender's CA issued fails the handshake."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from syncd.adapters.ledger import Database, Journal, ReadModel
from syncd.app.daemon.audit import AuditApp, Sender, ca_subjects
from syncd.app.daemon.metrics import Metrics
from syncd.app.daemon.service import Listener
from syncd.config import AuditSettings, UsageSettings
from syncd.core.usage import user_prefix
from syncd.runtime.usage import UsageLedger, UsageRecorder
from tests.conftest import free_port, self_signed_certificate

PROD_TOKEN = "prod-sender-token"
NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
BODY = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{
    "stage": "ResponseComplete", "verb": "list", "user": {"username": "system:serviceaccount:syncd:syncd-alice"},
    "responseStatus": {"code": 200}, "stageTimestamp": NOW}]}).encode()


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def authority(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert))
    return cert, key


def client_certificate(directory: Path, name: str, common_name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    cert, key, request = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.csr"
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
            f"/CN={common_name}", "-keyout", str(key), "-out", str(request))
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
            "-days", "1", "-out", str(cert))
    return cert, key


@dataclass
class Webhook:
    port: int
    server_cert: Path
    database: Database
    recorder: UsageRecorder

    def post(self, certificate: tuple[Path, Path] | None, token: str | None = None) -> int:
        context = ssl.create_default_context(cafile=str(self.server_cert))
        if certificate is not None:
            context.load_cert_chain(*certificate)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"https://127.0.0.1:{self.port}/audit", content=BODY, headers=headers, verify=context,
                          timeout=30).status_code

    def written(self) -> dict[str, int]:
        """Requests per cluster in the ledger, once the recorder wrote everything."""
        self.recorder.close()
        return {cluster: day.requests for (_, cluster, _, _), day in ReadModel(self.database).usage("alice")}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("pki")
    made = {name: authority(directory, name) for name in ("dev-ca", "prod-ca", "rogue-ca")}
    made["server"] = self_signed_certificate(directory, "server")
    made["dev"] = client_certificate(directory, "dev", "kube-apiserver-dev", made["dev-ca"])
    made["prod"] = client_certificate(directory, "prod", "kube-apiserver-prod", made["prod-ca"])
    made["prod-other-cn"] = client_certificate(directory, "prod-other-cn", "someone", made["prod-ca"])
    made["rogue"] = client_certificate(directory, "rogue", "kube-apiserver-dev", made["rogue-ca"])
    return made


@pytest.fixture
def webhook(tmp_path: Path, certificates: dict[str, tuple[Path, Path]]) -> Iterator[Webhook]:
    with Database(f"sqlite:///{tmp_path / 'ledger.db'}") as database:
        recorder = UsageRecorder(lambda: UsageLedger(Journal(database), ReadModel(database)), flush_interval=3600,
                                      queue_batches=10, usage=UsageSettings())
        dev_ca, prod_ca = certificates["dev-ca"][0], certificates["prod-ca"][0]
        senders = [Sender("dev", issuers=ca_subjects(dev_ca, "dev")),  # a certificate alone
                   Sender("prod", PROD_TOKEN.encode(), ca_subjects(prod_ca, "prod"), "kube-apiserver-prod")]  # both
        app = AuditApp(AuditSettings(files=[{"cluster": "x", "path": "unused"}]), senders,
                       {"dev": user_prefix("syncd"), "prod": user_prefix("syncd")}, recorder, Metrics())
        port = free_port()
        server_cert, server_key = certificates["server"]
        listener = Listener("audit", app, "127.0.0.1", port, server_cert, server_key, [dev_ca, prod_ca])
        listener.start()
        try:
            yield Webhook(port, server_cert, database, recorder)
        finally:
            listener.stop()
            recorder.close()


def test_a_sender_is_known_by_the_ca_and_common_name_of_its_certificate(webhook: Webhook, certificates: dict):
    assert webhook.post(certificates["dev"]) == 200
    assert webhook.post(certificates["prod"], PROD_TOKEN) == 200
    assert webhook.post(certificates["prod"], PROD_TOKEN) == 200
    assert webhook.written() == {"dev": 1, "prod": 2}


def test_what_is_short_of_a_senders_credentials_is_refused(webhook: Webhook, certificates: dict):
    assert webhook.post(None) == 401  # neither a token nor a certificate
    assert webhook.post(certificates["prod"]) == 403  # prod needs its token too
    assert webhook.post(None, PROD_TOKEN) == 403  # ... and its certificate
    assert webhook.post(certificates["prod-other-cn"], PROD_TOKEN) == 403  # the right CA, another name
    assert webhook.post(certificates["dev"], "not-a-token") == 200  # dev is known by its certificate alone
    assert webhook.written() == {"dev": 1}


def test_a_certificate_no_senders_ca_issued_fails_the_handshake(webhook: Webhook, certificates: dict):
    with pytest.raises(httpx.TransportError):
        webhook.post(certificates["rogue"])
    assert webhook.post(certificates["dev"]) == 200  # the listener still serves
    assert webhook.written() == {"dev": 1}
