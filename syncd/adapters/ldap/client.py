"""The only module that imports ldap3: connections with TLS, failover and retries, paged searches, and ldap3's
exceptions turned into syncd's (`SourceUnavailable`, `SourceRejected`)."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import ldap3
import structlog
from ldap3.core import exceptions as lx
from ldap3.strategy.asynchronous import AsyncStrategy
from ldap3.strategy.sync import SyncStrategy
from ldap3.utils.conv import escape_filter_chars

from syncd.adapters.ldap import ad
from syncd.config import LdapSourceSettings, read_secret
from syncd.errors import ConfigError, SourceRejected, SourceUnavailable, SyncdError

log = structlog.get_logger("syncd.sources.ldap")

PAGED_RESULTS = "1.2.840.113556.1.4.319"
DIRSYNC = "1.2.840.113556.1.4.841"
DIRSYNC_MAX_BYTES = 1 << 20  # the most AD returns per DirSync answer
NO_ATTRIBUTES = "1.1"
# Results that mean "you (the configuration) are wrong", not "the server is down".
_REJECTED = (lx.LDAPInvalidCredentialsResult, lx.LDAPInsufficientAccessRightsResult, lx.LDAPInvalidFilterError,
             lx.LDAPNoSuchObjectResult, lx.LDAPInvalidDNSyntaxResult, lx.LDAPUnwillingToPerformResult,
             lx.LDAPStrongerAuthRequiredResult, lx.LDAPConfidentialityRequiredResult)


def _raw_entry(ldap_message) -> dict:
    """A searchResEntry with raw values only, by lower-case attribute name. ldap3 also builds a second, decoded
    copy of every value (str conversions with per-value config look-ups): a third of a large read's time, for a copy
    syncd never reads."""
    payload = ldap_message["payload"]
    raw = {bytes(attribute[3][0][3]).decode("utf-8").lower(): [bytes(value[3]) for value in attribute[3][1][3]]
           for attribute in payload[1][3]}
    return {"type": "searchResEntry", "dn": bytes(payload[0][3]).decode("utf-8"), "raw_attributes": raw,
            "attributes": raw}


class _RawEntries(SyncStrategy):
    """ldap3's synchronous strategy, decoding search entries to raw values only (`_raw_entry`). Everything else is
    ldap3's own decoding."""

    def decode_response_fast(self, ldap_message):
        if ldap_message["protocolOp"] != 4:  # not a searchResEntry
            return super().decode_response_fast(ldap_message)
        return _raw_entry(ldap_message)


@dataclass(frozen=True)
class Message:
    """One message a long-lived search received. `kind`: entry, reference, intermediate (`name`, `value`) or
    done (`result`, `description`); `controls` maps each response control's OID to its raw value."""

    search: int
    kind: str
    dn: str = ""
    attributes: dict[str, list[bytes]] = field(default_factory=dict)
    controls: dict[str, bytes | None] = field(default_factory=dict)
    name: str = ""
    value: bytes | None = None
    result: int = 0
    description: str = ""


_KINDS = {"searchResEntry": "entry", "searchResRef": "reference", "intermediateResponse": "intermediate",
          "searchResDone": "done"}


class _Streaming(AsyncStrategy):
    """ldap3's asynchronous strategy, handing every message of the searches `watched` to a queue as it arrives
    (its receiver thread calls `accumulate_stream`); a closed connection queues None."""

    def __init__(self, connection) -> None:
        super().__init__(connection)
        self.can_stream = True
        self.watched: set[int] = set()
        self.messages: queue.SimpleQueue[Message | None] = queue.SimpleQueue()

    def decode_response_fast(self, ldap_message):
        if ldap_message["protocolOp"] != 4:
            return super().decode_response_fast(ldap_message)
        entry = _raw_entry(ldap_message)
        if ldap_message["controls"]:
            entry["controls"] = dict(self.decode_control_fast(c[3]) for c in ldap_message["controls"])
        return entry

    def accumulate_stream(self, message_id, response) -> None:
        if message_id not in self.watched:
            return
        with self.async_lock:
            self._responses.pop(message_id, None)  # a long-lived search must not pile up its answers
        controls = {oid: control["value"] for oid, control in (response.get("controls") or {}).items()}
        self.messages.put(Message(
            message_id, _KINDS.get(response["type"], response["type"]), response.get("dn", ""),
            response.get("raw_attributes") or {}, controls, response.get("responseName") or "",
            response.get("responseValue"), response.get("result", 0),
            ": ".join(filter(None, (response.get("description"), response.get("message"))))))

    def _start_listen(self) -> None:
        # ldap3 leaves the connect timeout on the socket, and its receiver takes a timeout for a closed connection:
        # a stream silent that long would end. Cleared before the receiver's first read starts.
        self.connection.socket.settimeout(None)
        super()._start_listen()

    def close(self) -> None:
        super().close()
        self.messages.put(None)


