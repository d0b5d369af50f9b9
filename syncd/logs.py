"""Structured logs: one event per change, JSON when stderr is not a terminal. Tokens are masked as a last resort."""

from __future__ import annotations

import logging
import re
import sys

import structlog

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def _mask_tokens(_logger, _name, event_dict):  # type: ignore[no-untyped-def]
    for key, value in event_dict.items():
        if isinstance(value, str) and "eyJ" in value:
            event_dict[key] = _JWT.sub("[token]", value)
    return event_dict


class _Stderr:
    """Whatever sys.stderr is when a line is written: a progress bar on the terminal stands in for it while it shows
    (so log lines print above the bar), and a test's capture while the test runs."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask_tokens,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
