"""Where the engine hands each answered request: its sinks (recorders, loggers, counters).

A sink is any callable taking an :class:`Answered`: the prompt the ranker read, the chat it came from (when the
caller gave it) and the finished :class:`~blender_core.ensemble.outcome.EnsembleOutcome` (every candidate,
ranked, the choice, the fused text). The engine calls its sinks once per answered request, in the request's own
thread or event loop, after the answer is decided and before it is returned (a stream: before its final outcome
is yielded). A request that fails (:class:`~blender_core.ensemble.records.EnsembleError`, a fuser error with the
fallback off) or is abandoned by its caller is not answered, and reaches no sink.

**A sink never fails a request**: an exception it raises is caught, counted (:attr:`Sinks.errors`) and logged once
per burst (the first failure, then once it works again), and the answer goes out. **A sink must not block**: it
runs on the request's path, so it should only hand the record on (``blender_core.recording.TrafficRecorder``
queues it for a writer thread and returns at once).

Example:
    >>> seen = []
    >>> sinks = Sinks([seen.append])
    >>> len(sinks)
    1
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, Field, field_validator

from blender_core.ensemble.outcome import EnsembleOutcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answered:
    """One answered request, as the engine hands it to its sinks.

    Attributes:
        prompt: the instruction text the ranker read (a chat rendered by
            :func:`~blender_core.ensemble.prompts.render_prompt`).
        outcome: the finished outcome: every candidate (failures included), the ranking, the choice, the fused
            text.
        messages: the chat as ``{"role", "content"}`` dicts, when the caller gave it (the adapters do); None
            for a bare prompt.
        ranker: the ranker's name (:func:`~blender_core.ranking.registry.spec_name`).
        time: when it was answered (seconds since the epoch).
    """

    prompt: str
    outcome: EnsembleOutcome
    messages: tuple[Mapping[str, Any], ...] | None = None
    ranker: str | None = None
    time: float = 0.0


class OutcomeSink(Protocol):
    """Anything called with each answered request (it must return quickly and may raise: see the module)."""

    def __call__(self, answered: Answered, /) -> Any: ...


def check_sinks(sinks: Iterable[Any] | None) -> tuple[OutcomeSink, ...]:
    """The sinks as a tuple, each checked to be callable.

    Raises:
        TypeError: a sink that cannot be called, named by its position.
    """
    if sinks is None:
        return ()
    if callable(sinks) or isinstance(sinks, (str, bytes)):
        raise TypeError(
            f"sinks must be a list of callables, got a single {type(sinks).__name__}; pass sinks=[sink]"
        )
    out = tuple(sinks)
    for k, sink in enumerate(out):
        if not callable(sink):
            raise TypeError(
                f"sinks[{k}] is a {type(sink).__name__}, not callable; a sink is called with each answered "
                "request (blender_core.ensemble.sinks.Answered), e.g. blender_core.recording.TrafficRecorder"
            )
    return out


class Sinks:
    """The engine's sinks: :meth:`answered` calls each one, catching whatever it raises."""

    def __init__(self, sinks: Iterable[OutcomeSink] | None = ()) -> None:
        self.sinks = check_sinks(sinks)
        self._lock = threading.Lock()
        self._failing: dict[int, int] = {}  # sink position -> failures in its current burst
        #: calls of a sink that raised, since the engine was built
        self.errors = 0

    def __len__(self) -> int:
        return len(self.sinks)

    def answered(
        self,
        prompt: str,
        outcome: EnsembleOutcome,
        messages: Sequence[Mapping[str, Any]] | None,
        ranker: str | None,
    ) -> None:
        """Hand one answered request to every sink; never raises."""
        if not self.sinks:
            return
        event = Answered(prompt, outcome, tuple(messages) if messages is not None else None, ranker, time.time())
        for k, sink in enumerate(self.sinks):
            try:
                sink(event)
            except Exception as exc:
                self._failed(k, sink, exc)
            else:
                if self._failing:
                    self._recovered(k, sink)

    def _failed(self, k: int, sink: OutcomeSink, exc: Exception) -> None:
        with self._lock:
            self.errors += 1
            first = k not in self._failing
            self._failing[k] = self._failing.get(k, 0) + 1
        if first:  # once per burst: a sink failing on every request must not flood the log
            logger.error(
                "sink %d (%s) failed: %s: %s; the answer went out, and its later failures are counted "
                "(Sinks.errors) without being logged until it works again",
                k,
                _name(sink),
                type(exc).__name__,
                exc,
            )

    def _recovered(self, k: int, sink: OutcomeSink) -> None:
        with self._lock:
            failures = self._failing.pop(k, None)
        if failures is not None:
            logger.warning("sink %d (%s) works again after %d failed calls", k, _name(sink), failures)


def _name(sink: Any) -> str:
    return getattr(sink, "__qualname__", None) or type(sink).__name__


class SinkFields(BaseModel):
    """The ``sinks`` field of both ``BlenderLLM`` adapters (declared once, here)."""

    sinks: list[Any] = Field(
        default_factory=list,
        exclude=True,  # callables: not part of a serialised model
        description="Called with every answered request (blender_core.ensemble.sinks.Answered: the prompt, "
        "the chat, every candidate ranked, the choice), e.g. blender_core.recording.TrafficRecorder; a sink "
        "that raises is logged and counted, never fails the request.",
    )

    @field_validator("sinks", mode="before")
    @classmethod
    def _check(cls, value: Any) -> list[Any]:
        try:
            return list(check_sinks(value))
        except TypeError as exc:  # pydantic reports a ValueError as the field's error
            raise ValueError(str(exc)) from None
