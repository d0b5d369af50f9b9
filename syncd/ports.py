"""The ports the runtime depends on: what a source, a cluster, delivery, the journal and the read model must do.
Adapters satisfy them structurally; tests satisfy them with in-memory fakes.

A source that cannot read everything says so: a read that fails raises `SourceUnavailable`; a read that skipped
broken entries returns `complete=False` with `problems`. Either way the planner revokes nothing from it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable

from syncd.core.model import Snapshot


class Source(Protocol):
    name: str

    def read(self) -> Snapshot:
        """Everyone, in full. Raises `SourceUnavailable` when the read fails."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class IncrementalSource(Source, Protocol):
    def poll(self) -> Snapshot:
        """Only the people changed since the last `read` or `poll` (a disabled or deleted person comes back with
        `active=False`). The engine reconciles just those people; deletions a poll cannot see wait for `read`."""
        ...


@runtime_checkable
class TargetedSource(Source, Protocol):
    def read_people(self, ids: Collection[str]) -> Snapshot:
        """Only these people, for a targeted run: cheaper than `read`, just as current. Someone missing from
        the answer is gone from the source; `population` counts everyone it holds."""
        ...
