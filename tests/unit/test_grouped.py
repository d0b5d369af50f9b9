"""Grouped: whoever leads serves every request queued so far; each caller gets its own result or error."""

import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from syncd.adapters.grouped import Grouped, Request


class Server:
    """Serves requests (numbers) by doubling them; the first group is held until released, so that the requests
    made meanwhile queue behind it. A request of -1 fails alone; a group holding 99 fails whole."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.first_under_way, self.release = threading.Event(), threading.Event()
        self.grouped: Grouped[int] = Grouped(self.serve)

    def serve(self, group: list[Request[int]]) -> None:
        self.groups.append([request.request for request in group])
        if len(self.groups) == 1:
            self.first_under_way.set()
            assert self.release.wait(10)
        if 99 in self.groups[-1]:
            raise OSError("the whole group failed")
        for request in group:
            if request.request == -1:
                request.error = ValueError("this one failed")
            else:
                request.result = 2 * request.request

    def queued(self) -> int:
        return self.grouped.waiting


def _until(condition) -> None:  # type: ignore[no-untyped-def]
    while not condition():
        threading.Event().wait(0.001)


def _held_then(server: Server, requests: list[int]) -> list:
    """Run request 0 (held), then `requests` concurrently while it is; each one's result or exception."""
    def run(request: int) -> object:
        try:
            return server.grouped.run(request)
        except Exception as error:  # noqa: BLE001
            return error

    with ThreadPoolExecutor(len(requests) + 1) as pool:
        first = pool.submit(run, 0)
        assert server.first_under_way.wait(10)
        rest = [pool.submit(run, request) for request in requests]
        _until(lambda: server.queued() >= len(requests))
        server.release.set()
        return [first.result(), *(future.result() for future in rest)]


def test_requests_queued_while_a_group_is_served_are_served_together_next():
    server = Server()
    results = _held_then(server, list(range(1, 9)))
    assert results == [2 * n for n in range(9)]
    assert server.groups[0] == [0] and sorted(server.groups[1]) == list(range(1, 9)) and len(server.groups) == 2


def test_a_request_that_fails_fails_alone():
    server = Server()
    results = _held_then(server, [1, -1, 2])
    assert results[0] == 0 and results[1] == 2 and results[3] == 4
    assert isinstance(results[2], ValueError)


def test_a_group_that_fails_fails_every_caller_in_it_and_no_later_one():
    server = Server()
    results = _held_then(server, [1, 99, 2])
    assert results[0] == 0
    assert all(isinstance(result, OSError) for result in results[1:])
    assert server.grouped.run(3) == 6


def test_a_caller_alone_leads_its_own_group():
    server = Server()
    server.release.set()
    assert [server.grouped.run(n) for n in (5, 6)] == [10, 12]
    assert server.groups == [[5], [6]]


def test_every_caller_gets_its_own_result_however_the_groups_form():
    callers = 64
    server = Server()
    server.release.set()
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(server.grouped.run, range(callers))) == [2 * n for n in range(callers)]
    assert sorted(n for group in server.groups for n in group) == list(range(callers))


class Interrupted(BaseException):
    """What Ctrl-C raises in the main thread, here from a timer's signal handler."""


def _main_thread_interrupted(server: Server, handler) -> tuple[object, BaseException | None]:  # type: ignore[no-untyped-def]
    """Hold request 0; queue 7 from the main thread, then 8 from another, and let `handler` (run by a signal while
    the main thread waits) interrupt the wait. Request 8's result (None if it was never served), and what the main
    thread's run raised."""
    first = Future()  # type: ignore[var-annotated]
    later = Future()  # type: ignore[var-annotated]

    def queue_after_main() -> None:
        _until(lambda: server.queued() >= 1)
        later.set_result(server.grouped.run(8))

    previous = signal.signal(signal.SIGALRM, lambda *_: handler())
    try:
        # Daemon threads: a caller left waiting forever fails the test instead of hanging it.
        threading.Thread(target=lambda: first.set_result(server.grouped.run(0)), daemon=True).start()
        assert server.first_under_way.wait(10)
        threading.Thread(target=queue_after_main, daemon=True).start()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        raised = None
        try:
            server.grouped.run(7)
        except Interrupted as error:
            raised = error
        server.release.set()
        assert first.result(10) == 0
        try:
            return later.result(10), raised
        except TimeoutError:
            return None, raised
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_caller_interrupted_while_it_waits_is_never_served_and_the_others_go_on():
    server = Server()

    def interrupt() -> None:
        _until(lambda: server.queued() == 2)
        raise Interrupted

    later, raised = _main_thread_interrupted(server, interrupt)
    assert isinstance(raised, Interrupted) and later == 16
    assert server.groups == [[0], [8]]


def test_a_caller_interrupted_once_handed_the_leaders_turn_hands_it_on():
    server = Server()

    def interrupt() -> None:
        _until(lambda: server.queued() == 2)
        server.release.set()  # the held group ends; its leader hands the turn to the first queued: the main thread's
        _until(lambda: server.grouped._turn is not None)  # noqa: SLF001
        raise Interrupted

    later, raised = _main_thread_interrupted(server, interrupt)
    assert isinstance(raised, Interrupted) and later == 16
    assert server.groups == [[0], [8]]
