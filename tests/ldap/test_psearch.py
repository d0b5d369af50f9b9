"""Persistent search (389-ds and others): the request control, the Entry Change Notification one kind per test on
constructed bytes (slapd offers no persistent search), and what the watch makes of them."""

from __future__ import annotations

import pytest

from syncd.adapters.ldap import LdapSource, psearch
from syncd.adapters.ldap.client import Message
from syncd.adapters.ldap.psearch import Change, EntryChange
from syncd.adapters.ldap.watch import Watch
from syncd.config import LdapSourceSettings
from tests.ldap.test_syncrepl import FakeStream

pytestmark = pytest.mark.fast

ALICE = "e8229264-81e0-1041-8c2b-fb4e4388994b"


def test_the_request_asks_for_every_change_only_with_notifications():
    assert psearch.request().hex() == "300902010f0101ff0101ff"


def test_a_delete_notification():
    assert psearch.entry_change(bytes.fromhex("30030a0102")) == EntryChange(Change.DELETE)


def test_a_modify_notification_with_a_change_number():
    assert psearch.entry_change(bytes.fromhex("30060a0104020107")) == EntryChange(Change.MODIFY, None, 7)


def test_a_rename_notification_names_the_previous_dn():
    previous = b"uid=alice,ou=people"
    raw = bytes.fromhex("30") + bytes([5 + len(previous)]) + bytes.fromhex("0a0108") + b"\x04" \
        + bytes([len(previous)]) + previous
    assert psearch.entry_change(raw) == EntryChange(Change.MOD_DN, "uid=alice,ou=people")


def test_trailing_bytes_are_refused():
    with pytest.raises(ValueError, match="trailing"):
        psearch.entry_change(bytes.fromhex("30030a010200"))


def watching(stream: FakeStream) -> Watch:
    source = LdapSource(LdapSourceSettings.model_validate({
        "name": "d", "type": "ldap", "servers": ["ldap://127.0.0.1:1"], "tls": "none", "bind_dn": "cn=x",
        "password_env": "X", "people_base": "ou=people", "group_base": "ou=groups"}))
    source.client.stream = lambda: stream  # type: ignore[method-assign]
    watch = Watch(source, {}, known=lambda: [], mode="psearch")
    watch.open()
    return watch


def test_the_watch_sends_persistent_searches_and_reads_in_full_once_they_run():
    stream = FakeStream()
    watch = watching(stream)
    assert stream.searches == [psearch.request(), psearch.request()]  # people and groups, no cookie
    assert not watch.resyncing
    first = watch.next_batch(0)
    assert first is not None and first.full_read and first.cookies == {}
    assert watch.next_batch(0) is None


def test_a_deleted_person_is_that_person():
    stream = FakeStream()
    watch = watching(stream)
    watch.next_batch(0)
    stream.messages.append(Message(1, "entry", dn="uid=alice,ou=people", attributes={"entryuuid": [ALICE.encode()]},
                                   controls={psearch.ENTRY_CHANGE: bytes.fromhex("30030a0102")}))
    batch = watch.next_batch(0)
    assert batch is not None and batch.people == {ALICE} and not batch.full_read


def test_a_deleted_group_no_read_knows_asks_for_a_full_read():
    stream = FakeStream()
    watch = watching(stream)
    watch.next_batch(0)
    stream.messages.append(Message(2, "entry", dn="cn=developers,ou=groups", attributes={"entryuuid": [b"x"]},
                                   controls={psearch.ENTRY_CHANGE: bytes.fromhex("30030a0102")}))
    batch = watch.next_batch(0)
    assert batch is not None and batch.full_read