class Stream:
    """Long-lived searches (content sync, persistent search) on a connection of their own, and their messages in
    the order the server sent them. After `keepalive` seconds of silence `probe()` checks that the server still
    answers (it raises when not): a hung server ends the stream instead of leaving it waiting forever."""

    def __init__(self, source: str, connection: ldap3.Connection, keepalive: float,
                 probe: Callable[[], None]) -> None:
        self.source = source
        self.connection = connection
        self.strategy: _Streaming = connection.strategy
        self.keepalive = keepalive
        self.probe = probe
        self.last_heard = time.monotonic()  # when the server last sent anything (or answered a probe)

    def search(self, base: str, filter_: str, attributes: Sequence[str], controls: Sequence[tuple[str, bool, bytes]]
               ) -> int:
        try:
            # ldap3's receiver takes this lock before it hands a message over: none is missed before it is watched.
            with self.strategy.async_lock:
                message_id = self.connection.search(base, filter_, search_scope=ldap3.SUBTREE,
                                                    dereference_aliases=ldap3.DEREF_NEVER,  # content sync needs it
                                                    attributes=list(attributes), controls=list(controls))
                self.strategy.watched.add(message_id)
        except (lx.LDAPException, OSError) as error:
            raise SourceUnavailable(f"source {self.source}: search under {base} failed: {_describe(error)}") from None
        return message_id

    def next(self, timeout: float) -> Message | None:
        """The next message, None when none came within `timeout` seconds. A lost connection, or a server that
        does not answer the keepalive, raises."""
        try:
            message = self.strategy.messages.get(timeout=timeout)
        except queue.Empty:
            if time.monotonic() - self.last_heard >= self.keepalive:
                self.probe()
                self.last_heard = time.monotonic()
            return None
        if message is None:
            raise SourceUnavailable(f"source {self.source}: the directory server closed the connection")
        self.last_heard = time.monotonic()
        return message

    def close(self) -> None:
        with contextlib.suppress(lx.LDAPException, OSError):
            self.connection.unbind()


def escape(value: str) -> str:
    """A value safe to put into a filter (RFC 4515): no injection from names."""
    return escape_filter_chars(value)


