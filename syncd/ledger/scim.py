"""Users and groups identity providers pushed over SCIM, kept in the ledger database so they survive restarts.

Bodies are SCIM JSON as stored by the endpoint, never holding a password.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import Field, SQLModel, select

from syncd.ledger.store import Ledger


class ScimResourceRow(SQLModel, table=True):
    __tablename__ = "scim_resource"

    tenant: str = Field(primary_key=True, description="The `scim.tenants` entry that pushed it.")
    resource_type: str = Field(primary_key=True, description="User or Group.")
    id: str = Field(primary_key=True, description="The SCIM id syncd gave it; a User's is its person id.")
    source: str = Field(index=True, description="The push source the tenant feeds.")
    body: str = Field(description="The resource as SCIM JSON.")
    updated_at: datetime


@dataclass(frozen=True)
class ScimResource:
    resource_type: str
    id: str
    body: dict


class ScimStore:
    """Reads and writes of pushed resources, through the ledger's engine and error mapping."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def tenant_resources(self, tenant: str) -> list[ScimResource]:
        with self.ledger.session() as s:
            rows = s.exec(select(ScimResourceRow).where(ScimResourceRow.tenant == tenant)).all()
        return [ScimResource(r.resource_type, r.id, json.loads(r.body)) for r in rows]

    def source_resources(self, source: str) -> list[ScimResource]:
        with self.ledger.session() as s:
            rows = s.exec(select(ScimResourceRow).where(ScimResourceRow.source == source)
                          .order_by(ScimResourceRow.resource_type, ScimResourceRow.id)).all()  # type: ignore[arg-type]
        return [ScimResource(r.resource_type, r.id, json.loads(r.body)) for r in rows]

    def put(self, tenant: str, source: str, resource: ScimResource) -> None:
        with self.ledger.session() as s:
            row = s.get(ScimResourceRow, (tenant, resource.resource_type, resource.id)) or ScimResourceRow(
                tenant=tenant, resource_type=resource.resource_type, id=resource.id, source=source, body="{}",
                updated_at=datetime.now(UTC))
            row.source = source
            row.body = json.dumps(resource.body, sort_keys=True)
            row.updated_at = datetime.now(UTC)
            s.add(row)

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None:
        with self.ledger.session() as s:
            row = s.get(ScimResourceRow, (tenant, resource_type, resource_id))
            if row is not None:
                s.delete(row)
