"""What the file and LDAP adapters share in turning records into identities: yes/no values and group names."""

from __future__ import annotations

from syncd.adapters.dn import parse_dn

_TRUE = {"true", "yes", "1", "enabled", "active", "on", ""}
_FALSE = {"false", "no", "0", "disabled", "inactive", "off"}


def parse_active(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a yes/no value")


def group_name(value: str) -> str:
    """`cn=developers,ou=groups,dc=example,dc=org` -> `developers`, read as RFC 4514 says (`cn=dev\\,elopers,...`
    -> `dev,elopers`; of a multi-valued first RDN, its cn); a plain name stays as it is."""
    try:
        rdns = parse_dn(value)
    except ValueError:
        return value.strip()
    if len(rdns) < 2:
        return value.strip()
    first = rdns[0]
    return next((v for kind, v in first if kind.lower() == "cn"), first[0][1])
