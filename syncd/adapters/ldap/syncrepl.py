"""RFC 4533 content synchronisation (OpenLDAP syncprov): the Sync Request control syncd sends, and the Sync State
and Sync Done controls and Sync Info message the server answers with, encoded and decoded with pyasn1 (which ldap3
already depends on). Pure: bytes in, plain records out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum

from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import namedtype, namedval, tag, univ

SYNC_REQUEST = "1.3.6.1.4.1.4203.1.9.1.1"
SYNC_STATE = "1.3.6.1.4.1.4203.1.9.1.2"
SYNC_DONE = "1.3.6.1.4.1.4203.1.9.1.3"
SYNC_INFO = "1.3.6.1.4.1.4203.1.9.1.4"
REFRESH_REQUIRED = 4096  # e-syncRefreshRequired: the server forgot the cookie; start over without it


class State(IntEnum):
    PRESENT = 0
    ADD = 1
    MODIFY = 2
    DELETE = 3


# The ASN.1 of RFC 4533 section 2 (IMPLICIT TAGS).

class _SyncRequestValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("mode", univ.Enumerated(namedValues=namedval.NamedValues(
            ("refreshOnly", 1), ("refreshAndPersist", 3)))),
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("reloadHint", univ.Boolean(False)),
    )


class _SyncStateValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("state", univ.Enumerated(namedValues=namedval.NamedValues(
            ("present", 0), ("add", 1), ("modify", 2), ("delete", 3)))),
        namedtype.NamedType("entryUUID", univ.OctetString()),
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
    )


class _SyncDoneValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
    )


def _refresh(number: int) -> univ.Sequence:
    class Refresh(univ.Sequence):
        tagSet = univ.Sequence.tagSet.tagImplicitly(tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, number))
        componentType = namedtype.NamedTypes(
            namedtype.OptionalNamedType("cookie", univ.OctetString()),
            namedtype.DefaultedNamedType("refreshDone", univ.Boolean(True)),
        )

    return Refresh()


class _SyncIdSet(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 3))
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
        namedtype.NamedType("syncUUIDs", univ.SetOf(componentType=univ.OctetString())),
    )


class _SyncInfoValue(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("newcookie", univ.OctetString().subtype(
            implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 0))),
        namedtype.NamedType("refreshDelete", _refresh(1)),
        namedtype.NamedType("refreshPresent", _refresh(2)),
        namedtype.NamedType("syncIdSet", _SyncIdSet()),
    )


# What the server says, as plain records.

@dataclass(frozen=True)
class SyncState:
    """The Sync State control of one entry (a search result entry, or a reference)."""

    state: State
    entry_uuid: str
    cookie: bytes | None


@dataclass(frozen=True)
class SyncDone:
    """The Sync Done control of the search's end (refreshOnly, or a persist phase the server ended)."""

    cookie: bytes | None
    refresh_deletes: bool


@dataclass(frozen=True)
class SyncInfo:
    """A Sync Info intermediate message. `kind`: newcookie, refreshDelete, refreshPresent or syncIdSet.
    `refresh_done` ends a refresh phase; a syncIdSet lists entries deleted (`refresh_deletes`) or present."""

    kind: str
    cookie: bytes | None
    refresh_done: bool = False
    refresh_deletes: bool = False
    uuids: tuple[str, ...] = ()


def _uuid(raw: bytes) -> str:
    if len(raw) != 16:
        raise ValueError(f"a syncUUID must be 16 bytes, got {len(raw)}")
    return str(uuid.UUID(bytes=raw))


def _optional(value) -> bytes | None:
    return bytes(value) if value.isValue else None


def sync_request(cookie: bytes | None, *, persist: bool = True) -> bytes:
    """The Sync Request control's value: refreshAndPersist (or refreshOnly), from `cookie` when we have one."""
    value = _SyncRequestValue()
    value["mode"] = 3 if persist else 1
    if cookie:
        value["cookie"] = cookie
    return encoder.encode(value)


def sync_state(raw: bytes) -> SyncState:
    value, rest = decoder.decode(raw, asn1Spec=_SyncStateValue())
    if rest:
        raise ValueError("trailing bytes after a Sync State control")
    return SyncState(State(int(value["state"])), _uuid(bytes(value["entryUUID"])), _optional(value["cookie"]))


def sync_done(raw: bytes | None) -> SyncDone:
    if not raw:
        return SyncDone(None, False)
    value, rest = decoder.decode(raw, asn1Spec=_SyncDoneValue())
    if rest:
        raise ValueError("trailing bytes after a Sync Done control")
    return SyncDone(_optional(value["cookie"]), bool(value["refreshDeletes"]))


def sync_info(raw: bytes) -> SyncInfo:
    value, rest = decoder.decode(raw, asn1Spec=_SyncInfoValue())
    if rest:
        raise ValueError("trailing bytes after a Sync Info message")
    kind = value.getName()
    inner = value.getComponent()
    if kind == "newcookie":
        return SyncInfo(kind, bytes(inner))
    if kind == "syncIdSet":
        return SyncInfo(kind, _optional(inner["cookie"]), refresh_deletes=bool(inner["refreshDeletes"]),
                        uuids=tuple(_uuid(bytes(u)) for u in inner["syncUUIDs"]))
    return SyncInfo(kind, _optional(inner["cookie"]), refresh_done=bool(inner["refreshDone"]))
