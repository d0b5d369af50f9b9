"""`usage.alert_command`: a command run with each anomaly as JSON on stdin, one at a time on a thread of its own, so
that neither the audit webhook nor the flusher ever waits on it. A bounded queue (beyond, dropped), a timeout per run
(then its process group is killed); failures are logged and counted, never raised."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence

import structlog

log = structlog.get_logger("syncd.alert")

STDERR_LIMIT = 500  # characters of a failed run's stderr in its log line


class AlertCommand:
    def __init__(self, argv: Sequence[str], *, timeout: float, queue_size: int,
                 on_result: Callable[[str], None] = lambda result: None) -> None:
        """`on_result` is told each anomaly's fate: ok, failed, timeout or dropped."""
        self.argv = list(argv)
        self.timeout = timeout
        self.on_result = on_result
        self._queue: queue.Queue[dict | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="alert", daemon=True)
        self._thread.start()

    def offer(self, anomaly: dict) -> None:
        try:
            self._queue.put_nowait(anomaly)
        except queue.Full:
            log.error("drop an alert: alert_command is behind", kind=anomaly.get("kind"),
                      queued=self._queue.qsize())
            self.on_result("dropped")

    def close(self) -> None:
        """Run what is queued (each within the timeout), then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (anomaly := self._queue.get()) is not None:
            try:
                result = self._alert(anomaly)
            except Exception as error:  # an alert never takes the receiver down
                log.error("fail to run alert_command", command=self.argv[0], error=str(error),
                          error_type=type(error).__name__)
                result = "failed"
            self.on_result(result)

    def _alert(self, anomaly: dict) -> str:
        data = json.dumps(anomaly, sort_keys=True).encode()
        try:
            process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, start_new_session=True)
        except OSError as error:
            log.error("fail to run alert_command", command=self.argv[0], error=error.strerror)
            return "failed"
        with process:
            try:
                _, stderr = process.communicate(data, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its session: whatever it started goes with it
                process.communicate()
                log.error("kill alert_command: it outran its timeout", command=self.argv[0], timeout=self.timeout,
                          kind=anomaly.get("kind"))
                return "timeout"
        if process.returncode != 0:
            log.error("fail to alert: alert_command exited non-zero", command=self.argv[0],
                      exit_code=process.returncode, stderr=stderr.decode(errors="replace")[-STDERR_LIMIT:],
                      kind=anomaly.get("kind"))
            return "failed"
        log.info("send an anomaly to alert_command", command=self.argv[0], kind=anomaly.get("kind"))
        return "ok"
