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
class BackendRequest:
    """What one call asks of a backend beyond the chat itself (adaptive ensembles).

    Attributes:
        backend: the backend's name.
        sample: which of its ``samples`` answers this is (1-based).
        seed: a seed for this sample (``sample``), for backends that take one; None with one sample.
        layer: the Mixture-of-Agents layer (1-based).
        references: the previous layer's top answers, best first, for the backend to draw on (layer > 1);
            :func:`blender_core.ensemble.prompts.references_prompt` words them.
    """

    backend: str
    sample: int = 1
    seed: int | None = None
    layer: int = 1
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class CandidateRecord:
    """One call's outcome: an answer, the error that dropped it, or why it was cancelled; latency in seconds.

    ``backend`` names the candidate (``name#k`` for the k-th of several samples); ``tier``, ``layer`` and
    ``sample`` say where it came from; ``cost`` is what it cost (None: unknown price or usage)."""

    backend: str
    answer: BackendAnswer | None
    latency_s: float
    error: str | None = None
    cancelled: str | None = None
    tier: int = 1
    layer: int = 1
    cost: float | None = None

    @property
    def ok(self) -> bool:
        return self.answer is not None


class EnsembleError(RuntimeError):
    """Fewer backends answered than ``min_successes``; ``records`` says what each one did."""

    def __init__(self, records: Sequence[CandidateRecord], min_successes: int) -> None:
        self.records = tuple(records)
        ok = sum(r.ok for r in records)
        detail = "; ".join(f"{r.backend}: {r.error or r.cancelled or 'ok'}" for r in records)
        super().__init__(
            f"only {ok} of {len(records)} backends answered, fewer than min_successes={min_successes} ({detail}). "
            "Check the failing backends, raise their timeout, or lower min_successes"
        )
