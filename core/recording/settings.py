"""Every setting of the traffic recorder, declared once: :class:`RecordSettings` (the server's ``[record]``
section is it, with unknown keys refused; :class:`~blender_core.recording.TrafficRecorder` takes it or the same
names as keywords).

Example:
    >>> RecordSettings(path="traffic", sample=0.1).rotate_bytes
    67108864
    >>> RecordSettings(drop_matching=["(unclosed"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for RecordSettings
    drop_matching
      Value error, drop_matching item 0 ('(unclosed') is not a regular expression (missing ), ...
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RecordSettings(BaseModel):
    """Where and what the traffic recorder writes (the one declaration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(
        default=None,
        description="The folder the traffic files go to (created when missing); none: nothing is recorded.",
    )
    # 64 MiB: a few thousand requests of a few candidates, quick to list, label and ship
    rotate_bytes: int = Field(
        default=64 << 20, ge=1, strict=True, description="Start a new file before one would pass this size."
    )
    # an hour: files of a known period, closed and ready for label-pairs while the server goes on
    rotate_seconds: float | None = Field(
        default=3600.0, gt=0, description="Start a new file once one is this old (none: by size only)."
    )
    sample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="The share of answered requests recorded, drawn at random (1: every one).",
    )
    drop_matching: list[str] = Field(
        default_factory=list,
        description="Regular expressions (Python's re, searched): a request whose messages, prompt, candidates "
        "or answer match any of them is not recorded, only counted (redacted). The server adds its own and its "
        "upstreams' keys.",
    )
    # about a second of traffic at a busy server's rate; a full queue drops (and counts), never waits
    queue_size: int = Field(
        default=1024,
        ge=1,
        strict=True,
        description="Answered requests waiting for the writer thread; past it a request is dropped and counted "
        "(queue_full), never waited for.",
    )

    @field_validator("drop_matching")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for k, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"drop_matching item {k} ({pattern!r}) is not a regular expression ({exc}); escape it "
                    "(re.escape) to match the text literally"
                ) from None
        return value

    def recorder_settings(self) -> dict[str, Any]:
        """These settings by name."""
        return {name: getattr(self, name) for name in RecordSettings.model_fields}
