"""Rankers for the sharded and Ray tests, picklable and importable by Ray workers (started in the repository root):
each wraps a real ranker, given by its spec (or a factory), and loads it where it runs.

Some fail on purpose, for the exactly-once tests: faults at the boundary (the ranker a job is given), never in
the engine under test."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from blender_core.base.results import Ranking
from blender_core.ranking import Ranker, load_ranker
from blender_core.ranking.interface import BaseRanker
from blender_core.ranking.registry import spec_name


class Interrupted(Exception):
    """Stands for the run being stopped: not an error ``rank_chunk`` recovers from, so the job stops."""


class _Wrapper(BaseRanker):
    """A ranker given by its spec (anything ``load_ranker`` takes) or by a factory, loaded on first use."""

    def __init__(
        self,
        spec: Any = None,
        options: dict[str, Any] | None = None,
        delay: float = 0.0,
        factory: Callable[[], Ranker] | None = None,
    ) -> None:
        self.spec = spec
        self.options = options or {}
        self.delay = delay
        self.factory = factory
        self.calls = 0
        self._inner: Ranker | None = None
        # the wrapped ranker's name: a job resumed with the unwrapped ranker reuses this one's parts
        self.name = spec_name(spec) if factory is None else getattr(factory, "__name__", "built")

    def inner(self) -> Ranker:
        if self._inner is None:
            self._inner = (
                self.factory() if self.factory is not None else load_ranker(self.spec, **self.options)
            )
        return self._inner

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_inner": None}  # travels as its spec; loaded again where it runs

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
    ) -> list[Ranking]:
        self.calls += 1
        self.on_call()
        time.sleep(self.delay)
        return self.inner().rank(prompts, candidates, strategy=strategy)

    def on_call(self) -> None:
        """What a subclass does at each ``rank`` call (``self.calls`` counts it), before ranking."""


class CrashOnce(_Wrapper):
    """The first process to make its ``crash_on``-th ``rank`` call dies there (``os._exit``), once per ``marker``
    file: a worker killed mid-shard (OOM, a lost machine)."""

    def __init__(self, spec: Any, marker: str, crash_on: int = 2, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.marker = marker
        self.crash_on = crash_on

    def on_call(self) -> None:
        if self.calls == self.crash_on:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)


class InterruptAfter(_Wrapper):
    """Ranks ``calls`` times in each process, then raises :class:`Interrupted`: a run stopped part way."""

    def __init__(self, spec: Any, calls: int, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.limit = calls

    def on_call(self) -> None:
        if self.calls > self.limit:
            raise Interrupted(f"stopped after {self.limit} calls")


class Gate(_Wrapper):
    """Its first ``rank`` call waits until the test opens the gate (``entered`` is set while it waits): a run
    held in the middle, in this process."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.entered = threading.Event()
        self.open = threading.Event()

    def on_call(self) -> None:
        self.entered.set()
        assert self.open.wait(60), "the test never opened the gate"


class Slow(_Wrapper):
    """Waits ``delay`` seconds before each ``rank`` call: a job long enough to be disturbed mid-run."""


class Built(Slow):
    """A ranker built where it runs by a factory (a module-level function): one that cannot be pickled itself,
    such as a judge over a chat client."""

    def __init__(self, factory: Callable[[], Ranker]) -> None:
        super().__init__(factory=factory)


def scripted_judge() -> Ranker:
    """The ``any_ranker`` fixture's judge: a scripted one that prefers the longer answer."""
    from blender_core.ranking import JudgeRanker
    from tests.helpers.core_fakes import ScriptedJudge

    return JudgeRanker(ScriptedJudge())
