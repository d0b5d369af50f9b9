"""Sources read people from somewhere and return a `Snapshot`. A source that cannot read everything says so.

A read that fails raises `SourceUnavailable`; a read that skipped broken entries returns `complete=False` with
`problems`. Either way the planner revokes nothing from it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from syncd.config import FileSourceSettings, LdapSourceSettings, ScimSourceSettings, SourceSettings
from syncd.model import Snapshot
from syncd.sources.dn import parse_dn

if TYPE_CHECKING:
    from syncd.ledger import Ledger

_TRUE = {"true", "yes", "1", "enabled", "active", "on", ""}
_FALSE = {"false", "no", "0", "disabled", "inactive", "off"}


class Source(Protocol):
    name: str

    def read(self) -> Snapshot:
        """Everyone, in full. Raises `SourceUnavailable` when the read fails."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class IncrementalSource(Source, Protocol):
    def poll(self) -> Snapshot:
        """Only the people changed since the last `read` or `poll` (a disabled or deleted person comes back with
        `active=False`). The engine reconciles just those people; deletions a poll cannot see wait for `read`."""
        ...


@runtime_checkable
class TargetedSource(Source, Protocol):
    def read_people(self, ids: Collection[str]) -> Snapshot:
        """Only these people, for a targeted run: cheaper than `read`, just as current. Someone missing from
        the answer is gone from the source; `population` counts everyone it holds."""
        ...


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


def reads_ledger(settings: SourceSettings) -> bool:
    """A SCIM push source finds what identity providers pushed in the ledger database."""
    return isinstance(settings, ScimSourceSettings) and settings.mode == "push"


def open_source(settings: SourceSettings, ledger: Ledger | None = None) -> Source:
    """`ledger` is needed by sources that `reads_ledger`."""
    if isinstance(settings, FileSourceSettings):
        from syncd.sources.file import FileSource

        return FileSource(settings)
    if isinstance(settings, LdapSourceSettings):
        from syncd.sources.ldap import LdapSource

        return LdapSource(settings)
    if isinstance(settings, ScimSourceSettings):
        from syncd.sources.scim import ScimPullSource, ScimPushSource

        if not reads_ledger(settings):
            return ScimPullSource(settings)
        if ledger is None:
            raise NotImplementedError("a scim push source reads the ledger; pass it")
        return ScimPushSource(settings, ledger)
    raise NotImplementedError(f"no source of type {settings.type}")
