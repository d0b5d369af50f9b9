"""systemd's notification protocol (sd_notify): one datagram per message to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("syncd.daemon")


class Notifier:
    """Sends READY=1, STATUS=..., WATCHDOG=1 and the like; does nothing when not started by systemd."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        # A leading @ names a socket in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._warned = False

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of what systemd allows), or None when no watchdog is set."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                # Never wait for a reader that is behind: a notification is not worth a stuck daemon.
                sock.send("\n".join(fields).encode(), socket.MSG_DONTWAIT)
        except OSError as error:
            if not self._warned:
                log.warning("skip a systemd notification: the socket refuses it", error=error.strerror)
                self._warned = True
