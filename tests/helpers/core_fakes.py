"""Fakes at the core's boundary, free of any framework: a ranker that prefers longer answers, a scripted
fuser, and backend calls that answer, fail or stall."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import numpy as np

from blender_core.base.results import Ranking
from blender_core.base.usage import UsageSink, report_usage
from blender_core.ensemble import BackendAnswer
from blender_core.fusion.base import BaseFuser
from blender_core.ranking.aggregation import order_from_scores, ranks_from_scores
from blender_core.ranking.interface import BaseRanker
from blender_core.ranking.judge.chat import ChatReply


class LengthRanker(BaseRanker):
    """The longer answer wins (score = length in characters); records every call's prompts unless
    ``record=False`` (a benchmark's long run, whose memory is measured)."""

    name = "length"

    def __init__(self, record: bool = True) -> None:
        self.record = record
        self.calls: list[tuple[list[str], list[list[str]], str]] = []

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
    ) -> list[Ranking]:
        if self.record:
            self.calls.append((list(prompts), [list(c) for c in candidates], strategy))
        out = []
        for cands in candidates:
            scores = np.array([self.score(k, c) for k, c in enumerate(cands)])
            order = order_from_scores(scores)
            out.append(Ranking(scores, ranks_from_scores(scores), order, order[0], strategy, n_forward=0))
        return out

    def score(self, index: int, text: str) -> float:
        """The score of candidate ``index``: its length (a subclass may score otherwise)."""
        return float(len(text))


class ScriptedFuser(BaseFuser):
    """Fuses by joining its candidates with " + ", streamed word by word.

    ``first_delay`` seconds before the first piece, ``fail_before`` / ``fail_after`` raise before the first
    piece / after it, ``usage`` is reported per call; every call's candidates are recorded.
    """

    name = "scripted"

    def __init__(
        self,
        *,
        first_delay: float = 0.0,
        fail_before: str | None = None,
        fail_after: str | None = None,
        stall_after_first: float = 0.0,
        usage: tuple[int, int] | None = None,
    ) -> None:
        self.first_delay = first_delay
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.stall_after_first = stall_after_first
        self.usage = usage
        self.seen: list[list[str]] = []

    @staticmethod
    def merged(candidates: Sequence[str]) -> str:
        return " + ".join(candidates)

    def fuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        return ["".join(self.stream(i, c, usage_sink=usage_sink)) for i, c in zip(instructions, candidates, strict=True)]

    def _steps(
        self, candidates: Sequence[str], usage_sink: UsageSink | None
    ) -> Iterator[tuple[str | None, float | None]]:
        """The scripted answer as steps, each a piece to yield (None: none) and then seconds to wait (None:
        no wait), raising where the fuser is told to fail; :meth:`stream` and :meth:`astream` play them."""
        self.seen.append(list(candidates))
        yield None, self.first_delay
        if self.fail_before:
            raise RuntimeError(self.fail_before)
        for k, word in enumerate(self.merged(candidates).split(" ")):
            yield (word if k == 0 else " " + word), None
            if self.fail_after:
                raise RuntimeError(self.fail_after)
            if k == 0:
                yield None, self.stall_after_first
        if self.usage:
            report_usage(usage_sink, *self.usage)

    def stream(
        self, instruction: str, candidates: Sequence[str], *, usage_sink: UsageSink | None = None, **kwargs: Any
    ) -> Iterator[str]:
        for piece, wait in self._steps(candidates, usage_sink):
            if piece is not None:
                yield piece
            if wait is not None:
                time.sleep(wait)

    async def astream(
        self, instruction: str, candidates: Sequence[str], *, usage_sink: UsageSink | None = None, **kwargs: Any
    ) -> AsyncIterator[str]:
        for piece, wait in self._steps(candidates, usage_sink):
            if piece is not None:
                yield piece
            if wait is not None:
                await asyncio.sleep(wait)


def answering(
    text: str, *, delay: float = 0.0, usage: dict[str, int] | None = None, fusible: bool = True
) -> Callable[[], BackendAnswer]:
    """A sync backend call that answers ``text`` after ``delay`` seconds."""

    def call() -> BackendAnswer:
        time.sleep(delay)
        return BackendAnswer(text, usage=usage, payload={"text": text}, fusible=fusible)

    return call


def failing(message: str, *, delay: float = 0.0) -> Callable[[], BackendAnswer]:
    def call() -> BackendAnswer:
        time.sleep(delay)
        raise RuntimeError(message)

    return call


