"""Pushed users and groups, behind scim2-server's public storage interface (`AsyncScimStorage`), kept in the ledger
database and read from it on every call: no process keeps a copy, so every syncd process on the ledger answers as one
server. A write checks, in its own transaction, that the resource is still at the version it read (the server reads it
first), so a process never writes back a stale body; ETags are the database's versions; unique values (a userName, a
group's displayName, per tenant) are a unique index. Calls run on the event loop without awaiting: a write holds the
loop for its commit, which measured faster than handing each write to a thread.

A search narrows by SQL what an `eq` on id, userName, displayName or externalId (what identity providers send) can
match, else reads the tenant's resources of the searched types; scim2-server's in-memory storage, built for that one
call, then filters, sorts and pages them as scim2-server does.

Memberships live on groups. A user's `groups` (read-only, RFC 7643 4.1.2) is never stored: reads fill it from the
groups listing the user, and deleting a user takes it out of those groups in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
from scim2_models import (
    Meta,
    NotFoundException,
    Path,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimFilter,
    ScimProvider,
    SearchRequest,
    UniquenessException,
)
from scim2_models.path import CompareOperator, Comparison
from scim2_server.conditions import opaque_tag
from scim2_server.memory import InMemoryStorage
from scim2_server.storage import AsyncScimStorage, SearchPage, search_page
from scim2_server.utils import parametrize

from syncd.adapters.ledger import ScimRecord, ScimResource
from syncd.adapters.scim_pull import snapshot_of
from syncd.core.lifecycle import Membership, identity_touches, membership_touches
from syncd.core.model import Identity
from syncd.core.policy import Policy
from syncd.errors import StaleVersion, ValueTaken
from syncd.scim.store import PushedResources

log = structlog.get_logger("syncd.scim")

# The attribute each type keeps unique in a tenant (a unique index in the database).
_UNIQUE = {"User": "userName", "Group": "displayName"}

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
    """One tenant's resources, in the ledger database."""

    supports_cursors = InMemoryStorage.supports_cursors

    def __init__(self, store: PushedResources, tenant: str, source: str, provider: ScimProvider,
                 relevance: Relevance, on_change: OnChange) -> None:
        self.store, self.tenant, self.source = store, tenant, source
        self.relevance, self.on_change = relevance, on_change
        self.policy = provider.policy
        self.models = {rt.name: provider.model_for(rt) for rt in provider.resource_types}
        # What the database indexes of each type: column -> the attribute's binding.
        self.indexed = {name: {column: parametrize(Path, model)(attribute).resolve()
                               for column, attribute in (("id", "id"), ("external_key", "externalId"),
                                                         ("unique_key", _UNIQUE.get(name)))
                               if attribute is not None}
                        for name, model in self.models.items()}

    @staticmethod
    def _as_stored(resource: Resource[Any]) -> Resource[Any]:
        # Passwords are write-only in SCIM and have no use here: never kept, not even in memory. A user's groups
        # come from the groups (`_with_groups`).
        for derived in ("password", "groups"):
            if getattr(resource, derived, None) is not None:
                resource = resource.model_copy(update={derived: None})
        return resource

    def _served(self, stored: ScimResource) -> Resource[Any]:
        resource = self.models[stored.resource_type].model_validate(stored.body)
        assert resource.meta is not None
        resource.meta.version = f'W/"{stored.version}"'
        return resource

    def _record(self, resource: Resource[Any]) -> ScimRecord:
        """A resource as written: its body (the version is the database's) and the keys the database indexes."""
        kind = str(_type_of(resource))
        keys = {}
        for column, binding in self.indexed[kind].items():
            if column != "id":
                try:
                    keys[column] = binding.comparable(getattr(resource, binding.target_field_name, None), self.policy)
                except ValueError:  # a string the policy cannot compare equals nothing
                    keys[column] = None
        group = kind == "Group"
        return ScimRecord(kind, str(resource.id), resource.model_dump(), **keys,
                          display=getattr(resource, "display_name", None) if group else None,
                          members=frozenset(_members(resource)) if group else frozenset())

    def _with_groups(self, resources: list[Resource[Any]]) -> list[Resource[Any]]:
        """Users as they are read: their `groups` are the groups whose members list them."""
        users = [str(r.id) for r in resources if _type_of(r) == "User"]
        listed = self.store.groups_of(self.tenant, users) if users else {}
        for resource in resources:
            if _type_of(resource) == "User":
                # Dicts, validated by the provider's own User model (built from the schemas it serves).
                resource.groups = [{"value": gid, "$ref": f"Groups/{gid}", "display": display, "type": "direct"}
                                   for gid, display in listed.get(str(resource.id), ())] or None
        return resources

    # Reads

    async def get(self, resource_type: ResourceType, resource_id: str, *,
                  response_parameters: ResponseParameters[Any] | None = None) -> Resource[Any]:
        stored = self.store.get(self.tenant, resource_type.name, resource_id)
        if stored is None:
            raise NotFoundException(detail=f"{resource_type.name} {resource_id!r} not found")
        return self._with_groups([self._served(stored)])[0]

    async def search(self, resource_types: list[ResourceType], search_request: SearchRequest[Any], *,
                     position: Any = None) -> SearchPage:
        names = list(dict.fromkeys(rt.name for rt in resource_types))
        found = self.store.find(self.tenant, names, *self._narrowed(names, search_request.filter))
        matched = InMemoryStorage()
        matched.resources = [self._served(r) for r in found]
        page = search_page(matched, resource_types, search_request, position)
        page.resources = self._with_groups(page.resources)
        return page

    def _narrowed(self, names: list[str], scim_filter: ScimFilter[Any] | None) -> tuple[str, str] | tuple[()]:
        """The indexed column and key an `eq` filter on one type compares, if it is one."""
        if len(names) != 1 or scim_filter is None or scim_filter.model is None:
            return ()
        node = scim_filter.ast
        if not isinstance(node, Comparison) or node.op != CompareOperator.eq or not isinstance(node.value, str):
            return ()
        binding = scim_filter.resolve_comparison(node.attr_path, strict=False)
        for column, indexed in self.indexed.get(names[0], {}).items():
            if binding is not None and binding.urn == indexed.urn:
                try:
                    return column, indexed.comparable(node.value, self.policy)
                except ValueError:
                    return ()
        return ()

    # Writes

    def _changed(self, resource_type: ResourceType, before: Resource[Any] | None, after: Resource[Any] | None,
                 verb: str) -> None:
        resource = after or before
        log.info(f"{verb} a SCIM {resource_type.name}", tenant=self.tenant, source=self.source,
                 id=resource.id if resource else None)
        people = self.relevance.touched(resource_type.name, before, after)
        if people:
            self.on_change(self.source, people)

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        created = self._as_stored(resource).model_copy(deep=True)
        created.id = uuid.uuid4().hex
        now = datetime.now(UTC)
        created.meta = Meta(resource_type=resource_type.name, created=now, last_modified=now)
        with _refused():
            stored = self.store.create(self.tenant, self.source, self._record(created))
        created.meta.version = f'W/"{stored.version}"'
        self._changed(resource_type, None, created, "create")
        return created

    async def update(self, resource_type: ResourceType, resource: Resource[Any], *,
                     expected_version: str | None = None) -> Resource[Any]:
        new = self._as_stored(resource)

        def build(stored: ScimResource) -> ScimRecord:
            meta = self._served(stored).meta
            assert meta is not None
            updated = type(new).model_validate(new.model_dump())
            updated.meta = meta.model_copy(update={"location": None, "last_modified": datetime.now(UTC),
                                                   "version": None})
            return self._record(updated)

        with _refused():
            written = self.store.replace(self.tenant, resource_type.name, str(resource.id), build,
                                         _version(expected_version))
        if written is None:
            raise NotFoundException(detail=f"{resource_type.name} {resource.id!r} not found")
        before, after = (self._served(r) for r in written)
        self._changed(resource_type, before, after, "update")
        return self._with_groups([after])[0]

    async def delete(self, resource_type: ResourceType, resource_id: str, *,
                     expected_version: str | None = None) -> None:
        with _refused():
            deleted = self.store.delete(self.tenant, resource_type.name, resource_id, _version(expected_version),
                                        leave=partial(self._without_member, resource_id))
        if deleted is None:
            raise NotFoundException(detail=f"{resource_type.name} {resource_id!r} not found")
        before, left = deleted
        if left:
            log.info("remove a deleted SCIM User from its groups", tenant=self.tenant, source=self.source,
                     id=resource_id, groups=[g.id for g in left])
        self._changed(resource_type, self._served(before), None, "delete")

    def _without_member(self, user_id: str, group: ScimResource) -> ScimRecord:
        served = self._served(group)
        assert served.meta is not None
        without = served.model_copy(update={
            "members": [m for m in getattr(served, "members", None) or [] if m.value != user_id] or None,
            "meta": served.meta.model_copy(update={"last_modified": datetime.now(UTC), "version": None})})
        return self._record(without)


@contextmanager
def _refused() -> Iterator[None]:
    """The database's refusals as SCIM errors: a taken unique value 409, a version written meanwhile 412."""
    try:
        yield
    except ValueTaken as taken:
        raise UniquenessException(detail=taken.message) from None
    except StaleVersion:
        raise PreconditionFailedException from None


def _version(etag: str | None) -> int | None:
    """The database version an ETag names (-1, which no resource has, for one this storage never gave)."""
    if etag is None:
        return None
    tag = opaque_tag(etag)
    return int(tag) if tag.isdigit() else -1


def _type_of(resource: Resource[Any]) -> str | None:
    """The name of a stored resource's type (meta.resourceType, which the storage fills)."""
    return resource.meta.resource_type if resource.meta else None
