"""Distinguished names as strings (RFC 4514), read without any LDAP library: escaped specials (`\\,`), hex escapes
of UTF-8 bytes (`\\2C`), multi-valued RDNs (`+`), and, as directories still write them, quoted values and spaces
around separators (RFC 2253/1779)."""

from __future__ import annotations

import re

_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)*")
_HEX = frozenset("0123456789abcdefABCDEF")

# One RDN: its attribute type and value pairs, types as written, values unescaped.
Rdn = list[tuple[str, str]]


def _escape(dn: str, at: int, value: bytearray) -> int:
    """Append the escape starting at dn[at] (a backslash) to `value`; return where the next character is."""
    pair = dn[at + 1:at + 3]
    if len(pair) == 2 and set(pair) <= _HEX:
        value.append(int(pair, 16))
        return at + 3
    if not pair:
        raise ValueError(f"{dn!r} ends in a lone backslash")
    value += pair[0].encode()
    return at + 2


def parse_dn(dn: str) -> list[Rdn]:
    """The RDNs of `dn`, first (most specific) first. Raises ValueError for a string that is no DN."""
    rdns: list[Rdn] = []
    avas: Rdn = []
    at, end = 0, len(dn)
    while True:
        equals = dn.find("=", at)
        if equals < 0:
            raise ValueError(f"{dn!r} is no DN: {dn[at:]!r} has no '='")
        kind = dn[at:equals].strip()
        if not _TYPE.fullmatch(kind):
            raise ValueError(f"{dn!r} is no DN: {kind!r} is no attribute type")
        at = equals + 1
        while at < end and dn[at] == " ":
            at += 1
        value = bytearray()
        if at < end and dn[at] == '"':
            at += 1
            while at < end and dn[at] != '"':
                if dn[at] == "\\":
                    at = _escape(dn, at, value)
                else:
                    value += dn[at].encode()
                    at += 1
            if at == end:
                raise ValueError(f"{dn!r} is no DN: a quote is not closed")
            at += 1
            while at < end and dn[at] == " ":
                at += 1
            if at < end and dn[at] not in ",+":
                raise ValueError(f"{dn!r} is no DN: text after a quoted value")
        else:
            spaces = 0  # unescaped spaces count only between other characters
            while at < end and dn[at] not in ",+":
                if dn[at] == " ":
                    spaces, at = spaces + 1, at + 1
                    continue
                value += b" " * spaces
                spaces = 0
                if dn[at] == "\\":
                    at = _escape(dn, at, value)
                else:
                    value += dn[at].encode()
                    at += 1
        try:
            avas.append((kind, value.decode()))
        except UnicodeDecodeError:
            raise ValueError(f"{dn!r} is no DN: its hex escapes are not UTF-8") from None
        if at == end:
            rdns.append(avas)
            return rdns
        if dn[at] == ",":
            rdns.append(avas)
            avas = []
        at += 1