def aanswering(text: str, *, delay: float = 0.0, usage: dict[str, int] | None = None) -> Callable[[], Awaitable[BackendAnswer]]:
    """An async backend call that answers ``text`` after ``delay`` seconds."""

    async def call() -> BackendAnswer:
        await asyncio.sleep(delay)
        return BackendAnswer(text, usage=usage, payload={"text": text})

    return call


def afailing(message: str) -> Callable[[], Awaitable[BackendAnswer]]:
    async def call() -> BackendAnswer:
        raise RuntimeError(message)

    return call


# ---------------------------------------------------------------- LLM judges on the plain call interface
def judged_answers(messages: list[dict[str, str]]) -> tuple[str, str, str]:
    """The question and the answers of assistants A and B, read back from a judge call's user message."""
    found = re.search(
        r"\[User Question\]\n(.*)\n\n\[The Start of Assistant A's Answer\]\n(.*)\n\[The End of Assistant A's Answer\]"
        r"\n\n\[The Start of Assistant B's Answer\]\n(.*)\n\[The End of Assistant B's Answer\]\Z",
        messages[-1]["content"],
        re.S,
    )
    assert found is not None, messages
    return found.group(1), found.group(2), found.group(3)


def prefers_longer(answer_a: str, answer_b: str) -> str:
    """A fair judge that prefers the longer answer; it quotes the format before its verdict, as judges do."""
    tag = "[[A]]" if len(answer_a) > len(answer_b) else "[[B]]" if len(answer_b) > len(answer_a) else "[[C]]"
    return f'Following the format ("[[A]]", "[[B]]" or "[[C]]"), my final verdict is: {tag}'


def always(reply: str) -> Callable[[str, str], str]:
    """A judge that answers ``reply`` whatever it is shown (``"[[A]]"``: pure position bias)."""
    return lambda answer_a, answer_b: reply


class ScriptedJudge:
    """A judge chat (``complete`` / ``acomplete``): replies ``verdict(answer_a, answer_b)``.

    Records each call's (question, answer A, answer B) in ``calls`` (``async_calls`` counts the async ones),
    the most calls in flight at once in ``max_active``; waits ``delay`` seconds first (a sync wait ends early
    on :meth:`release`), raises ``error`` instead of answering, reports ``usage`` (input, output) per call.
    """

    name = "scripted-judge"

    def __init__(
        self,
        verdict: Callable[[str, str], str] = prefers_longer,
        *,
        delay: float = 0.0,
        error: str | None = None,
        usage: tuple[int, int] | None = (10, 2),
    ) -> None:
        self.verdict = verdict
        self.delay = delay
        self.error = error
        self.usage = usage
        self.calls: list[tuple[str, str, str]] = []
        self.async_calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._released = threading.Event()

    def release(self) -> None:
        """End the sync calls still waiting out their delay."""
        self._released.set()

    @contextlib.contextmanager
    def _call(self, messages: list[dict[str, str]], is_async: bool) -> Iterator[tuple[str, str, str]]:
        with self._lock:
            self.calls.append(judged_answers(messages))
            self.async_calls += is_async
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            yield self.calls[-1]
        finally:
            with self._lock:
                self.active -= 1

    def _reply(self, answer_a: str, answer_b: str) -> ChatReply:
        if self.error is not None:
            raise RuntimeError(self.error)
        usage = None
        if self.usage is not None:
            usage = {"input_tokens": self.usage[0], "output_tokens": self.usage[1]}
        return ChatReply(self.verdict(answer_a, answer_b), usage)

    def complete(self, messages: list[dict[str, str]]) -> ChatReply:
        with self._call(messages, is_async=False) as (_, a, b):
            self._released.wait(self.delay)
            return self._reply(a, b)

    async def acomplete(self, messages: list[dict[str, str]]) -> ChatReply:
        with self._call(messages, is_async=True) as (_, a, b):
            await asyncio.sleep(self.delay)
            return self._reply(a, b)


# ---------------------------------------------------------------- a local chat model made to answer a text
def forcing_reply(tokenizer: Any, text: str) -> Callable[[int, Any], list[int]]:
    """A ``prefix_allowed_tokens_fn`` for ``generate`` that makes a (random) model write ``text`` and end its
    turn: a verdict from the tiny causal LM. One per generate call (it keeps the prompt's length)."""
    forced = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
    start: list[int] = []  # the prompt's length, seen at the first step

    def allowed(batch_id: int, input_ids: Any) -> list[int]:
        start[:] = start or [len(input_ids)]
        return [forced[min(len(input_ids) - start[0], len(forced) - 1)]]

    return allowed
