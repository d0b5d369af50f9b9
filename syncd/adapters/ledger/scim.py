"""Users and groups identity providers pushed over SCIM, kept in the ledger database: the one copy every syncd process
on the ledger reads and writes on every request, so that all of them answer as one server.

Each resource has a version, raised by every write in the transaction that checks the version the writer read
(`UPDATE ... WHERE version = :seen`, the row locked from its read). What must be unique in a tenant (a user's
`userName`, a group's `displayName`, in the form SCIM compares them) is a unique index, so it holds across processes.
A group's members are rows too, so a user's groups are found by an index. Bodies are SCIM JSON as the endpoint stores
them, never holding a password.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Index, and_, delete, func, insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, select

from syncd.adapters.ledger.database import ID_LIST_LIMIT, Database
from syncd.errors import StaleVersion, ValueTaken


class ScimResourceRow(SQLModel, table=True):
    __tablename__ = "scim_resource"
    __table_args__ = (
        Index("ux_scim_resource_unique_key", "source", "resource_type", "unique_key", unique=True),
        Index("ix_scim_resource_external_key", "tenant", "resource_type", "external_key"),
    )

    tenant: str = Field(primary_key=True, description="The `scim.tenants` entry that pushed it.")
    resource_type: str = Field(primary_key=True, description="User or Group.")
    id: str = Field(primary_key=True, description="The SCIM id syncd gave it; a User's is its person id.")
    source: str = Field(index=True, description="The push source the tenant feeds.")
    body: str = Field(description="The resource as SCIM JSON.")
    updated_at: datetime
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"},
                         description="Raised by every write: the resource's ETag.")
    unique_key: str | None = Field(default=None, description="A User's userName, a Group's displayName, as compared: "
                                                              "unique per source, whichever tenant pushed it.")
    external_key: str | None = Field(default=None, description="externalId, as compared.")
    display: str | None = Field(default=None, description="A Group's displayName, for its members' `groups`.")


class ScimMemberRow(SQLModel, table=True):
    """One member of a pushed group: a user's groups are looked up by it."""

    __tablename__ = "scim_member"
    __table_args__ = (Index("ix_scim_member_user", "tenant", "user_id"),)

    tenant: str = Field(primary_key=True)
    group_id: str = Field(primary_key=True)
    user_id: str = Field(primary_key=True)


@dataclass(frozen=True)
class ScimResource:
    """A resource as stored: `version` is the database's."""

    resource_type: str
    id: str
    body: dict
    version: int = 1


@dataclass(frozen=True)
class ScimRecord:
    """A resource as written, with what the database indexes of it (keys in the form SCIM filters compare)."""

    resource_type: str
    id: str
    body: dict
    unique_key: str | None = None
    external_key: str | None = None
    display: str | None = None
    members: frozenset[str] = field(default_factory=frozenset)


# The columns a search can narrow by: an `eq` filter on id, userName/displayName or externalId.
NARROWABLE = ("id", "unique_key", "external_key")

_R = ScimResourceRow
_M = ScimMemberRow
_COLUMNS = (_R.resource_type, _R.id, _R.body, _R.version)


def _resource(row: Any) -> ScimResource:
    kind, resource_id, body, version = row
    return ScimResource(kind, resource_id, json.loads(body), version)


def _key(tenant: str, resource_type: str, resource_id: str) -> Any:
    return and_(_R.tenant == tenant, _R.resource_type == resource_type, _R.id == resource_id)  # type: ignore[arg-type]


