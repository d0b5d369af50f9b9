"""Grouped: concurrent callers' requests served together, for work whose cost is per call rather than per request
(a database commit, a filesystem sync: one fsync for many).

A caller queues its request and waits. Whichever waiting caller takes the leader's turn drains the queue and hands
everything queued so far to `serve` in queue order, then releases every caller with its own result or error. A
request queued while a group is being served waits for the next group. No thread of its own: nothing to start or
stop, and it works in a forked child."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

R = TypeVar("R")  # what a caller asks for


class Request(Generic[R]):
    """One caller's request: `serve` sets its `result` or `error`."""

    __slots__ = ("done", "error", "request", "result")

    def __init__(self, request: R) -> None:
        self.request = request
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class Grouped(Generic[R]):
    """`serve(group)`: serves a group of requests, setting each one's result or error; an exception it raises
    reaches the leader's caller, and the others of its group get it too unless their own error was set."""

    def __init__(self, serve: Callable[[list[Request[R]]], None]) -> None:
        self._serve = serve
        self._queue: list[Request[R]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many requests wait for the next group."""
        return len(self._queue)

    def run(self, request: R) -> Any:
        """Queue `request` and wait until a group served it; its result, or its error raised."""
        mine = Request(request)
        with self._queue_lock:
            self._queue.append(mine)
        while not mine.done:
            with self._leader:  # the leader of the group in flight holds it until its callers are released
                if not mine.done:
                    with self._queue_lock:
                        group, self._queue = self._queue, []
                    self._lead(group)
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _lead(self, group: list[Request[R]]) -> None:
        try:
            self._serve(group)
        except BaseException as error:
            for request in group:
                request.error = request.error or error
            raise
        finally:
            for request in group:
                request.done = True
