"""RFC 4533 messages, one kind per test, on bytes recorded from the slapd (syncprov) the tests start; and what the
watch makes of a server that forgot its cookie."""

from __future__ import annotations

import pytest

from syncd.adapters.ldap import LdapSource, syncrepl
from syncd.adapters.ldap.client import Message
from syncd.adapters.ldap.syncrepl import State
from syncd.adapters.ldap.watch import Watch
from syncd.config import LdapSourceSettings

pytestmark = pytest.mark.fast

COOKIE = b"rid=000,csn=20261201144033.428612Z#000000#000#000000"
ADD = "30150a01010410e822926481e010418c2bfb4e4388994b"
MODIFY = ("304b0a01020410e822926481e010418c2bfb4e4388994b04347269643d3030302c63736e3d32303236313230313134343033342e"
          "3435383036345a233030303030302330303023303030303030")
DELETE = ("304b0a01030410e87bee9a81e010418c2cfb4e4388994b04347269643d3030302c63736e3d32303236313230313134343033342e"
          "3434383735385a233030303030302330303023303030303030")
REFRESH_DELETE = ("a13604347269643d3030302c63736e3d32303236313230313134343033332e3432383631325a23303030303030233030"
                  "3023303030303030")
SYNC_ID_SET = ("a37d04647269643d3030302c63736e3d32303236313230313134343233362e3731373331385a23303030303030233030"
               "30233030303030302c64656c63736e3d32303236313230313134343233372e3734383630395a23303030303030233030"
               "30233030303030300101ff3112041031f6adee81e110419c25ddcb99996b17")
SYNC_DONE = ("303904347269643d3030302c63736e3d32303236313230313134343233362e3731373331385a23303030303030233030"
             "30233030303030300101ff")


def test_the_sync_request_asks_for_refresh_and_persist_from_a_cookie():
    assert syncrepl.sync_request(None).hex() == "30030a0103"
    assert syncrepl.sync_request(b"rid=1").hex() == "300a0a010304057269643d31"
    assert syncrepl.sync_request(None, persist=False).hex() == "30030a0101"


def test_an_added_entry_carries_its_entry_uuid():
    state = syncrepl.sync_state(bytes.fromhex(ADD))
    assert state == syncrepl.SyncState(State.ADD, "e8229264-81e0-1041-8c2b-fb4e4388994b", None)


def test_a_modified_entry_carries_a_cookie():
    state = syncrepl.sync_state(bytes.fromhex(MODIFY))
    assert state.state is State.MODIFY and state.cookie == b"rid=000,csn=20261201144034.458064Z#000000#000#000000"


def test_a_deleted_entry_names_only_its_entry_uuid():
    state = syncrepl.sync_state(bytes.fromhex(DELETE))
    assert (state.state, state.entry_uuid) == (State.DELETE, "e87bee9a-81e0-1041-8c2c-fb4e4388994b")


def test_sync_info_ends_a_refresh_with_a_new_cookie():
    info = syncrepl.sync_info(bytes.fromhex(REFRESH_DELETE))
    assert info == syncrepl.SyncInfo("refreshDelete", COOKIE, refresh_done=True)


def test_sync_info_refresh_present_and_newcookie():
    present = syncrepl.sync_info(bytes.fromhex("a2030101ff"))  # refreshPresent, refreshDone TRUE, no cookie
    assert (present.kind, present.refresh_done, present.cookie) == ("refreshPresent", True, None)
    assert syncrepl.sync_info(bytes.fromhex("8005") + b"rid=1") == syncrepl.SyncInfo("newcookie", b"rid=1")


def test_a_sync_id_set_lists_deleted_entries():
    info = syncrepl.sync_info(bytes.fromhex(SYNC_ID_SET))
    assert info.kind == "syncIdSet" and info.refresh_deletes
    assert info.uuids == ("31f6adee-81e1-1041-9c25-ddcb99996b17",)


def test_sync_done_carries_the_cookie_and_refresh_deletes():
    done = syncrepl.sync_done(bytes.fromhex(SYNC_DONE))
    assert done.refresh_deletes and done.cookie.startswith(b"rid=000,csn=20261201144236.717318Z")


def test_a_malformed_uuid_is_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        syncrepl.sync_state(bytes.fromhex("30070a0103040201ff"))


class FakeStream:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.searches: list[bytes] = []

    def search(self, base, filter_, attributes, controls) -> int:
        self.searches.append(controls[0][2])
        return len(self.searches)

    def next(self, timeout: float) -> Message | None:
        return self.messages.pop(0) if self.messages else None

    def close(self) -> None:
        pass


def watch_on(stream: FakeStream, cookies: dict) -> Watch:
    source = LdapSource(LdapSourceSettings.model_validate({
        "name": "d", "type": "ldap", "servers": ["ldap://127.0.0.1:1"], "tls": "none", "bind_dn": "cn=x",
        "password_env": "X", "people_base": "ou=people", "group_base": "ou=groups"}))
    source.client.stream = lambda: stream  # type: ignore[method-assign]
    watch = Watch(source, cookies, known=lambda: [])
    watch.open()
    return watch


def test_refresh_required_starts_over_without_the_cookie_and_asks_for_one_full_read():
    stream = FakeStream()
    watch = watch_on(stream, {"people": b"old", "groups": b"old"})
    stream.messages.append(Message(1, "done", result=syncrepl.REFRESH_REQUIRED))
    batch = watch.next_batch(0)
    assert batch is not None and batch.full_read and batch.cookies == {"people": None}
    assert stream.searches[-1] == syncrepl.sync_request(None)  # the people search again, from nothing


def test_a_resumed_refresh_turns_a_delete_into_that_person():
    stream = FakeStream()
    watch = watch_on(stream, {"people": b"old", "groups": b"old"})
    deleted = {syncrepl.SYNC_STATE: bytes.fromhex(DELETE)}
    stream.messages += [Message(1, "entry", dn="uid=b,ou=people", controls=deleted),
                        Message(1, "intermediate", name=syncrepl.SYNC_INFO, value=bytes.fromhex(REFRESH_DELETE)),
                        Message(2, "intermediate", name=syncrepl.SYNC_INFO, value=bytes.fromhex(REFRESH_DELETE))]
    batch = watch.next_batch(0)
    assert batch is not None and not batch.full_read
    assert batch.people == {"e87bee9a-81e0-1041-8c2c-fb4e4388994b"}
    assert batch.cookies["people"] == COOKIE
