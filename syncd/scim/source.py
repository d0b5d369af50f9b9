"""The SCIM push source: what the tenants feeding it pushed to syncd's endpoint, kept in the ledger database."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from syncd.adapters.ledger import Database, ScimResource, ScimStore
from syncd.adapters.scim_pull import snapshot_of
from syncd.config import ScimSourceSettings
from syncd.core.model import Snapshot


class ScimPushSource:
    """What the tenants feeding this source pushed; the endpoint keeps it in the ledger database."""

    def __init__(self, settings: ScimSourceSettings, ledger: Database) -> None:
        self.name = settings.name
        self.store = ScimStore(ledger)

    def read(self) -> Snapshot:
        return self._snapshot(self.store.source_resources(self.name))

    def read_people(self, ids: Collection[str]) -> Snapshot:
        """These users and every group (memberships live on groups): a push's targeted run stays as cheap with
        100,000 people pushed as with ten."""
        snapshot = self._snapshot(self.store.source_resources(self.name, users=ids))
        return replace(snapshot, population=self.store.count_users(self.name))

    def _snapshot(self, resources: list[ScimResource]) -> Snapshot:
        return snapshot_of(self.name, [r.body for r in resources if r.resource_type == "User"],
                           [r.body for r in resources if r.resource_type == "Group"])

    def close(self) -> None:
        pass
