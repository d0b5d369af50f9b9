"""`syncd run`: the long-running service. Scheduled jobs, the HTTP endpoint and systemd integration."""

from syncd.app.daemon.service import run, serve_audit

__all__ = ["run", "serve_audit"]
