"""What the SCIM package needs of the database keeping pushed users and groups (`syncd.adapters.ledger.ScimStore`
is the real one, in the ledger database): the endpoint's storage writes through it, the push source reads it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from syncd.adapters.ledger import ScimResource


class PushedResources(Protocol):
    def tenant_resources(self, tenant: str) -> Sequence[ScimResource]:
        """Everything this tenant pushed (the endpoint's storage loads it at start)."""
        ...

    def source_resources(self, source: str, users: Collection[str] | None = None) -> Sequence[ScimResource]:
        """Everything the tenants feeding this source pushed; with `users`, every group but only those users."""
        ...

    def count_users(self, source: str) -> int: ...

    def put(self, tenant: str, source: str, resource: ScimResource) -> None:
        """Insert or replace."""
        ...

    def delete_user(self, tenant: str, source: str, user_id: str, groups: list[ScimResource]) -> None:
        """Delete a user and write the groups that listed it (without it now), in one transaction."""
        ...

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None: ...
