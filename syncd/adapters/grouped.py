"""Grouped: concurrent callers' requests served together, for work whose cost is per call rather than per request
(a database commit, a filesystem sync: one fsync for many).

A caller queues its request and, unless it leads, waits. The leader hands everything queued so far to `serve` in queue
order, wakes every caller of that group with its own result or error, and hands the leader's turn to the first request
queued meanwhile, which serves the next group. Each waiting caller is woken once (waking threads that then find
nothing to do costs the CPU the group saves). No thread of its own: nothing to start or stop, and it works in a
forked child."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

R = TypeVar("R")  # what a caller asks for


class Request(Generic[R]):
    """One caller's request: `serve` sets its `result` or `error`."""

    __slots__ = ("done", "error", "request", "result", "_woken")

    def __init__(self, request: R) -> None:
        self.request = request
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self._woken = threading.Lock()  # held until its caller may go on: served, or to lead the next group
        self._woken.acquire()


class Grouped(Generic[R]):
    """`serve(group)`: serves a group of requests, setting each one's result or error; an exception it raises
    reaches the leader's caller, and the others of its group get it too unless their own error was set."""

    def __init__(self, serve: Callable[[list[Request[R]]], None]) -> None:
        self._serve = serve
        self._queue: list[Request[R]] = []
        self._serving = False  # a leader has the turn: whoever queues meanwhile waits to be woken
        self._turn: Request[R] | None = None  # the request handed the leader's turn, until its caller takes it
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many requests wait for the next group."""
        return len(self._queue)

    def run(self, request: R) -> Any:
        """Queue `request` and wait until a group served it; its result, or its error raised."""
        mine = Request(request)
        with self._lock:
            self._queue.append(mine)
            leading, self._serving = not self._serving, True
        try:
            if not leading:
                mine._woken.acquire()  # noqa: SLF001 - served, or handed the leader's turn
            if not mine.done:
                self._lead()
        except BaseException:
            self._withdraw(mine)  # interrupted (Ctrl-C in the main thread): nobody waits on it
            raise
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _lead(self) -> None:
        """Serve everything queued so far; then wake each caller of the group, and hand the leader's turn to the
        first request queued meanwhile: each waiting caller is woken once."""
        group: list[Request[R]] = []
        try:
            with self._lock:
                group, self._queue, self._turn = self._queue, [], None
            self._serve(group)
        except BaseException as error:
            for request in group:
                request.error = request.error or error
            raise
        finally:
            with self._lock:
                for request in group:
                    request.done = True
                self._pass_turn()
            for request in group:
                request._woken.release()  # noqa: SLF001

    def _pass_turn(self) -> None:
        """Under the lock: the leader's turn to the first queued request, if any."""
        following = self._turn = self._queue[0] if self._queue else None
        self._serving = following is not None
        if following is not None:
            following._woken.release()  # noqa: SLF001

    def _withdraw(self, mine: Request[R]) -> None:
        """An interrupted caller's request leaves the queue (one a group took is served all the same); a leader's
        turn it was handed goes on to the next request."""
        with self._lock:
            if mine in self._queue:
                self._queue.remove(mine)
            if self._turn is mine:
                self._pass_turn()
