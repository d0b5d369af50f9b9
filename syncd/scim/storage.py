"""Pushed users and groups: scim2-server's in-memory storage (filters, paging, uniqueness, versions) as a cache in
front of the ledger database, written through on every change and loaded back at start. The app serves it through
scim2-server's AsyncInMemoryStorage, on the event loop: a write holds the loop for its commit (about 1 ms on SQLite),
which measured faster than handing each write to a thread.

Memberships live on groups. A user's `groups` (read-only, RFC 7643 4.1.2) is never stored: reads fill it from the
groups listing the user, and deleting a user takes it out of those groups in the same transaction."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from scim2_models import Resource, ResourceType, ScimProvider
from scim2_server.memory import InMemoryStorage, Key, _key
from scim2_server.storage import SearchPage

from syncd.adapters.ledger import ScimResource, ScimStore
from syncd.adapters.scim_pull import snapshot_of
from syncd.core.lifecycle import Membership, identity_touches, membership_touches
from syncd.core.model import Identity
from syncd.core.policy import Policy

log = structlog.get_logger("syncd.scim")

_VERSION = re.compile(r'(\d+)"?$')

# Called with the resource type and the person ids a change touches.
OnChange = Callable[[str, frozenset[str]], None]


def _members(resource: Resource[Any] | None) -> set[str]:
    return {m.value for m in getattr(resource, "members", None) or [] if m.value}


def _identity(resource: Resource[Any] | None) -> Identity | None:
    found = snapshot_of("", [resource.model_dump()], []).identities if resource is not None else ()
    return found[0] if found else None


def _membership(resource: Resource[Any] | None) -> Membership | None:
    if resource is None:
        return None
    return Membership(getattr(resource, "display_name", None), frozenset(_members(resource)))


class Relevance:
    """Which changes can alter someone's access under the policy, so that only those cost a reconcile: resources
    become people and groups here, and the lifecycle decides."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def touched(self, resource_type: str, before: Resource[Any] | None, after: Resource[Any] | None
                ) -> frozenset[str]:
        if resource_type == "User":
            return identity_touches(self.policy, _identity(before), _identity(after))
        return membership_touches(_membership(before), _membership(after))


