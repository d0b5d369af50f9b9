"""The `Source` port's contract: `FakeSource` and the file source; `TargetedSource`'s: `FakeTargetedSource` and
the SCIM push source over a real ledger."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncd.adapters.file import FileSource
from syncd.adapters.ledger import Database, ScimRecord, ScimStore
from syncd.config import FileSourceSettings, ScimSourceSettings
from syncd.core.model import Identity, Snapshot
from syncd.errors import SourceUnavailable
from syncd.ports import Source, TargetedSource
from syncd.runtime.wiring import pushed_resources
from syncd.scim.source import ScimPushSource
from tests.fakes import FakeSource, FakeTargetedSource, person

PEOPLE = (person("1", "alice", "developers"), person("2", "bob", "developers", "sre"),
          person("3", "carol", active=False))


def essentials(snapshot: Snapshot) -> set[tuple[str, str, frozenset[str], bool]]:
    return {(i.id, i.username, i.groups, i.active) for i in snapshot.identities}


@dataclass
class Held:
    """A source under test and the hands that change what it holds."""

    source: Source
    hold: Callable[[tuple[Identity, ...]], None]  # everyone it holds from now on
    break_one: Callable[[], None]  # one more entry, unreadable
    cut_off: Callable[[], None]  # the source cannot be read at all


class SourceContract:
    @pytest.fixture
    def held(self, tmp_path: Path) -> Iterator[Held]:
        raise NotImplementedError

    def test_a_read_holds_everyone_complete(self, held: Held):
        held.hold(PEOPLE)
        snapshot = held.source.read()
        assert (snapshot.source, snapshot.complete, snapshot.problems) == (held.source.name, True, ())
        assert essentials(snapshot) == essentials(Snapshot("", PEOPLE))

    def test_reads_repeat_and_follow_changes(self, held: Held):
        held.hold(PEOPLE)
        assert essentials(held.source.read()) == essentials(held.source.read())
        held.hold(PEOPLE[1:])
        assert {i.id for i in held.source.read().identities} == {"2", "3"}

    def test_a_broken_entry_makes_the_read_partial(self, held: Held):
        held.hold(PEOPLE)
        held.break_one()
        snapshot = held.source.read()
        assert not snapshot.complete and snapshot.problems
        assert essentials(snapshot) == essentials(Snapshot("", PEOPLE)), "the readable people went missing"

    def test_a_source_that_cannot_be_read_raises(self, held: Held):
        held.hold(PEOPLE)
        held.cut_off()
        with pytest.raises(SourceUnavailable):
            held.source.read()


@pytest.mark.fast
class TestFakeSource(SourceContract):
    @pytest.fixture
    def held(self, tmp_path: Path) -> Iterator[Held]:
        fake = FakeSource("hr")
        yield Held(fake, lambda people: fake.set(*people),
                   lambda: fake.set(*fake.people.values(), problems=("line 5: no username",)), fake.fail)


@pytest.mark.fast
class TestFileSource(SourceContract):
    @pytest.fixture
    def held(self, tmp_path: Path) -> Iterator[Held]:
        path = tmp_path / "people.csv"
        rows: list[dict[str, str]] = []

        def write() -> None:
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, ["id", "username", "groups", "active"])
                writer.writeheader()
                writer.writerows(rows)

        def hold(people: tuple[Identity, ...]) -> None:
            rows[:] = [{"id": p.id, "username": p.username, "groups": ";".join(sorted(p.groups)),
                        "active": str(p.active).lower()} for p in people]
            write()

        def break_one() -> None:
            rows.append({"id": "9", "username": "", "groups": "", "active": "true"})
            write()

        source = FileSource(FileSourceSettings(name="hr", path=path))
        yield Held(source, hold, break_one, lambda: path.unlink())
        source.close()


class TargetedSourceContract:
    @pytest.fixture
    def targeted(self, tmp_path: Path) -> Iterator[tuple[TargetedSource, Callable[[tuple[Identity, ...]], None]]]:
        raise NotImplementedError

    def test_a_targeted_read_holds_just_those_people_and_counts_everyone(self, targeted):
        source, hold = targeted
        hold(PEOPLE)
        snapshot = source.read_people({"2", "gone"})
        assert essentials(snapshot) == essentials(Snapshot("", PEOPLE[1:2]))
        assert (snapshot.source, snapshot.complete, snapshot.population) == (source.name, True, len(PEOPLE))
        assert essentials(source.read()) == essentials(Snapshot("", PEOPLE))


@pytest.mark.fast
class TestFakeTargetedSource(TargetedSourceContract):
    @pytest.fixture
    def targeted(self, tmp_path: Path):
        fake = FakeTargetedSource("idp")
        yield fake, lambda people: fake.set(*people)


@pytest.mark.fast
class TestScimPushSource(TargetedSourceContract):
    @pytest.fixture
    def targeted(self, tmp_path: Path):
        with Database(f"sqlite:///{tmp_path}/ledger.db") as ledger:
            store = ScimStore(ledger)

            def put(record: ScimRecord) -> None:
                if store.replace("okta", record.resource_type, record.id, lambda _: record) is None:
                    store.create("okta", "idp", record)

            def hold(people: tuple[Identity, ...]) -> None:
                for p in people:
                    put(ScimRecord("User", p.id, {"id": p.id, "userName": p.username, "active": p.active}))
                for name in sorted({g for p in people for g in p.groups}):
                    members = [{"value": p.id} for p in people if name in p.groups]
                    put(ScimRecord("Group", f"g-{name}", {"id": f"g-{name}", "displayName": name,
                                                          "members": members}))

            yield ScimPushSource(ScimSourceSettings(name="idp", mode="push"), pushed_resources(ledger)), hold
