"""What a backend answered, and what became of each backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendAnswer:
    """What one backend answered.

    Attributes:
        text: the answer text.
        rank_text: the text the ranker reads (e.g. a canonical form of tool calls); defaults to ``text``.
        usage: token usage with keys among ``input_tokens``, ``output_tokens``, ``total_tokens``.
        payload: the framework's own message object, returned as is if this answer is chosen.
        fusible: whether a fuser may merge this answer (tool calls may not: they are returned, never fused).
    """

    text: str
    rank_text: str | None = None
    usage: Mapping[str, int] | None = None
    payload: Any = None
    fusible: bool = True

    @property
    def ranked_text(self) -> str:
        return self.text if self.rank_text is None else self.rank_text


@dataclass(frozen=True)
class CandidateRecord:
    """One backend's outcome: an answer, or the error that dropped it; latency in seconds."""

    backend: str
    answer: BackendAnswer | None
    latency_s: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.answer is not None


class EnsembleError(RuntimeError):
    """Fewer backends answered than ``min_successes``; ``records`` says what each one did."""

    def __init__(self, records: Sequence[CandidateRecord], min_successes: int) -> None:
        self.records = tuple(records)
        ok = sum(r.ok for r in records)
        detail = "; ".join(f"{r.backend}: {r.error or 'ok'}" for r in records)
        super().__init__(
            f"only {ok} of {len(records)} backends answered, fewer than min_successes={min_successes} ({detail}). "
            "Check the failing backends, raise their timeout, or lower min_successes"
        )
