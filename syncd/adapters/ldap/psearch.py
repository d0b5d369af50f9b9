"""Persistent search (draft-ietf-ldapext-psearch, 389-ds and others): the request control syncd sends and the
Entry Change Notification control on each entry the server returns, encoded and decoded with pyasn1. Pure: bytes
in, plain records out. Unlike content sync it has no cookie: changes made while no search ran are not sent."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pyasn1.codec.ber import decoder
from pyasn1.codec.der import encoder  # TRUE as 0xFF, as ldap3 and the servers send it
from pyasn1.type import namedtype, univ

PERSISTENT_SEARCH = "2.16.840.1.113730.3.4.3"
ENTRY_CHANGE = "2.16.840.1.113730.3.4.7"


class Change(IntEnum):
    ADD = 1
    DELETE = 2
    MODIFY = 4
    MOD_DN = 8


ALL_CHANGES = Change.ADD | Change.DELETE | Change.MODIFY | Change.MOD_DN


class _PersistentSearch(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("changeTypes", univ.Integer()),
        namedtype.NamedType("changesOnly", univ.Boolean()),
        namedtype.NamedType("returnECs", univ.Boolean()),
    )


class _EntryChangeNotification(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("changeType", univ.Enumerated()),
        namedtype.OptionalNamedType("previousDN", univ.OctetString()),
        namedtype.OptionalNamedType("changeNumber", univ.Integer()),
    )


@dataclass(frozen=True)
class EntryChange:
    """What happened to one entry the persistent search returned; `previous_dn` for a rename or move."""

    change: Change
    previous_dn: str | None = None
    change_number: int | None = None


def request() -> bytes:
    """The control's value: every kind of change, changes only (no initial content), with notifications."""
    value = _PersistentSearch()
    value["changeTypes"], value["changesOnly"], value["returnECs"] = int(ALL_CHANGES), True, True
    return encoder.encode(value)


def entry_change(raw: bytes) -> EntryChange:
    value, rest = decoder.decode(raw, asn1Spec=_EntryChangeNotification())
    if rest:
        raise ValueError("trailing bytes after an Entry Change Notification control")
    previous, number = value["previousDN"], value["changeNumber"]
    return EntryChange(Change(int(value["changeType"])), bytes(previous).decode("utf-8") if previous.isValue else None,
                       int(number) if number.isValue else None)
