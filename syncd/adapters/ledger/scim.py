"""Users and groups identity providers pushed over SCIM, kept in the ledger database so they survive restarts.

Bodies are SCIM JSON as stored by the endpoint, never holding a password.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel, select

from syncd.adapters.ledger.database import ID_LIST_LIMIT, Database


class ScimResourceRow(SQLModel, table=True):
    __tablename__ = "scim_resource"

    tenant: str = Field(primary_key=True, description="The `scim.tenants` entry that pushed it.")
    resource_type: str = Field(primary_key=True, description="User or Group.")
    id: str = Field(primary_key=True, description="The SCIM id syncd gave it; a User's is its person id.")
    source: str = Field(index=True, description="The push source the tenant feeds.")
    body: str = Field(description="The resource as SCIM JSON.")
    updated_at: datetime


_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


@dataclass(frozen=True)
class ScimResource:
    resource_type: str
    id: str
    body: dict


class ScimStore:
    """Reads and writes of pushed resources, through the ledger's engine and error mapping."""

    def __init__(self, ledger: Database) -> None:
        self.ledger = ledger
        insert = _INSERT[ledger.engine.dialect.name](ScimResourceRow)
        self._upsert = insert.on_conflict_do_update(
            index_elements=["tenant", "resource_type", "id"],
            set_={key: insert.excluded[key] for key in ("source", "body", "updated_at")})

    def _resources(self, where: Any) -> list[ScimResource]:
        # Plain columns, not ORM objects: a full read of a push source takes every row.
        columns = (ScimResourceRow.resource_type, ScimResourceRow.id, ScimResourceRow.body)
        with self.ledger.session() as s:
            rows = s.exec(select(*columns).where(where)
                          .order_by(ScimResourceRow.resource_type, ScimResourceRow.id)).all()  # type: ignore[arg-type]
        return [ScimResource(kind, resource_id, json.loads(body)) for kind, resource_id, body in rows]

    def tenant_resources(self, tenant: str) -> list[ScimResource]:
        return self._resources(ScimResourceRow.tenant == tenant)

    def source_resources(self, source: str, users: Collection[str] | None = None) -> list[ScimResource]:
        """Every resource the source's tenants pushed; with `users`, every group but only those users (past
        ID_LIST_LIMIT of them, picked from everything)."""
        where = ScimResourceRow.source == source
        if users is None:
            return self._resources(where)
        if len(users) > ID_LIST_LIMIT:
            wanted = set(users)
            return [r for r in self._resources(where) if r.resource_type == "Group" or r.id in wanted]
        return self._resources(and_(where, or_(ScimResourceRow.resource_type == "Group",
                                               ScimResourceRow.id.in_(users))))  # type: ignore[attr-defined]

    def count_users(self, source: str) -> int:
        with self.ledger.session() as s:
            return s.exec(select(func.count()).select_from(ScimResourceRow).where(
                ScimResourceRow.source == source, ScimResourceRow.resource_type == "User")).one()

    @staticmethod
    def _row(tenant: str, source: str, resource: ScimResource) -> dict[str, Any]:
        return {"tenant": tenant, "resource_type": resource.resource_type, "id": resource.id, "source": source,
                "body": json.dumps(resource.body, sort_keys=True), "updated_at": datetime.now(UTC)}

    def put(self, tenant: str, source: str, resource: ScimResource) -> None:
        """Insert or replace, in one prepared statement (the endpoint's hot path)."""
        with self.ledger.connection() as connection:
            connection.execute(self._upsert, self._row(tenant, source, resource))

    def delete_user(self, tenant: str, source: str, user_id: str, groups: list[ScimResource]) -> None:
        """Delete a user and write the groups that listed it (without it now), in one transaction."""
        with self.ledger.connection() as connection:
            connection.execute(delete(ScimResourceRow).where(
                ScimResourceRow.tenant == tenant, ScimResourceRow.resource_type == "User",  # type: ignore[arg-type]
                ScimResourceRow.id == user_id))  # type: ignore[arg-type]
            if groups:
                connection.execute(self._upsert, [self._row(tenant, source, group) for group in groups])

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None:
        with self.ledger.session() as s:
            row = s.get(ScimResourceRow, (tenant, resource_type, resource_id))
            if row is not None:
                s.delete(row)