class LedgerStorage(InMemoryStorage):
    """One tenant's resources. A write reaches the ledger database before it is answered; if it cannot, the
    in-memory state goes back to what it was and the request fails."""

    def __init__(self, store: ScimStore, tenant: str, source: str, provider: ScimProvider,
                 relevance: Relevance, on_change: OnChange) -> None:
        super().__init__()
        self.store, self.tenant, self.source = store, tenant, source
        self.relevance, self.on_change = relevance, on_change
        types = {rt.name: rt for rt in provider.resource_types}
        self.group_type = types["Group"]
        loaded = [provider.model_for(types[r.resource_type]).model_validate(r.body)
                  for r in store.tenant_resources(tenant) if r.resource_type in types]
        self.member_of: dict[str, set[str]] = {}  # user id -> ids of the groups listing it; kept by _store/_remove
        self.resources = loaded
        last = max((int(m.group(1)) for r in loaded if r.meta and r.meta.version
                    and (m := _VERSION.search(r.meta.version))), default=0)
        self.versions = itertools.count(last + 1)

    @staticmethod
    def _as_stored(resource: Resource[Any]) -> Resource[Any]:
        # Passwords are write-only in SCIM and have no use here: never kept, not even in memory. A user's groups
        # come from the groups (`_with_groups`).
        for derived in ("password", "groups"):
            if getattr(resource, derived, None) is not None:
                resource = resource.model_copy(update={derived: None})
        return resource

    def _store(self, resource: Resource[Any], values: dict[str, Any]) -> None:
        super()._store(resource, values)
        if _key(resource)[0] == "Group":
            for member in _members(resource):
                self.member_of.setdefault(member, set()).add(str(resource.id))

    def _remove(self, key: Key) -> None:
        if key[0] == "Group":
            for member in _members(self._resources.get("Group", {}).get(key[1])):
                self.member_of.get(member, set()).discard(key[1])
        super()._remove(key)

    def _with_groups(self, resource: Resource[Any]) -> Resource[Any]:
        """A copy of a user as it is read: its `groups` are the groups whose members list it."""
        if _key(resource)[0] != "User":
            return resource
        groups = self._resources.get("Group", {})
        found = sorted(self.member_of.get(str(resource.id), ()))
        # Dicts, validated by the provider's own User model (built from the schemas it serves).
        resource.groups = [{"value": gid, "$ref": f"Groups/{gid}", "display": groups[gid].display_name,
                            "type": "direct"} for gid in found] or None
        return resource

    def get(self, resource_type: ResourceType, resource_id: str, **kwargs: Any) -> Resource[Any]:
        with self.lock:
            return self._with_groups(super().get(resource_type, resource_id, **kwargs))

    def search(self, *args: Any, **kwargs: Any) -> SearchPage:
        with self.lock:
            page = super().search(*args, **kwargs)
            page.resources = [self._with_groups(r) for r in page.resources]
            return page

    @contextmanager
    def _restoring(self, resource_type: ResourceType, resource_id: str | None) -> Iterator[Resource[Any] | None]:
        """Yield the stored resource (or None); put it back if the block fails. Stored resources are replaced,
        never changed in place, so holding on to it is enough."""
        before = self._resources.get(resource_type.name, {}).get(resource_id or "")
        try:
            yield before
        except BaseException:
            if before is not None:
                self._store(before, self._values_of(before))
            raise

    def _changed(self, resource_type: ResourceType, before: Resource[Any] | None, after: Resource[Any] | None,
                 verb: str) -> None:
        resource = after or before
        log.info(f"{verb} a SCIM {resource_type.name}", tenant=self.tenant, source=self.source,
                 id=resource.id if resource else None)
        people = self.relevance.touched(resource_type.name, before, after)
        if people:
            self.on_change(self.source, people)

    def _persist(self, resource_type: ResourceType, resource: Resource[Any]) -> None:
        self.store.put(self.tenant, self.source, ScimResource(resource_type.name, str(resource.id),
                                                              resource.model_dump()))

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        with self.lock:
            created = super().create(resource_type, self._as_stored(resource))
            try:
                self._persist(resource_type, created)
            except BaseException:
                self._remove(_key(created))
                raise
        self._changed(resource_type, None, created, "create")
        return created

    def update(self, resource_type: ResourceType, resource: Resource[Any], *,
               expected_version: str | None = None) -> Resource[Any]:
        with self.lock, self._restoring(resource_type, resource.id) as before:
            updated = super().update(resource_type, self._as_stored(resource), expected_version=expected_version)
            self._persist(resource_type, updated)
        self._changed(resource_type, before, updated, "update")
        return self._with_groups(updated)

    def delete(self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None) -> None:
        with self.lock, self._restoring(resource_type, resource_id) as before:
            super().delete(resource_type, resource_id, expected_version=expected_version)
            if resource_type.name == "User":
                self._delete_member(resource_id)
            else:
                self.store.delete(self.tenant, resource_type.name, resource_id)
        self._changed(resource_type, before, None, "delete")

    def _delete_member(self, user_id: str) -> None:
        """Delete a user from the ledger database and from every group listing it, in one transaction."""
        groups = [self._resources["Group"][gid] for gid in sorted(self.member_of.get(user_id, ()))]
        try:
            left = [super(LedgerStorage, self).update(self.group_type, group.model_copy(update={
                "members": [m for m in group.members or [] if m.value != user_id] or None})) for group in groups]
            self.store.delete_user(self.tenant, self.source, user_id,
                                   [ScimResource("Group", str(g.id), g.model_dump()) for g in left])
        except BaseException:
            for group in groups:
                self._store(group, self._values_of(group))
            raise
        if left:
            log.info("remove a deleted SCIM User from its groups", tenant=self.tenant, source=self.source,
                     id=user_id, groups=[g.id for g in left])
