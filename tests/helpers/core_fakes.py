"""Fakes at the core's boundary, free of any framework: a ranker that prefers longer answers, a scripted
fuser, and backend calls that answer, fail or stall."""

from __future__ import annotations

import asyncio
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


class LengthRanker(BaseRanker):
    """The longer answer wins (score = length in characters); records every call's prompts."""

    name = "length"

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[list[str]], str]] = []

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
    ) -> list[Ranking]:
        self.calls.append((list(prompts), [list(c) for c in candidates], strategy))
        out = []
        for cands in candidates:
            scores = np.array([float(len(c)) for c in cands])
            order = order_from_scores(scores)
            out.append(Ranking(scores, ranks_from_scores(scores), order, order[0], strategy, n_forward=0))
        return out


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

    def stream(
        self, instruction: str, candidates: Sequence[str], *, usage_sink: UsageSink | None = None, **kwargs: Any
    ) -> Iterator[str]:
        self.seen.append(list(candidates))
        time.sleep(self.first_delay)
        if self.fail_before:
            raise RuntimeError(self.fail_before)
        words = self.merged(candidates).split(" ")
        for k, word in enumerate(words):
            yield word if k == 0 else " " + word
            if self.fail_after:
                raise RuntimeError(self.fail_after)
            if k == 0:
                time.sleep(self.stall_after_first)
        if self.usage:
            report_usage(usage_sink, *self.usage)

    async def astream(
        self, instruction: str, candidates: Sequence[str], *, usage_sink: UsageSink | None = None, **kwargs: Any
    ) -> AsyncIterator[str]:
        self.seen.append(list(candidates))
        await asyncio.sleep(self.first_delay)
        if self.fail_before:
            raise RuntimeError(self.fail_before)
        words = self.merged(candidates).split(" ")
        for k, word in enumerate(words):
            yield word if k == 0 else " " + word
            if self.fail_after:
                raise RuntimeError(self.fail_after)
            if k == 0:
                await asyncio.sleep(self.stall_after_first)
        if self.usage:
            report_usage(usage_sink, *self.usage)


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