def first_text(values: list[bytes] | None) -> str:
    """The first of an attribute's raw values as text ("" when it has none)."""
    return values[0].decode("utf-8", "replace").strip() if values else ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One search result: its DN and raw values by lower-case attribute name."""

    dn: str
    attributes: dict[str, list[bytes]]

    def first(self, name: str) -> bytes | None:
        values = self.attributes.get(name.lower())
        return values[0] if values else None

    def text(self, name: str) -> str:
        return first_text(self.attributes.get(name.lower()))


def read_password(settings: LdapSourceSettings) -> str:
    if settings.password_env is not None:
        password = os.environ.get(settings.password_env)
        if password is None:
            raise ConfigError(f"source {settings.name}: environment variable {settings.password_env} is not set")
        return password
    assert settings.password_file is not None
    return read_secret(settings.password_file, f"source {settings.name}: password_file")


class LdapClient:
    """One bound connection at a time, to the first server of the list that answers."""

    def __init__(self, settings: LdapSourceSettings) -> None:
        self.settings = settings
        self.connection: ldap3.Connection | None = None
        self.server_url: str | None = None

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(lx.LDAPException, OSError):
                self.connection.unbind()
        self.connection = None

    def _server(self, url: str) -> ldap3.Server:
        s = self.settings
        parts = urlsplit(url)
        use_ssl = parts.scheme.lower() == "ldaps"
        tls = None
        if s.tls != "none":
            # ldap3 checks the certificate's names itself after the handshake; "*" is its way to skip that.
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(s.ca_file) if s.ca_file else None,
                            valid_names=None if s.verify_hostname else ["*"], sni=parts.hostname)
        # get_info=NONE skips reading the schema and root DSE: decoding, not the server, bounds our speed.
        return ldap3.Server(parts.hostname, port=parts.port, use_ssl=use_ssl, tls=tls, get_info=ldap3.NONE,
                            connect_timeout=int(s.connect_timeout.total_seconds()))

    def _open(self, url: str, password: str, streaming: bool = False) -> ldap3.Connection:
        s = self.settings
        # A stream waits for changes as long as there are none: no receive timeout (its keepalive bounds silence).
        connection = ldap3.Connection(
            self._server(url), user=s.bind_dn, password=password, read_only=True, raise_exceptions=True,
            check_names=False, fast_decoder=True, auto_range=False, auto_referrals=False,
            return_empty_attributes=False, receive_timeout=None if streaming else int(s.timeout.total_seconds()),
            client_strategy=ldap3.ASYNC if streaming else ldap3.SYNC,
        )
        if streaming:
            strategy = connection.strategy = _Streaming(connection)
            connection.send, connection.open, connection.get_response = (strategy.send, strategy.open,
                                                                          strategy.get_response)
            connection.post_send_single_response = strategy.post_send_single_response
            connection.post_send_search = strategy.post_send_search
        else:
            connection.strategy = _RawEntries(connection)
        try:
            connection.open()
            if s.tls == "starttls":
                connection.start_tls()
            connection.bind()
            if streaming:
                _keepalives(connection.socket, s.watch.keepalive.total_seconds())
        except BaseException:
            connection.unbind()
            raise
        return connection

    def connect(self) -> ldap3.Connection:
        """Bind to the first server that answers; retry all of them with doubling backoff."""
        if self.connection is None:
            self.connection, self.server_url = self._first_server(streaming=False)
        return self.connection

    def stream(self) -> Stream:
        """A connection of its own for long-lived searches, to the first server that answers (with the same
        failover and backoff as `connect`)."""
        connection, url = self._first_server(streaming=True)
        log.info("open a stream to the directory", source=self.settings.name, server=url)
        return Stream(self.settings.name, connection, self.settings.watch.keepalive.total_seconds(),
                      lambda: self._answers(url))

    def _answers(self, url: str) -> None:
        """A stream's keepalive: bind to its server and read the root DSE on a connection of its own, within
        `connect_timeout` and `timeout` (the stream's own socket is being read by ldap3's receiver thread, and a TLS
        connection must not be written from a second thread meanwhile)."""
        s = self.settings
        try:
            connection = self._open(url, read_password(s))
            try:
                connection.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=[NO_ATTRIBUTES])
            finally:
                connection.unbind()
        except (lx.LDAPException, OSError) as error:
            raise SourceUnavailable(f"source {s.name}: the directory server did not answer a keepalive within "
                                    f"{s.timeout.total_seconds():g} s: {_describe(error)}") from None

    def _first_server(self, streaming: bool) -> tuple[ldap3.Connection, str]:
        s = self.settings
        password = read_password(s)
        delay = s.backoff.total_seconds()
        failures: list[str] = []
        for attempt in range(s.retries + 1):
            if attempt:
                log.warning("retry the directory servers", source=s.name, attempt=attempt, wait=delay)
                time.sleep(delay)
                delay *= 2
            for url in s.servers:
                try:
                    return self._open(url, password, streaming), url
                except _REJECTED as error:
                    raise SourceRejected(f"source {s.name}: {url} refused the bind as {s.bind_dn}: "
                                         f"{_describe(error)}", hint="check bind_dn and the password") from None
                except (lx.LDAPException, OSError) as error:
                    failures.append(f"{url}: {_describe(error)}")
                    log.warning("skip a directory server that cannot be reached", source=s.name, server=url,
                                error=_describe(error))
        raise SourceUnavailable(f"source {s.name}: no directory server could be reached ({'; '.join(failures[-3:])})")

    def supported_controls(self) -> frozenset[str]:
        """The controls the server's root DSE says it supports."""
        root = next(self.search("", "(objectClass=*)", ["supportedControl"], scope="base", paged=False), None)
        return frozenset(v.decode("ascii", "replace") for v in (root.attributes.get("supportedcontrol", [])
                                                                 if root else []))

    def search(self, base: str, filter_: str, attributes: Sequence[str], *, scope: str = "subtree",
               paged: bool = True) -> Iterator[Entry]:
        """Every entry, page by page. A failed, cut-short or referred page raises: a partial read never passes
        for a full one."""
        connection = self.connect()
        ldap_scope = ldap3.BASE if scope == "base" else ldap3.SUBTREE
        try:
            cookie: bytes | None = None
            while True:
                controls = ([(PAGED_RESULTS, True, _paged_control(self.settings.page_size, cookie))]
                            if paged else None)
                connection.search(base, filter_, search_scope=ldap_scope, attributes=list(attributes),
                                  controls=controls)
                # Taken now: the caller may run other searches on this connection between our entries.
                responses, result = connection.response or [], connection.result
                for response in responses:
                    kind = response["type"]
                    if kind == "searchResEntry":
                        yield Entry(response["dn"], response["raw_attributes"])  # names in lower case
                    elif kind == "searchResRef":
                        raise SourceUnavailable(
                            f"source {self.settings.name}: the server referred part of {base} elsewhere "
                            f"({', '.join(response.get('uri') or [])}); referrals are not followed",
                            hint="point people_base/group_base at the server that holds the entries")
                if result and result.get("result") != 0:
                    # ldap3 passes sizeLimitExceeded, timeLimitExceeded and referral off as answers: a cut-short
                    # page is a failed read here.
                    raise SourceUnavailable(
                        f"source {self.settings.name}: search under {base} was cut short: "
                        f"{result.get('description')}{': ' + result['message'] if result.get('message') else ''}",
                        hint="raise the server's limits for the bind DN, or narrow people_base/people_filter")
                if not paged:
                    return
                cookie = _cookie(result)
                if not cookie:
                    return
        except SyncdError:
            self.close()
            raise
        except lx.LDAPNoSuchObjectResult:
            if scope == "base":
                return
            self.close()
            raise SourceRejected(f"source {self.settings.name}: base DN {base} does not exist") from None
        except _REJECTED as error:
            self.close()
            raise SourceRejected(f"source {self.settings.name}: search under {base} refused: "
                                 f"{_describe(error)}") from None
        except (lx.LDAPException, OSError) as error:
            self.close()
            raise SourceUnavailable(f"source {self.settings.name}: search under {base} failed: "
                                    f"{_describe(error)}") from None

    def dirsync(self, base: str, filter_: str, attributes: Sequence[str], cookie: bytes | None
                ) -> tuple[list[Entry], bool, bytes | None]:
        """One Active Directory DirSync search from `cookie`: the objects changed since (deleted ones with
        isDeleted), whether more results wait, and the server's new cookie."""
        from ldap3.protocol.microsoft import dir_sync_control

        control = dir_sync_control(criticality=True, object_security=True, ancestors_first=True,
                                   public_data_only=False, incremental_values=False, max_length=DIRSYNC_MAX_BYTES,
                                   cookie=cookie)
        connection = self.connect()
        try:
            connection.search(base, filter_, search_scope=ldap3.SUBTREE, attributes=list(attributes),
                              controls=[control])
        except _REJECTED as error:
            self.close()
            raise SourceRejected(f"source {self.settings.name}: DirSync under {base} refused: "
                                 f"{_describe(error)}", hint="the bind DN needs 'Replicating Directory Changes'") \
                from None
        except (lx.LDAPException, OSError) as error:
            self.close()
            raise SourceUnavailable(f"source {self.settings.name}: DirSync under {base} failed: "
                                    f"{_describe(error)}") from None
        entries = [Entry(r["dn"], r["raw_attributes"]) for r in connection.response or []
                   if r["type"] == "searchResEntry"]
        answer = ((connection.result or {}).get("controls") or {}).get(DIRSYNC)
        if answer is None:
            raise SourceUnavailable(f"source {self.settings.name}: the server answered a DirSync search without "
                                    "its control")
        return entries, answer["value"]["more_results"], bytes(answer["value"]["cookie"]) or None

    def ranged_values(self, entry: Entry, name: str) -> list[bytes]:
        """All values of a multi-valued attribute, following Active Directory's range retrieval."""
        values, following = ad.ranged(entry.attributes, name)
        while following:
            more = next(self.search(entry.dn, "(objectClass=*)", [following], scope="base", paged=False), None)
            if more is None:
                raise SourceUnavailable(f"source {self.settings.name}: {entry.dn} vanished during range retrieval")
            chunk, following = ad.ranged(more.attributes, name)
            if not chunk:
                raise SourceUnavailable(f"source {self.settings.name}: range retrieval of {name} on {entry.dn} "
                                        "returned nothing")
            values.extend(chunk)
        return values


def _keepalives(sock: socket.socket, keepalive: float) -> None:
    """TCP keepalives on a stream's socket, so that a vanished peer ends it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, int(keepalive))
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):  # Linux names
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _paged_control(size: int, cookie: bytes | None) -> bytes:
    from ldap3.protocol.rfc2696 import paged_search_control

    return paged_search_control(False, size, cookie)[2]


def _cookie(result: dict | None) -> bytes | None:
    controls = (result or {}).get("controls") or {}
    paged = controls.get(PAGED_RESULTS)
    return paged["value"]["cookie"] if paged else None


def _describe(error: BaseException) -> str:
    """What went wrong, without ldap3's reprs (which can echo the bind request)."""
    description = getattr(error, "description", None)
    message = getattr(error, "message", None)
    if description:
        return f"{description}{': ' + message if message else ''}"
    return type(error).__name__ + (f": {error}" if str(error) else "")
