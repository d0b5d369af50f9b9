"""The audit log file follower on real files and the real ledger on SQLite: every line of syncd's ServiceAccounts is
counted exactly once, across rotation by rename, copytruncate, partial lines, malformed lines and restarts (a restart
is a new follower and recorder over the same ledger)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.adapters.audit_log import CHUNK
from syncd.adapters.ledger import Database, Journal, ReadModel
from syncd.config import UsageSettings
from syncd.core.usage import user_prefix
from syncd.ports import AUDIT_FILES
from syncd.runtime.audit_files import AuditFileFollower
from syncd.runtime.usage import UsageLedger, UsageRecorder

NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def line(namespace: str = "team-a", username: str = "system:serviceaccount:syncd:syncd-alice") -> bytes:
    return json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                       "stage": "ResponseComplete", "verb": "list", "user": {"username": username},
                       "objectRef": {"resource": "pods", "namespace": namespace}, "responseStatus": {"code": 200},
                       "requestReceivedTimestamp": NOW, "stageTimestamp": NOW}).encode() + b"\n"


def append(path: Path, *lines: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(b"".join(lines))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


class Following:
    """A follower of `path` and its recorder over `database`, started; `stop` writes what was read to the ledger."""

    def __init__(self, database: Database, path: Path) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        self.recorder = UsageRecorder(lambda: UsageLedger(Journal(database), ReadModel(database)), flush_interval=3600,
                                      queue_batches=4, usage=UsageSettings())
        self.follower = AuditFileFollower("dev", path, user_prefix("syncd"), self.recorder,
                                          ReadModel(database).watch_cursors(AUDIT_FILES), poll_interval=0.02,
                                          count=self._count)
        self.follower.start()

    def _count(self, result: str, times: int) -> None:
        self.counts[result] = self.counts.get(result, 0) + times

    def caught_up(self) -> None:
        """Wait until the follower has read `path` to its last complete line."""
        def done() -> bool:
            position, stat = self.follower.position, self.path.stat()
            size = self.path.read_bytes().rfind(b"\n") + 1
            return position is not None and (position.device, position.inode, position.offset) == (
                stat.st_dev, stat.st_ino, size)

        wait_for(done, f"the follower reads {self.path} to its end")

    def stop(self) -> None:
        self.follower.stop()
        self.recorder.close()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with Database(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    directory = tmp_path / "log"
    directory.mkdir()
    return directory / "audit.log"


def namespaces(database: Database) -> dict[str, int]:
    """Requests per namespace in the ledger."""
    counted: dict[str, int] = {}
    for _, day in ReadModel(database).usage("alice"):
        for name, times in day.namespaces.items():
            counted[name] = counted.get(name, 0) + times
    return counted


def test_lines_are_counted_once_and_a_partial_last_line_waits_for_its_newline(database: Database, log_path: Path):
    append(log_path, line(), line(), line("team-b")[:40])
    following = Following(database, log_path)
    following.caught_up()
    append(log_path, line("team-b")[40:], line(username="admin"))
    following.caught_up()
    following.stop()
    assert namespaces(database) == {"team-a": 2, "team-b": 1}
    assert following.counts == {"received": 4, "accepted": 3, "ignored": 1, "malformed": 0}


def test_a_malformed_line_is_counted_and_skipped(database: Database, log_path: Path):
    ours = b'{"user": {"username": "system:serviceaccount:syncd:syncd-alice"}, broken\n'
    append(log_path, line(), ours, b"[1, 2]\n", line())
    following = Following(database, log_path)
    following.caught_up()
    following.stop()
    assert namespaces(database) == {"team-a": 2}
    assert following.counts["malformed"] == 1  # `[1, 2]` names nobody of syncd's: ignored before it is parsed


def test_a_line_longer_than_a_chunk_is_skipped_and_counted(database: Database, log_path: Path):
    append(log_path, line(), b"x" * (CHUNK + 10) + b"\n", line("team-b"))
    following = Following(database, log_path)
    following.caught_up()
    following.stop()
    assert namespaces(database) == {"team-a": 1, "team-b": 1}
    assert following.counts["malformed"] == 1


def test_rotation_by_rename_finishes_the_old_file_then_reads_the_new_one(database: Database, log_path: Path):
    append(log_path, line(), line())
    following = Following(database, log_path)
    following.caught_up()
    rotated = log_path.with_name("audit-2026-01-01T00-00-00.000.log")
    log_path.rename(rotated)
    append(rotated, line("team-b"))  # the writer had not yet reopened
    log_path.touch()  # created empty: the old file may still grow
    append(rotated, line("team-b"))
    append(log_path, line("team-c"), line("team-c"), line("team-c"))
    following.caught_up()
    following.stop()
    assert namespaces(database) == {"team-a": 2, "team-b": 2, "team-c": 3}


def test_copytruncate_starts_again_at_the_beginning(database: Database, log_path: Path):
    append(log_path, line(), line(), line())
    following = Following(database, log_path)
    following.caught_up()
    shutil.copy(log_path, log_path.with_name("audit.log.1"))
    os.truncate(log_path, 0)
    append(log_path, line("team-b"), line("team-b"), line("team-b"), line("team-b"))  # longer than before
    following.caught_up()
    following.stop()
    assert namespaces(database) == {"team-a": 3, "team-b": 4}


def test_a_restart_reads_on_from_where_the_ledger_says_without_counting_twice(database: Database, log_path: Path):
    append(log_path, line(), line())
    first = Following(database, log_path)
    first.caught_up()
    first.stop()
    append(log_path, line("team-b"))
    second = Following(database, log_path)
    second.caught_up()
    second.stop()
    assert namespaces(database) == {"team-a": 2, "team-b": 1}
    assert second.counts["received"] == 1


def test_a_restart_finishes_a_file_rotated_while_syncd_was_down(database: Database, log_path: Path):
    append(log_path, line())
    first = Following(database, log_path)
    first.caught_up()
    first.stop()
    append(log_path, line("team-b"))
    log_path.rename(log_path.with_name("audit.log.1"))
    append(log_path, line("team-c"))
    second = Following(database, log_path)
    second.caught_up()
    second.stop()
    assert namespaces(database) == {"team-a": 1, "team-b": 1, "team-c": 1}


def test_the_position_is_written_only_with_the_use_read_up_to_it(database: Database, log_path: Path):
    append(log_path, line(), line())
    following = Following(database, log_path)
    following.caught_up()
    assert ReadModel(database).watch_cursors(AUDIT_FILES) == {}  # nothing flushed yet: a crash now reads them again
    following.stop()
    assert set(ReadModel(database).watch_cursors(AUDIT_FILES)) == {str(log_path)}
    assert namespaces(database) == {"team-a": 2}


def test_a_missing_file_is_waited_for(database: Database, log_path: Path):
    following = Following(database, log_path)
    append(log_path, line())
    following.caught_up()
    following.stop()
    assert namespaces(database) == {"team-a": 1}
