"""The watch's stream on a real slapd: it stays open through silence, and a frozen server (SIGSTOP) is detected by
its keepalive instead of hanging the watch forever."""

from __future__ import annotations

import signal
import time

import pytest

from syncd.adapters.ldap import syncrepl
from syncd.adapters.ldap.client import LdapClient, Stream
from syncd.config import LdapSourceSettings
from syncd.errors import SourceUnavailable
from tests.ldap.conftest import Directory
from tests.ldap.slapd import Slapd

KEEPALIVE, ANSWER = 1, 2  # seconds


def open_stream(directory: Directory) -> Stream:
    settings = LdapSourceSettings.model_validate(directory.source_settings(
        connect_timeout="1s", timeout=f"{ANSWER}s", watch={"mode": "syncrepl", "keepalive": f"{KEEPALIVE}s"}))
    stream = LdapClient(settings).stream()
    stream.search(directory.base, "(objectClass=inetOrgPerson)", ["uid"],
                  [(syncrepl.SYNC_REQUEST, True, syncrepl.sync_request(None))])
    return stream


def read_for(stream: Stream, seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        stream.next(0.2)


def test_a_silent_stream_stays_open_and_is_kept_alive(directory: Directory):
    directory.person("alice")
    stream = open_stream(directory)
    try:
        read_for(stream, 4 * KEEPALIVE)  # longer than connect_timeout: the socket must not time out
        assert time.monotonic() - stream.last_heard < KEEPALIVE + ANSWER, "the keepalive was answered"
        directory.person("bob")
        message = stream.next(10)
        while message is not None and message.kind != "entry":
            message = stream.next(10)
        assert message is not None and message.dn == directory.dn("bob")
    finally:
        stream.close()


def test_a_frozen_server_is_detected(own_slapd: Slapd):
    directory = Directory(own_slapd, "frozen").create()
    stream = open_stream(directory)
    own_slapd.signal(signal.SIGSTOP)
    try:
        with pytest.raises(SourceUnavailable, match="did not answer a keepalive"):
            read_for(stream, 10 * (KEEPALIVE + ANSWER))
    finally:
        own_slapd.signal(signal.SIGCONT)
        stream.close()
