"""Active Directory DirSync, on constructed answers (no AD server runs here): the request control as AD documents it,
and what the watch makes of changed and deleted (isDeleted) objects and of its cookie."""

from __future__ import annotations

import uuid

import pytest
from ldap3.protocol.microsoft import dir_sync_control
from pyasn1.codec.ber import decoder

from syncd.adapters.ldap import LdapSource
from syncd.adapters.ldap.client import DIRSYNC, Entry, LdapClient
from syncd.adapters.ldap.dirsync import STREAM, DirSyncWatch, naming_context
from syncd.config import LdapSourceSettings

pytestmark = pytest.mark.fast

ALICE, BOB = "6f1c4f5e-2a3b-4c5d-8e9f-0a1b2c3d4e5f", "0b9e2f6a-7c8d-4e1f-9a2b-3c4d5e6f7a8b"


def guid(value: str) -> list[bytes]:
    return [uuid.UUID(value).bytes_le]


class FakeClient:
    """Answers DirSync searches from a script of (entries, more, cookie), and records the cookies asked from."""

    def __init__(self, *answers: tuple[list[Entry], bool, bytes]) -> None:
        self.answers = list(answers)
        self.asked: list[bytes | None] = []
        self.groups: dict[str, Entry] = {}

    def dirsync(self, base, filter_, attributes, cookie):
        assert base == "DC=corp,DC=example"
        self.asked.append(cookie)
        return self.answers.pop(0)

    def search(self, base, filter_, attributes, *, scope="subtree", paged=True):
        return iter([self.groups[base]] if base in self.groups else [])

    def close(self) -> None:
        pass


def watch_on(client: FakeClient, cookie: bytes | None, known: list[str]) -> DirSyncWatch:
    source = LdapSource(LdapSourceSettings.model_validate({
        "name": "ad", "type": "ldap", "servers": ["ldap://127.0.0.1:1"], "tls": "none", "bind_dn": "cn=x",
        "password_env": "X", "people_base": "OU=People,DC=corp,DC=example",
        "group_base": "OU=Groups,DC=corp,DC=example", "attributes": {"id": "objectGUID"}}))
    watch = DirSyncWatch(source, {STREAM: cookie} if cookie else {}, lambda: known, interval=0)
    watch.client = client  # type: ignore[assignment]
    watch.open()
    return watch


def test_the_request_control_is_flags_max_attribute_count_and_cookie():
    oid, critical, value = (dir_sync_control(True, True, True, False, False, 1 << 20, b"cookie")[key]
                            for key in ("controlType", "criticality", "controlValue"))
    sequence, rest = decoder.decode(bytes(value))
    assert (str(oid), bool(critical), rest) == ("1.2.840.113556.1.4.841", True, b"")
    # flags: object security (0x1), ancestors first (0x800)
    assert [int(sequence[0]), int(sequence[1]), bytes(sequence[2])] == [0x801, 1 << 20, b"cookie"]


def test_the_naming_context_is_the_dns_domain_components():
    assert naming_context("OU=People, OU=Staff,DC=corp,DC=example") == "DC=corp,DC=example"


def test_a_first_dirsync_asks_for_one_full_read_and_keeps_the_cookie():
    client = FakeClient(([Entry("CN=Alice,OU=People,DC=corp,DC=example", {"objectguid": guid(ALICE)})], True, b"c1"),
                        ([], False, b"c2"))
    batch = watch_on(client, None, []).next_batch(0)
    assert batch is not None and batch.full_read and batch.people == set() and batch.cookies == {STREAM: b"c2"}
    assert client.asked == [None, b"c1"]  # moreResults: asked again at once


def test_a_deleted_person_is_a_leaver():
    tombstone = Entry("CN=Alice\\0ADEL:6f1c,CN=Deleted Objects,DC=corp,DC=example",
                      {"objectguid": guid(ALICE), "isdeleted": [b"TRUE"], "objectclass": [b"top", b"person", b"user"]})
    client = FakeClient(([tombstone], False, b"c2"))
    batch = watch_on(client, b"c1", [ALICE]).next_batch(0)
    assert batch is not None and batch.people == {ALICE} and not batch.full_read
    assert client.asked == [b"c1"] and batch.cookies == {STREAM: b"c2"}


