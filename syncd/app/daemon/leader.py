"""Which replica runs the scheduled jobs: a thread takes part in the leader election (the leader renews every third
of the lease, a follower looks every sixth); `leads()` is what every scheduled job asks before it runs."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import structlog

from syncd.config import LeaderSettings
from syncd.core.leadership import LeaseRecord, leads_until
from syncd.errors import SyncdError
from syncd.ports import LeaderLease

log = structlog.get_logger("syncd.daemon")


class Leadership:
    """This replica's part in the election. `on_lead` runs (on the election thread) each time it becomes leader."""

    def __init__(self, lease: LeaderLease, settings: LeaderSettings, on_lead: Callable[[], None],
                 on_change: Callable[[bool], None]) -> None:
        self.lease = lease
        self.ttl = settings.lease
        self.me = settings.id or f"{socket.gethostname()}:{os.getpid()}"
        self.on_lead, self.on_change = on_lead, on_change
        self.holder = ""  # who leads, as last seen
        self._until = 0.0  # monotonic time until which this replica may act as leader
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._elect, name="leader-election", daemon=True)

    def leads(self) -> bool:
        """Whether this replica runs the scheduled jobs now."""
        return time.monotonic() < self._until

    def view(self) -> dict:
        """For /readyz: who leads, and this replica's role."""
        return {"backend": self.lease.backend, "id": self.me, "holder": self.holder or None,
                "role": "leader" if self.leads() else "follower"}

    def start(self) -> None:
        """Take part once now (a replica starting alone leads before its first job), then every third of the lease."""
        self.step()
        self._thread.start()

    def step(self) -> None:
        was = self.leads()
        started = time.monotonic()
        try:
            record: LeaseRecord = self.lease.step(self.me, self.ttl)
        except SyncdError as error:
            log.warning("take part in the leader election", error=str(error), leads=was)
        else:
            self.holder = record.holder
            if record.holder == self.me:
                self._until = leads_until(started, self.ttl)
        now = self.leads()
        if now != was:
            self.on_change(now)
            if now:
                log.info("lead the scheduled jobs", id=self.me, backend=self.lease.backend)
                self.on_lead()
            elif self.holder == self.me:
                log.warning("stop leading: the lease could not be renewed in time", id=self.me)
            else:
                log.warning("follow: another replica runs the scheduled jobs", id=self.me, leader=self.holder or None)

    def _elect(self) -> None:
        # The leader renews every third of the lease; a follower looks twice as often, so that it takes over
        # at most a sixth of the lease after the lease expires.
        while not self._stop.wait(self.ttl.total_seconds() / (3 if self.leads() else 6)):
            self.step()

    def stop(self) -> None:
        """Stop taking part and hand the lease over at once if held."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.leads():
            self._until = 0.0
            self.lease.release(self.me)
        self.lease.close()
