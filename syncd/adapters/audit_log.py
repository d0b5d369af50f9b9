"""An audit log file as kube-apiserver's `--audit-log-path` writes it (one JSON event a line), read from where its
reader stopped, across rotation: by rename (its `--audit-log-maxsize`/`maxbackup`, or logrotate), where the rotated
file is read to its end before the new one, and by copytruncate, where the file starts again at 0. Only complete lines
are returned; a partial last line waits for its newline."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

CHUNK = 1 << 20  # bytes read at a time; a line longer than this is skipped (and counted)
HEAD = 1024  # the file's first bytes, hashed: a reused inode or a copytruncate shows as a different head

log = structlog.get_logger("syncd.audit.file")


@dataclass(frozen=True)
class Position:
    """Where a reader stopped: just past the last complete line of the file (device, inode) whose first
    min(offset, HEAD) bytes hash to `head`."""

    device: int
    inode: int
    offset: int
    head: str

    def encode(self) -> bytes:
        return json.dumps({"device": self.device, "inode": self.inode, "offset": self.offset,
                           "head": self.head}).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> Position | None:
        if not data:
            return None
        try:
            fields = json.loads(data)
            return cls(int(fields["device"]), int(fields["inode"]), int(fields["offset"]), str(fields["head"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Chunk:
    lines: list[bytes]  # complete lines, newline stripped
    broken: int  # lines skipped unread: longer than CHUNK, or cut off at the end of a rotated file
    position: Position  # just past them
    more: bool  # more may be read at once (the read stopped at CHUNK bytes, not at the end of the file)


def _head(descriptor: int, length: int) -> str:
    return hashlib.sha256(os.pread(descriptor, min(length, HEAD), 0)).hexdigest()


class AuditLogFile:
    """Reads `path` from `start` (None: from the beginning). Not thread-safe: one reader."""

    def __init__(self, path: Path, start: Position | None) -> None:
        self.path = path
        self._descriptor: int | None = None
        self._identity = (0, 0)
        self._offset = 0
        self._skipping = False  # inside a line longer than CHUNK
        self._head = ""  # of the file as read so far (see Position)
        self._start = start

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    @property
    def position(self) -> Position:
        return Position(*self._identity, self._offset, self._head)

    def read(self) -> Chunk:
        """The complete lines written since the last read (at most about CHUNK bytes of them); none while the file
        does not exist. Raises OSError when it cannot be read."""
        if self._descriptor is None and not self._open_first():
            return Chunk([], 0, self.position, False)
        self._notice_truncation()
        before = self._offset
        lines, broken, more = self._read_lines()
        if before < HEAD and self._offset != before:
            self._head = _head(self._descriptor, self._offset)  # type: ignore[arg-type]
        if not lines and not broken and not more:
            broken = self._follow_rotation()
        return Chunk(lines, broken, self.position, more)

    def _open(self, path: Path, offset: int) -> None:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.close()
        stat = os.fstat(descriptor)
        self._descriptor, self._identity, self._offset, self._skipping = (
            descriptor, (stat.st_dev, stat.st_ino), offset, False)
        self._head = _head(descriptor, offset)

    def _open_first(self) -> bool:
        """Open the file the start position names (the current one, or a rotated one still beside it) at its
        offset, else the current file from its beginning. False while there is no file."""
        start, self._start = self._start, None
        if start is not None:
            found = self._find(start)
            if found is not None:
                self._open(found, start.offset)
                return True
            log.warning("read the audit log from its beginning: the file its cursor names is gone",
                        path=str(self.path), inode=start.inode)
        try:
            self._open(self.path, 0)
        except FileNotFoundError:
            self._start = start
            return False
        return True

    def _find(self, start: Position) -> Path | None:
        candidates = [self.path]
        with contextlib.suppress(OSError):
            candidates += sorted(p for p in self.path.parent.iterdir() if p != self.path)
        for candidate in candidates:
            try:
                stat = candidate.stat()
                if (stat.st_dev, stat.st_ino) != (start.device, start.inode) or stat.st_size < start.offset:
                    continue
                descriptor = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if _head(descriptor, start.offset) == start.head:
                    return candidate
            finally:
                os.close(descriptor)
        return None

    def _read_lines(self) -> tuple[list[bytes], int, bool]:
        assert self._descriptor is not None
        data = os.pread(self._descriptor, CHUNK, self._offset)
        overlong = 0
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                self._offset += len(data)
                return [], 0, len(data) == CHUNK
            self._offset += end + 1
            self._skipping, overlong, data = False, 1, data[end + 1:]
        last = data.rfind(b"\n")
        if last < 0:
            if len(data) == CHUNK:  # a line longer than CHUNK: skip to its end
                self._offset += len(data)
                self._skipping = True
                return [], overlong, True
            return [], overlong, False
        self._offset += last + 1
        return data[:last].split(b"\n"), overlong, len(data) == CHUNK

    def _notice_truncation(self) -> None:
        """Start again at 0 if the file was truncated (copytruncate) or rewritten in place since the last read: it is
        shorter than what was read, or begins differently."""
        assert self._descriptor is not None
        if not self._offset:
            return
        if os.fstat(self._descriptor).st_size < self._offset or _head(self._descriptor, self._offset) != self._head:
            log.info("read the audit log again from its beginning: it was truncated", path=str(self.path))
            self._offset, self._skipping, self._head = 0, False, _head(self._descriptor, 0)

    def _follow_rotation(self) -> int:
        """At the end of the file: move to the file now at `path` if ours was renamed away and the new one has been
        written to (until then, ours may still grow). How many lines that left unread: 1 when the rotated file ends
        in a partial line, else 0."""
        assert self._descriptor is not None
        stat = os.fstat(self._descriptor)
        try:
            current = self.path.stat()
        except FileNotFoundError:
            return 0
        if (current.st_dev, current.st_ino) == self._identity or current.st_size == 0:
            return 0
        cut_off = int(stat.st_size > self._offset or self._skipping)
        log.info("follow the rotated audit log to the new file", path=str(self.path), cut_off_lines=cut_off)
        self._open(self.path, 0)
        return cut_off
