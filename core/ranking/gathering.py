"""Cross-request batching: the rank calls of concurrent requests gathered into one batched forward pass.

A ranker that runs a model sends each call's work (PairRM: its comparisons) through a :class:`Gatherer`.
A call that finds the model idle and nobody waiting runs at once, alone: no added latency. Calls that
arrive while a forward pass runs wait for it; when it ends, the first of them gathers the calls that
arrived within its window (``window_s`` from its own arrival) up to ``max_calls`` calls, and runs them all
as one call of the forward-pass engine, which sorts everything by length and batches it together. Each
call gets its own values back, exactly those it gets alone: a PairRM logit does not depend on what else
its batch holds (see :data:`blender_core.ranking.pairrm.modeling_pairrm.HEAD_ROWS`). When a gathered run
fails, each of its calls runs again alone, so that one call's error stays that call's.

Gathering serves whoever calls the ranker concurrently: the server, the adapters' ``batch`` / ``abatch``,
threads calling the sync engine. The engine passes its ``rank_batch_window_ms`` / ``rank_max_batch``.

Example:
    >>> gather = Gatherer(lambda items: np.array([float(len(x)) for x in items]))
    >>> gather(["ab", "c"], Gathering(window_s=0.005, max_calls=8)).tolist()  # alone: runs at once
    [2.0, 1.0]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Gathering:
    """How a rank call may be gathered with concurrent ones.

    Attributes:
        window_s: how long a waiting call waits, from its arrival, for others to join its batch.
        max_calls: the most calls one batch gathers (1: never gathered; the call runs as without this).
    """

    window_s: float = 0.0
    max_calls: int = 16

    def __post_init__(self) -> None:
        if not (self.window_s >= 0 and self.window_s < float("inf")):
            raise ValueError(
                f"Gathering.window_s must be a finite number of seconds >= 0, got {self.window_s!r}"
            )
        if isinstance(self.max_calls, bool) or not isinstance(self.max_calls, int) or self.max_calls < 1:
            raise ValueError(f"Gathering.max_calls must be an int >= 1, got {self.max_calls!r}")


class _Ticket(Generic[T]):
    """One waiting call: its items, when it arrived, and once served its values or error."""

    __slots__ = ("arrived", "done", "error", "items", "value")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.arrived = time.perf_counter()
        self.done = False
        self.value: np.ndarray | None = None
        self.error: BaseException | None = None

    def result(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


class Gatherer(Generic[T]):
    """Runs ``run(items) -> values`` (one value per item) for concurrent callers, gathering them.

    Args:
        run: the forward-pass engine: values for a list of items, each value independent of the others.

    Attributes:
        runs: how many times ``run`` was called for gathered batches (lone calls not counted).
        largest: the most calls one gathered batch held so far.
    """

    def __init__(self, run: Callable[[list[T]], np.ndarray]) -> None:
        self._run = run
        self._cond = threading.Condition()
        self._busy = False
        self._queue: list[_Ticket[T]] = []
        self.runs = 0
        self.largest = 0

    def __call__(self, items: Sequence[T], gathering: Gathering) -> np.ndarray:
        """The values of ``items``, run alone at once when nothing else runs, else gathered with others."""
        items = list(items)
        if gathering.max_calls <= 1:
            return self._run(items)
        ticket: _Ticket[T] = _Ticket(items)
        with self._cond:
            if not self._busy and not self._queue:  # alone: no window, no hand-over
                self._busy = True
                lone = True
            else:
                lone = False
                self._queue.append(ticket)
                self._cond.notify_all()  # a leader waiting for its batch to fill counts it
                while not ticket.done and (self._busy or self._queue[0] is not ticket):
                    self._cond.wait()
                if ticket.done:
                    return ticket.result()
                self._busy = True  # first in line and the model is free: this call leads the batch
        if lone:
            try:
                return self._run(items)
            finally:
                self._release()
        try:
            self._run_batch(self._take(ticket, gathering))
        finally:
            self._release()
        return ticket.result()

    def _take(self, leader: _Ticket[T], gathering: Gathering) -> list[_Ticket[T]]:
        """The leader's batch: the calls waiting once its window is over or the batch is full."""
        deadline = leader.arrived + gathering.window_s
        with self._cond:
            while len(self._queue) < gathering.max_calls:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = self._queue[: gathering.max_calls]
            del self._queue[: gathering.max_calls]
        return batch

    def _run_batch(self, batch: list[_Ticket[T]]) -> None:
        ends = np.cumsum([len(t.items) for t in batch])
        try:
            values = self._run([x for t in batch for x in t.items])
        except Exception:  # one call's bad input must not fail the others: each runs again alone
            for t in batch:
                try:
                    t.value = self._run(t.items)
                except Exception as exc:
                    t.error = exc
        else:
            for t, stop, start in zip(batch, ends, [0, *ends[:-1]], strict=True):
                t.value = values[start:stop]
        finally:  # whatever happened, no caller is left waiting
            with self._cond:
                self.runs += 1
                self.largest = max(self.largest, len(batch))
                for t in batch:
                    if t.value is None and t.error is None:
                        t.error = RuntimeError("the gathered rank call was interrupted; call rank() again")
                    t.done = True

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()
