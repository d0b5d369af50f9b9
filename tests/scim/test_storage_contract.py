"""The endpoint's storage keeps scim2-server's storage contract (`AsyncScimStorageContract`), served the way the
endpoint serves it (syncd's provider and its quirks policy), reading and writing a SQLite ledger; and a new storage
on that ledger serves what the first one wrote."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from scim2_models import ScimProvider, SearchRequest
from scim2_server.testing import AsyncScimStorageContract

from syncd.adapters.ledger import Database
from syncd.core.policy import Policy
from syncd.runtime.wiring import pushed_resources
from syncd.scim.app import scim_provider
from syncd.scim.storage import LedgerStorage, Relevance

NO_RULES = Relevance(Policy.model_validate({"rules": []}))


TENANTS = (f"tenant-{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One ledger for the module (opening one migrates it); each test's storage is a tenant of its own."""
    with Database(f"sqlite:///{tmp_path_factory.mktemp('ledger')}/ledger.db") as opened:
        yield opened


def ledger_storage(ledger: Database, provider: ScimProvider, tenant: str = "okta") -> LedgerStorage:
    # Each tenant feeds a source of its own: uniqueness holds per source.
    return LedgerStorage(pushed_resources(ledger), tenant, f"idp-{tenant}", provider, NO_RULES,
                         lambda source, people: None)


class TestLedgerStorageContract(AsyncScimStorageContract):
    @pytest.fixture
    def provider(self) -> ScimProvider:
        return scim_provider()

    @pytest.fixture
    def async_storage(self, ledger: Database, provider: ScimProvider) -> LedgerStorage:
        return ledger_storage(ledger, provider, next(TENANTS))


def test_a_restarted_storage_serves_what_was_written(ledger: Database):
    provider = scim_provider()
    user_type, group_type = (next(rt for rt in provider.resource_types if rt.id == name) for name in ("User", "Group"))
    User, Group = provider.model_for(user_type), provider.model_for(group_type)  # noqa: N806

    async def write() -> None:
        storage = ledger_storage(ledger, provider)
        ann, bob = [await storage.create(user_type, User(user_name=name)) for name in ("ann", "bob")]
        group = await storage.create(group_type, Group(display_name="sre", members=[{"value": ann.id},
                                                                                       {"value": bob.id}]))
        await storage.update(user_type, ann.model_copy(update={"display_name": "Ann"}))
        await storage.delete(user_type, bob.id)
        assert (await storage.get(group_type, group.id)).members[0].value == ann.id

    async def everything(storage: LedgerStorage) -> list[dict]:
        page = await storage.search([user_type, group_type], SearchRequest())
        return sorted((r.model_dump() for r in page.resources), key=lambda r: r["id"])

    async def check() -> None:
        first, again = ledger_storage(ledger, provider), ledger_storage(ledger, provider)
        served = await everything(first)
        assert served == await everything(again)
        assert sorted(r.get("userName") or r["displayName"] for r in served) == ["ann", "sre"]
        ann = next(r for r in served if r.get("userName") == "ann")
        assert ann["displayName"] == "Ann" and [g["display"] for g in ann["groups"]] == ["sre"]
        # Versions go on from the last one stored: a write after a restart never reuses an ETag.
        versions = {r["meta"]["version"] for r in served}
        updated = await again.update(user_type, User.model_validate(ann).model_copy(update={"title": "x"}))
        assert updated.meta.version not in versions

    asyncio.run(write())
    asyncio.run(check())