def test_a_deleted_object_that_is_no_one_is_ignored_but_a_deleted_group_is_a_full_read():
    computer = Entry("CN=PC1\\0ADEL:1,CN=Deleted Objects,DC=corp,DC=example",
                     {"objectguid": guid(BOB), "isdeleted": [b"TRUE"], "objectclass": [b"top", b"computer"]})
    assert watch_on(FakeClient(([computer], False, b"c2")), b"c1", [ALICE]).next_batch(0) is None
    group = Entry("CN=devs\\0ADEL:2,CN=Deleted Objects,DC=corp,DC=example",
                  {"objectguid": guid(BOB), "isdeleted": [b"TRUE"], "objectclass": [b"top", b"group"]})
    batch = watch_on(FakeClient(([group], False, b"c2")), b"c1", [ALICE]).next_batch(0)
    assert batch is not None and batch.full_read


def test_a_changed_person_is_read_again():
    changed = Entry("CN=Bob,OU=People,DC=corp,DC=example",
                    {"objectguid": guid(BOB), "useraccountcontrol": [b"514"]})
    batch = watch_on(FakeClient(([changed], False, b"c2")), b"c1", []).next_batch(0)
    assert batch is not None and batch.people == {BOB}


def test_a_changed_group_before_any_group_read_asks_for_a_full_read():
    client = FakeClient(([Entry("CN=devs,OU=Groups,DC=corp,DC=example", {"member": []})], False, b"c2"))
    client.groups["CN=devs,OU=Groups,DC=corp,DC=example"] = Entry("CN=devs,OU=Groups,DC=corp,DC=example",
                                                                  {"cn": [b"devs"], "member": []})
    batch = watch_on(client, b"c1", []).next_batch(0)
    assert batch is not None and batch.full_read  # the groups were never read: the change cannot be placed


def test_nothing_changed_keeps_the_cookie_in_memory_only():
    watch = watch_on(FakeClient(([], False, b"c2"), ([], False, b"c3")), b"c1", [])
    assert watch.next_batch(0) is None and watch.cookie == b"c2"
    assert watch.next_batch(0) is None and watch.client.asked == [b"c1", b"c2"]  # type: ignore[attr-defined]


def test_the_response_control_gives_more_results_and_the_cookie():
    """The response value AD documents (moreResults, unused, cookie), through the decoding the client gets."""
    from ldap3.strategy.base import BaseStrategy
    from ldap3.utils.asn1 import decode_sequence
    from pyasn1.codec.ber import encoder
    from pyasn1.type import univ

    value = univ.Sequence()
    value.setComponentByPosition(0, univ.Integer(1))
    value.setComponentByPosition(1, univ.Integer(0))
    value.setComponentByPosition(2, univ.OctetString(b"c2"))
    control = univ.Sequence()
    control.setComponentByPosition(0, univ.OctetString(b"1.2.840.113556.1.4.841"))
    control.setComponentByPosition(1, univ.OctetString(encoder.encode(value)))
    raw = encoder.encode(control)
    oid, decoded = BaseStrategy.decode_control_fast(decode_sequence(raw, 0, len(raw))[0][3])
    assert oid == "1.2.840.113556.1.4.841" and decoded["value"] == {"more_results": True, "cookie": b"c2"}


def test_the_client_returns_the_entries_more_results_and_cookie():
    class Connection:
        response = [{"type": "searchResEntry", "dn": "CN=Bob,OU=People,DC=corp,DC=example",
                     "raw_attributes": {"objectguid": guid(BOB)}}]
        result = {"result": 0, "controls": {DIRSYNC: {"value": {"more_results": False, "cookie": b"c9"}}}}

        def search(self, base, filter_, **kwargs):
            (control,) = kwargs["controls"]
            assert str(control["controlType"]) == DIRSYNC
            self.asked = control

    client = LdapClient(LdapSourceSettings.model_validate({
        "name": "ad", "type": "ldap", "servers": ["ldap://127.0.0.1:1"], "tls": "none", "bind_dn": "cn=x",
        "password_env": "X", "people_base": "DC=corp,DC=example", "group_base": "DC=corp,DC=example"}))
    client.connection = Connection()  # type: ignore[assignment]
    entries, more, cookie = client.dirsync("DC=corp,DC=example", "(objectClass=*)", ["objectGUID"], b"c8")
    assert [e.dn for e in entries] == ["CN=Bob,OU=People,DC=corp,DC=example"] and (more, cookie) == (False, b"c9")
