"""An API server that answers 429 for a while: syncd waits out each Retry-After, sends again and finishes the run.
A loopback HTTPS proxy in front of the real kube-apiserver does the refusing: real HTTP, the real client."""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from tests.integration.conftest import World

RETRY_AFTER = 2  # seconds, in every 429
WINDOW = 0.5  # seconds from the first write during which every request is refused
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class Busy:
    """What the proxy saw: (monotonic time, method, path, status answered) per request."""

    upstream: str
    ca_file: Path
    busy_from: float | None = None
    seen: list[tuple[float, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuses(self, method: str) -> bool:
        with self.lock:
            now = time.monotonic()
            if self.busy_from is None and method == "POST":
                self.busy_from = now
            return self.busy_from is not None and now < self.busy_from + WINDOW


def handler(busy: Busy) -> type[BaseHTTPRequestHandler]:
    upstream = urlsplit(busy.upstream)
    context = ssl.create_default_context(cafile=str(busy.ca_file))

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client's pool expects

        def log_message(self, *_: object) -> None:
            pass

        def _handle(self) -> None:
            arrived = time.monotonic()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if busy.refuses(self.command):
                status, headers, payload = 429, {"Retry-After": str(RETRY_AFTER), "Content-Type": "application/json"}, (
                    b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"TooManyRequests","code":429}')
            else:
                connection = http.client.HTTPSConnection(upstream.hostname, upstream.port, context=context,
                                                         timeout=30)
                try:
                    connection.request(self.command, self.path, body or None,
                                       {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP})
                    answer = connection.getresponse()
                    status, payload = answer.status, answer.read()
                    headers = {k: v for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP}
                finally:
                    connection.close()
            with busy.lock:
                busy.seen.append((arrived, self.command, self.path, status))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Forward


@contextmanager
def busy_proxy(world: World) -> Iterator[tuple[Busy, str]]:
    """The proxy on a free loopback port, serving TLS with the API server's own certificate; yields what it saw and
    its URL."""
    admin = yaml.safe_load(world.control_plane.admin_kubeconfig.read_text())
    pki = world.control_plane.directory / "pki"
    busy = Busy(admin["clusters"][0]["cluster"]["server"], pki / "apiserver.crt")
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(busy))
    server.daemon_threads = True
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield busy, f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


PEOPLE = [{"id": f"{5000 + i}", "username": f"busy{i:02d}", "groups": "developers"} for i in range(12)]


def test_a_run_waits_out_429s_and_their_retry_after_and_succeeds(world: World):
    with busy_proxy(world) as (busy, url):
        admin = yaml.safe_load(world.control_plane.admin_kubeconfig.read_text())
        real_server = admin["clusters"][0]["cluster"]["server"]
        admin["clusters"][0]["cluster"]["server"] = url
        through_proxy = world.directory / "busy.kubeconfig"
        through_proxy.write_text(yaml.safe_dump(admin))
        world.configure(clusters=[cluster | {"kubeconfig": str(through_proxy), "server": real_server,
                                             "concurrency": 8} for cluster in world.settings["clusters"]])
        world.write_people(*PEOPLE)
        run = world.reconcile()
        log = world.last_stderr
        assert world.reconcile()["actions"] == []

    assert sorted(a["username"] for a in run["actions"] if a["kind"] == "issue") == [p["username"] for p in PEOPLE]
    refused = [at for at, _, _, status in busy.seen if status == 429]
    assert refused, "the proxy refused nothing"
    assert busy.busy_from is not None
    # Every request after the refusals came once the first Retry-After had passed: the client paused them all.
    after = [at for at, _, _, status in busy.seen if at >= busy.busy_from + WINDOW]
    assert after and min(after) >= busy.busy_from + RETRY_AFTER - 0.05, (
        f"a request came {min(after) - busy.busy_from:.2f} s after the first 429 (Retry-After: {RETRY_AFTER})")
    assert '"status": 429' in log and "send again" in log
    assert world.can("busy00", "create", "deployments", world.ns("team-a")) == "yes"
