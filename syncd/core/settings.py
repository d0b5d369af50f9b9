"""The settings the pure core decides by: durations, token lifetimes, safety limits and the sweep. `syncd.config`
composes them into the whole of `syncd.yaml` and reads the files; nothing here does I/O."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """`90d`, `8h`, `30m`, `45s`, `100ms` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; write e.g. 300ms, 45s, 30m, 8h, 90d or a number of seconds")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenSettings(Strict):
    refresh_at: float = Field(
        0.8, gt=0, lt=1, description="Share of a token's lifetime after which it is refreshed."
    )
    rotation_grace: Duration = Field(
        timedelta(hours=1),
        description="How long a replaced token (refresh or rotation) stays valid after its successor is delivered; "
        "never past its own expiry.",
    )
    confirm_revocation_timeout: Duration = Field(
        timedelta(seconds=60),
        description="How long to poll TokenReview after a revocation until the token is rejected (0 to skip).",
    )


class SweepSettings(Strict):
    """What syncd does with what nobody asked for. `report` lists it as held in every plan instead of acting."""

    orphans: Literal["remove", "report"] = Field(
        "remove", description="Objects under our labels with no person behind them (in the ledger or the source)."
    )
    stale_tokens: Literal["remove", "report"] = Field(
        "remove", description="Token Secrets no ledger credential explains (e.g. left by an interrupted run)."
    )
    drift: Literal["repair", "report"] = Field(
        "repair", description="Bindings deleted or edited by hand."
    )


class SafetySettings(Strict):
    max_revocations: int = Field(
        50, ge=0, description="A run that would revoke more credentials than this stops unless explicitly allowed."
    )
    max_revocation_percent: float = Field(
        25.0, ge=0, le=100, description="Same guard as a share of the credentials currently held."
    )
    targeted_window: Duration = Field(
        timedelta(minutes=10),
        description="Targeted runs (a SCIM push, an incremental poll) count the revocations their source made within "
        "this window toward both limits, so a mass deactivation sent one request at a time is held as well.",
    )
