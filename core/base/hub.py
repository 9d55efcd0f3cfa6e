"""The Hugging Face hub arguments every loader passes through (rankers and fusers alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class HubOptions:
    """Arguments passed through to every Hugging Face hub call (``from_pretrained``, ``snapshot_download``)."""

    revision: str | None = None
    cache_dir: str | Path | None = None
    local_files_only: bool = False
    token: str | bool | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "cache_dir": str(self.cache_dir) if self.cache_dir is not None else None,
            "local_files_only": self.local_files_only,
            "token": self.token,
        }