class ScimStore:
    """Reads and writes of pushed resources, each in one transaction of the ledger database."""

    def __init__(self, ledger: Database) -> None:
        self.ledger = ledger

    # Reads

    def _resources(self, where: Any) -> list[ScimResource]:
        # Plain columns, not ORM objects: a full read of a push source takes every row.
        with self.ledger.connection() as connection:
            rows = connection.execute(select(*_COLUMNS).where(where).order_by(_R.resource_type, _R.id)).all()
        return [_resource(row) for row in rows]

    def get(self, tenant: str, resource_type: str, resource_id: str) -> ScimResource | None:
        found = self._resources(_key(tenant, resource_type, resource_id))
        return found[0] if found else None

    def find(self, tenant: str, resource_types: Collection[str], column: str | None = None, value: str | None = None
             ) -> list[ScimResource]:
        """The tenant's resources of these types; with `column` (one of NARROWABLE), only those whose column holds
        `value`."""
        where = and_(_R.tenant == tenant, _R.resource_type.in_(resource_types))  # type: ignore[attr-defined]
        if column is not None:
            assert column in NARROWABLE
            where = and_(where, getattr(_R, column) == value)
        return self._resources(where)

    def groups_of(self, tenant: str, user_ids: Collection[str]) -> dict[str, list[tuple[str, str | None]]]:
        """The groups listing each of these users, as (group id, displayName), by group id."""
        joined = select(_M.user_id, _M.group_id, _R.display).join(_R, and_(
            _R.tenant == _M.tenant, _R.resource_type == "Group", _R.id == _M.group_id))  # type: ignore[arg-type]
        where = _M.tenant == tenant
        if len(user_ids) <= ID_LIST_LIMIT:
            where = and_(where, _M.user_id.in_(user_ids))  # type: ignore[attr-defined]
        wanted = set(user_ids)
        found: dict[str, list[tuple[str, str | None]]] = {}
        with self.ledger.connection() as connection:
            for user_id, group_id, display in connection.execute(joined.where(where).order_by(_M.group_id)):
                if user_id in wanted:
                    found.setdefault(user_id, []).append((group_id, display))
        return found

    def source_resources(self, source: str, users: Collection[str] | None = None) -> list[ScimResource]:
        """Every resource the source's tenants pushed; with `users`, every group but only those users (past
        ID_LIST_LIMIT of them, picked from everything)."""
        where = _R.source == source
        if users is None:
            return self._resources(where)
        if len(users) > ID_LIST_LIMIT:
            wanted = set(users)
            return [r for r in self._resources(where) if r.resource_type == "Group" or r.id in wanted]
        return self._resources(and_(where, or_(_R.resource_type == "Group",
                                               _R.id.in_(users))))  # type: ignore[attr-defined]

    def count_users(self, source: str) -> int:
        with self.ledger.connection() as connection:
            return connection.execute(select(func.count()).select_from(_R).where(
                _R.source == source, _R.resource_type == "User")).scalar_one()  # type: ignore[arg-type]

    # Writes. Each raises ValueTaken when a unique key is taken in the source, StaleVersion when `expected` is not
    # the stored version; a resource that does not exist is None.

    def create(self, tenant: str, source: str, record: ScimRecord) -> ScimResource:
        with self.ledger.connection() as connection, _unique():
            connection.execute(insert(_R).values(tenant=tenant, resource_type=record.resource_type, id=record.id,
                                                 source=source, version=1, **_columns(record)))
            _set_members(connection, tenant, record, set())
        return ScimResource(record.resource_type, record.id, record.body, 1)

    def replace(self, tenant: str, resource_type: str, resource_id: str, build: Callable[[ScimResource], ScimRecord],
                expected: int | None = None) -> tuple[ScimResource, ScimResource] | None:
        """Replace a resource with what `build` makes of the stored one, read and written in one transaction;
        returns the stored resource before and after."""
        with self.ledger.connection() as connection, _unique():
            before = _locked(connection, tenant, resource_type, resource_id, expected)
            if before is None:
                return None
            return before, _write(connection, tenant, before, build(before))

    def delete(self, tenant: str, resource_type: str, resource_id: str, expected: int | None = None,
               leave: Callable[[ScimResource], ScimRecord] | None = None
               ) -> tuple[ScimResource, list[ScimResource]] | None:
        """Delete a resource; a User is taken out of the groups listing it in the same transaction, each rewritten
        as `leave` makes it. Returns the deleted resource and the groups rewritten."""
        with self.ledger.connection() as connection, _unique():
            before = _locked(connection, tenant, resource_type, resource_id, expected)
            if before is None:
                return None
            left = []
            if resource_type == "User":
                group_ids = connection.execute(select(_M.group_id).where(
                    _M.tenant == tenant, _M.user_id == resource_id).order_by(_M.group_id)).scalars().all()
                for group_id in group_ids:
                    group = _locked(connection, tenant, "Group", group_id, None)
                    if group is not None and leave is not None:
                        left.append(_write(connection, tenant, group, leave(group)))
                connection.execute(delete(_M).where(_M.tenant == tenant, _M.user_id == resource_id))
            else:
                connection.execute(delete(_M).where(_M.tenant == tenant, _M.group_id == resource_id))
            connection.execute(delete(_R).where(_key(tenant, resource_type, resource_id)))
            return before, left


@contextmanager
def _unique() -> Iterator[None]:
    """A unique index's refusal as ValueTaken, raised inside the transaction (which then rolls back)."""
    try:
        yield
    except IntegrityError:
        raise ValueTaken("a unique value is already taken in this source (by this or another tenant)") from None


def _columns(record: ScimRecord) -> dict[str, Any]:
    return {"body": json.dumps(record.body, sort_keys=True), "updated_at": datetime.now(UTC),
            "unique_key": record.unique_key, "external_key": record.external_key, "display": record.display}


def _locked(connection: Connection, tenant: str, resource_type: str, resource_id: str, expected: int | None
            ) -> ScimResource | None:
    """The stored resource, its row locked until the transaction ends (SQLite: the whole database already is)."""
    row = connection.execute(select(*_COLUMNS).where(_key(tenant, resource_type, resource_id))
                             .with_for_update()).first()
    if row is None:
        return None
    stored = _resource(row)
    if expected is not None and stored.version != expected:
        raise StaleVersion(f"{resource_type} {resource_id} is at version {stored.version}, not {expected}")
    return stored


def _write(connection: Connection, tenant: str, before: ScimResource, record: ScimRecord) -> ScimResource:
    """Write over `before`, only if it is still the stored version."""
    version = before.version + 1
    written = connection.execute(update(_R).where(_key(tenant, before.resource_type, before.id),
                                                  _R.version == before.version)  # type: ignore[arg-type]
                                 .values(version=version, **_columns(record)))
    if written.rowcount != 1:
        raise StaleVersion(f"{before.resource_type} {before.id} changed meanwhile")
    if record.resource_type == "Group":
        current = connection.execute(select(_M.user_id).where(
            _M.tenant == tenant, _M.group_id == record.id)).scalars().all()
        _set_members(connection, tenant, record, set(current))
    return ScimResource(record.resource_type, record.id, record.body, version)


def _set_members(connection: Connection, tenant: str, group: ScimRecord, current: set[str]) -> None:
    """Bring a group's member rows from `current` to the record's members."""
    gone = sorted(current - group.members)
    for chunk in _chunks(gone):
        connection.execute(delete(_M).where(_M.tenant == tenant, _M.group_id == group.id,
                                            _M.user_id.in_(chunk)))  # type: ignore[attr-defined]
    added = [{"tenant": tenant, "group_id": group.id, "user_id": member} for member in sorted(group.members - current)]
    if added:
        connection.execute(insert(_M), added)


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    return (ids[n:n + ID_LIST_LIMIT] for n in range(0, len(ids), ID_LIST_LIMIT))
