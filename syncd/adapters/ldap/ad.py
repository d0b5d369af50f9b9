"""Active Directory specifics, as pure functions over raw attribute values (no server needed to test them)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence

UAC_ACCOUNTDISABLE = 0x2
IN_CHAIN = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_IN_CHAIN

_RANGE = re.compile(r"^(?P<name>[^;]+);range=(?P<low>\d+)-(?P<high>\d+|\*)$", re.IGNORECASE)


def object_guid(raw: bytes) -> str:
    """objectGUID's 16 bytes (little-endian fields, as AD stores them) -> the GUID string AD tools show."""
    if len(raw) != 16:
        raise ValueError(f"objectGUID must be 16 bytes, got {len(raw)}")
    return str(uuid.UUID(bytes_le=raw))


def guid_bytes(guid: str) -> bytes:
    """The GUID string AD tools show -> objectGUID's 16 bytes, to search by it."""
    return uuid.UUID(guid).bytes_le


def account_disabled(user_account_control: bytes | str) -> bool:
    """userAccountControl is a decimal bit field; bit 2 (ACCOUNTDISABLE) marks a disabled account."""
    value = user_account_control.decode() if isinstance(user_account_control, bytes) else user_account_control
    return bool(int(value) & UAC_ACCOUNTDISABLE)


def ranged(attributes: Mapping[str, Sequence[bytes]], name: str) -> tuple[list[bytes], str | None]:
    """Values of `name` from an entry AD may have cut into ranges (`member;range=0-1499`), and the attribute to ask
    for next (`member;range=1500-*`), or None when these were the last (`member;range=1500-*` came back).
    Attribute names in `attributes` are lower case."""
    plain = attributes.get(name.lower())
    if plain:
        return list(plain), None
    for key, values in attributes.items():
        match = _RANGE.match(key)
        if match and match["name"].lower() == name.lower():
            if match["high"] == "*":
                return list(values), None
            return list(values), f"{name};range={int(match['high']) + 1}-*"
    return [], None


def in_chain_filter(escaped_group_dn: str) -> str:
    """A filter matching everything in a group, directly or through nested groups (AD only). The DN must
    already be escaped for a filter."""
    return f"(memberOf:{IN_CHAIN}:={escaped_group_dn})"
