"""Pushed users and groups, behind scim2-server's public storage interface (`AsyncScimStorage`): its in-memory
storage (filters, paging, uniqueness, versions) as a cache in front of the ledger database, written through on every
change and loaded back at start. Calls run on the event loop without awaiting: a write holds the loop for its commit
(about 1 ms on SQLite), which measured faster than handing each write to a thread.

Memberships live on groups. A user's `groups` (read-only, RFC 7643 4.1.2) is never stored: reads fill it from the
groups listing the user, and deleting a user takes it out of those groups in the same transaction."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import structlog
from scim2_models import Resource, ResourceType, ResponseParameters, ScimProvider, SearchRequest
from scim2_server.memory import InMemoryStorage
from scim2_server.storage import AsyncScimStorage, SearchPage

from syncd.adapters.ledger import ScimResource
from syncd.adapters.scim_pull import snapshot_of
from syncd.core.lifecycle import Membership, identity_touches, membership_touches
from syncd.core.model import Identity
from syncd.core.policy import Policy
from syncd.scim.store import PushedResources

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


class LedgerStorage(AsyncScimStorage):
    """One tenant's resources. A write reaches the ledger database before it is answered; if it cannot, the
    cache goes back to what it was and the request fails."""

    supports_cursors = InMemoryStorage.supports_cursors

    def __init__(self, store: PushedResources, tenant: str, source: str, provider: ScimProvider,
                 relevance: Relevance, on_change: OnChange) -> None:
        self.store, self.tenant, self.source = store, tenant, source
        self.relevance, self.on_change = relevance, on_change
        types = {rt.name: rt for rt in provider.resource_types}
        self.group_type = types["Group"]
        loaded = [provider.model_for(types[r.resource_type]).model_validate(r.body)
                  for r in store.tenant_resources(tenant) if r.resource_type in types]
        self.cache = InMemoryStorage()
        self.cache.resources = loaded
        last = max((int(m.group(1)) for r in loaded if r.meta and r.meta.version
                    and (m := _VERSION.search(r.meta.version))), default=0)
        self.cache.versions = itertools.count(last + 1)
        self.lock = self.cache.lock
        self.member_of: dict[str, set[str]] = {}  # user id -> ids of the groups listing it
        self.group_names: dict[str, str | None] = {}  # group id -> displayName
        self._index_groups()

    @staticmethod
    def _as_stored(resource: Resource[Any]) -> Resource[Any]:
        # Passwords are write-only in SCIM and have no use here: never kept, not even in memory. A user's groups
        # come from the groups (`_with_groups`).
        for derived in ("password", "groups"):
            if getattr(resource, derived, None) is not None:
                resource = resource.model_copy(update={derived: None})
        return resource

    # The groups' memberships, indexed by user.

    def _index_groups(self) -> None:
        self.member_of, self.group_names = {}, {}
        for resource in self.cache.resources:
            if _type_of(resource) == "Group":
                self._index(resource)

    def _index(self, group: Resource[Any]) -> None:
        for member in _members(group):
            self.member_of.setdefault(member, set()).add(str(group.id))
        self.group_names[str(group.id)] = getattr(group, "display_name", None)

    def _unindex(self, group: Resource[Any]) -> None:
        for member in _members(group):
            self.member_of.get(member, set()).discard(str(group.id))
        self.group_names.pop(str(group.id), None)

    def _with_groups(self, resource: Resource[Any]) -> Resource[Any]:
        """A user (a copy) as it is read: its `groups` are the groups whose members list it."""
        if _type_of(resource) != "User":
            return resource
        found = sorted(self.member_of.get(str(resource.id), ()))
        # Dicts, validated by the provider's own User model (built from the schemas it serves).
        resource.groups = [{"value": gid, "$ref": f"Groups/{gid}", "display": self.group_names[gid],
                            "type": "direct"} for gid in found] or None
        return resource

    def _put_back(self, before: dict[tuple[str, str], Resource[Any] | None]) -> None:
        """After a failed write: the cache as it was before it, `before` holding each resource the write touched
        (None: it did not exist). Rebuilt in full through the cache's public interface: only failures pay for it."""
        kept = [r for r in self.cache.resources if (_type_of(r), str(r.id)) not in before]
        self.cache.resources = kept + [r for r in before.values() if r is not None]
        self._index_groups()

    # Reads

    async def get(self, resource_type: ResourceType, resource_id: str, *,
                  response_parameters: ResponseParameters[Any] | None = None) -> Resource[Any]:
        with self.lock:
            return self._with_groups(self.cache.get(resource_type, resource_id))

    async def search(self, resource_types: list[ResourceType], search_request: SearchRequest[Any], *,
                     position: Any = None) -> SearchPage:
        with self.lock:
            page = self.cache.search(resource_types, search_request, position=position)
            page.resources = [self._with_groups(r) for r in page.resources]
            return page

    # Writes

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

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        with self.lock:
            created = self.cache.create(resource_type, self._as_stored(resource))
            try:
                self._persist(resource_type, created)
            except BaseException:
                self._put_back({(resource_type.name, str(created.id)): None})
                raise
            if resource_type.name == "Group":
                self._index(created)
        self._changed(resource_type, None, created, "create")
        return created

    async def update(self, resource_type: ResourceType, resource: Resource[Any], *,
                     expected_version: str | None = None) -> Resource[Any]:
        with self.lock:
            before = self.cache.get(resource_type, str(resource.id))
            updated = self.cache.update(resource_type, self._as_stored(resource), expected_version=expected_version)
            try:
                self._persist(resource_type, updated)
            except BaseException:
                self._put_back({(resource_type.name, str(before.id)): before})
                raise
            if resource_type.name == "Group":
                self._unindex(before)
                self._index(updated)
        self._changed(resource_type, before, updated, "update")
        return self._with_groups(updated)

    async def delete(self, resource_type: ResourceType, resource_id: str, *,
                     expected_version: str | None = None) -> None:
        with self.lock:
            before = self.cache.get(resource_type, resource_id)
            self.cache.delete(resource_type, resource_id, expected_version=expected_version)
            if resource_type.name == "User":
                self._delete_member(before)
            else:
                try:
                    self.store.delete(self.tenant, resource_type.name, resource_id)
                except BaseException:
                    self._put_back({(resource_type.name, resource_id): before})
                    raise
                self._unindex(before)
        self._changed(resource_type, before, None, "delete")

    def _delete_member(self, user: Resource[Any]) -> None:
        """Delete a user (already gone from the cache) from the ledger database and from every group listing it,
        in one transaction."""
        user_id = str(user.id)
        groups = [self.cache.get(self.group_type, gid) for gid in sorted(self.member_of.get(user_id, ()))]
        try:
            left = [self.cache.update(self.group_type, group.model_copy(update={
                "members": [m for m in group.members or [] if m.value != user_id] or None})) for group in groups]
            self.store.delete_user(self.tenant, self.source, user_id,
                                   [ScimResource("Group", str(g.id), g.model_dump()) for g in left])
        except BaseException:
            self._put_back({("User", user_id): user} | {("Group", str(g.id)): g for g in groups})
            raise
        for group, without in zip(groups, left, strict=True):
            self._unindex(group)
            self._index(without)
        if left:
            log.info("remove a deleted SCIM User from its groups", tenant=self.tenant, source=self.source,
                     id=user_id, groups=[g.id for g in left])


def _type_of(resource: Resource[Any]) -> str | None:
    """The name of a stored resource's type (meta.resourceType, which the storage fills)."""
    return resource.meta.resource_type if resource.meta else None
