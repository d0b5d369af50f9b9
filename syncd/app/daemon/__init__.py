"""`syncd run`: the long-running service. Scheduled jobs, the HTTP endpoint and systemd integration."""

from syncd.app.daemon.service import run

__all__ = ["run"]
