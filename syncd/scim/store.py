"""What the SCIM package needs of the database keeping pushed users and groups (`syncd.adapters.ledger.ScimStore`
is the real one, in the ledger database): the endpoint's storage reads and writes through it on every request, the
push source reads it. Writes raise `ValueTaken` (a unique key taken in the tenant) and `StaleVersion` (`expected`
is not the stored version); a resource that does not exist is None."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from syncd.adapters.ledger import ScimRecord, ScimResource


class PushedResources(Protocol):
    def get(self, tenant: str, resource_type: str, resource_id: str) -> ScimResource | None: ...

    def find(self, tenant: str, resource_types: Collection[str], column: str | None = None, value: str | None = None
             ) -> Sequence[ScimResource]:
        """The tenant's resources of these types; with `column` (id, unique_key or external_key), only those whose
        column holds `value`."""
        ...

    def groups_of(self, tenant: str, user_ids: Collection[str]) -> dict[str, list[tuple[str, str | None]]]:
        """The groups listing each of these users, as (group id, displayName)."""
        ...

    def source_resources(self, source: str, users: Collection[str] | None = None) -> Sequence[ScimResource]:
        """Everything the tenants feeding this source pushed; with `users`, every group but only those users."""
        ...

    def count_users(self, source: str) -> int: ...

    def create(self, tenant: str, source: str, record: ScimRecord) -> ScimResource: ...

    def replace(self, tenant: str, resource_type: str, resource_id: str, build: Callable[[ScimResource], ScimRecord],
                expected: int | None = None) -> tuple[ScimResource, ScimResource] | None:
        """Replace a resource with what `build` makes of the stored one, in one transaction: (before, after)."""
        ...

    def delete(self, tenant: str, resource_type: str, resource_id: str, expected: int | None = None,
               leave: Callable[[ScimResource], ScimRecord] | None = None
               ) -> tuple[ScimResource, list[ScimResource]] | None:
        """Delete a resource; a User leaves its groups (each rewritten by `leave`) in the same transaction."""
        ...
