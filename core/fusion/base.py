"""The fuser interface: turn an instruction and its top-K candidates into one answer."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from blender_core.base.usage import UsageSink

# The fusion prompt of the LLM fusers (causal LMs and chat models); the seq2seq fuser uses the
# published gen_fuser_3b text format instead (see blender_core.fusion.seq2seq).
FUSION_SYSTEM_PROMPT = (
    "You are given an instruction and several candidate answers written by different assistants. "
    "Write one answer that is better than each of them: keep what is correct and useful, fix mistakes, "
    "drop repetition. Reply with the answer only, without mentioning the candidates."
)


def fusion_messages(instruction: str, candidates: Sequence[str]) -> list[dict[str, str]]:
    """Chat messages asking a model to fuse ``candidates`` into one answer to ``instruction``."""
    body = "\n\n".join(f"Candidate {i + 1}:\n{c}" for i, c in enumerate(candidates))
    user = f"Instruction:\n{instruction}\n\n{body}\n\nWrite the single best answer to the instruction."
    return [{"role": "system", "content": FUSION_SYSTEM_PROMPT}, {"role": "user", "content": user}]


class BaseFuser(ABC):
    """A fuser. Subclasses implement :meth:`fuse` and may override :meth:`stream` and the async variants.

    Inputs are never mutated. ``instructions[k]`` is the full instruction text (instruction + input); the
    candidates come ranked and already chosen (the pipeline's ``top_k``). Every method takes
    ``usage_sink``: a list the fuser appends the token usage of its model calls to (keys of
    :data:`blender_core.base.usage.USAGE_KEYS`), which the engine adds to the ensemble's usage.
    """

    #: a short name recorded in results and metadata
    name: str = "fuser"

    @abstractmethod
    def fuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """One fused answer per instruction from its candidates (already ranked, best first)."""

    def stream(
        self,
        instruction: str,
        candidates: Sequence[str],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> Iterator[str]:
        """Yield the fused answer in pieces; the default yields the whole answer at once."""
        yield self.fuse([instruction], [candidates], usage_sink=usage_sink, **generate_kwargs)[0]

    async def afuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Async :meth:`fuse`; the default runs it in a worker thread so the event loop is not blocked."""
        return await asyncio.to_thread(
            self.fuse, instructions, candidates, usage_sink=usage_sink, **generate_kwargs
        )

    async def astream(
        self,
        instruction: str,
        candidates: Sequence[str],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> AsyncIterator[str]:
        """Async :meth:`stream`; the default drives the sync generator in a worker thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def produce() -> None:
            try:
                for piece in self.stream(instruction, candidates, usage_sink=usage_sink, **generate_kwargs):
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
            except BaseException as exc:  # handed over to the consumer, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

        threading.Thread(target=produce, daemon=True).start()
        while True:
            kind, value = await queue.get()
            if kind == "piece":
                yield value
            elif kind == "error":
                raise value
            else:
                return
