"""Followers of audit log files, for API servers that cannot send to the webhook: each polls its file for new lines,
maps them as the webhook's events (`syncd.core.usage.attribute`) and hands them to the same recorder with the file's
position, which the recorder writes to the ledger with the use read up to there: a restart (a new follower over the
same ledger) starts exactly there, so no event is counted twice nor skipped."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from syncd.adapters.audit_log import AuditLogFile, Position
from syncd.core.usage import Use, attribute
from syncd.runtime.usage import UsageRecorder

log = structlog.get_logger("syncd.audit.file")

Count = Callable[[str, int], None]  # result (received, accepted, ignored, malformed), how many


class AuditFileFollower:
    """Follows `path` (events of `cluster`, syncd's ServiceAccounts' usernames starting with `prefix`) on a thread of
    its own, from the position `cursors` (the ledger's, path -> cursor) holds for it."""

    def __init__(self, cluster: str, path: Path, prefix: str, recorder: UsageRecorder,
                 cursors: Mapping[str, bytes], *, poll_interval: float,
                 count: Count = lambda _result, _n: None) -> None:
        self.cluster, self.path, self.prefix = cluster, path, prefix
        self.key = str(path)
        self._needle = prefix.encode()
        self.recorder = recorder
        self.position = Position.decode(cursors.get(self.key))  # of the last line queued
        self.poll_interval = poll_interval
        self.count = count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"audit-file-{cluster}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop reading; what was read is in the recorder's queue (its close writes it, with the position)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        file: AuditLogFile | None = None
        try:
            while not self._stop.is_set():
                try:
                    if file is None:
                        file = AuditLogFile(self.path, self.position)
                    more = self._step(file)
                except Exception as error:  # a follower never takes the daemon down: it tries again
                    log.error("fail to read the audit log; try again", path=self.key, error=str(error),
                              error_type=type(error).__name__)
                    if file is not None:
                        file.close()
                        file = None  # reopened at the last line queued
                    more = False
                if not more:
                    self._stop.wait(self.poll_interval)
        finally:
            if file is not None:
                file.close()

    def _step(self, file: AuditLogFile) -> bool:
        """Read what is there (one chunk) and queue its use with the position after it; whether more is there."""
        before = file.position
        chunk = file.read()
        if chunk.position == before and not chunk.lines and not chunk.broken:
            return False
        uses, malformed = self._uses(chunk.lines)
        self.count("received", len(chunk.lines))
        self.count("malformed", malformed + chunk.broken)
        self.count("ignored", len(chunk.lines) - malformed - len(uses))
        self.count("accepted", len(uses))
        self.recorder.put(uses, {self.key: chunk.position.encode()})  # waits while the queue is full
        self.position = chunk.position
        return chunk.more

    def _uses(self, lines: list[bytes]) -> tuple[list[Use], int]:
        """The uses among `lines`, and how many lines are no JSON object. A line not naming syncd's ServiceAccounts
        is ignored before it is parsed."""
        uses, malformed = [], 0
        for line in lines:
            if self._needle not in line:
                continue
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                malformed += 1
                continue
            if not isinstance(event, dict):
                malformed += 1
                continue
            use = attribute(event, self.cluster, self.prefix)
            if use is not None:
                uses.append(use)
        return uses, malformed
