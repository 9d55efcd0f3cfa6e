"""Choose the best of several candidate AI messages with the PairRanker: for LangGraph nodes and agents.

Text answers are ranked on their text, tool-call answers on a canonical text form of their calls (see
:mod:`langchain_blender.tool_calls`), so a node that asked several models can keep the best response,
tool calls included.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue

from blender_core.ensemble.engine import USAGE_KEYS, BackendAnswer, CandidateRecord, Ensemble, render_prompt
from blender_core.ensemble.pipeline import Blender
from blender_core.ranking.pair_ranker import PairRanker

from .tool_calls import has_tool_calls, ranking_text

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}

PromptLike = (
    str | PromptValue | Sequence[Any]
)  # a string, a prompt value, or messages (or their dict/tuple forms)


def message_usage(message: BaseMessage) -> dict[str, int] | None:
    """The message's token counts (input/output/total) as a plain dict, or ``None`` if it reported none."""
    usage = getattr(message, "usage_metadata", None)
    if not usage:
        return None
    return {k: int(usage.get(k, 0) or 0) for k in USAGE_KEYS}


def message_answer(message: BaseMessage, payload: Any = None) -> BackendAnswer:
    """A candidate for the core ensemble: the message's text, its ranking text, usage, and a payload
    (default: the message itself) returned as is when it wins."""
    return BackendAnswer(
        text=message.text,
        rank_text=ranking_text(message) if has_tool_calls(message) else None,
        usage=message_usage(message),
        payload=message if payload is None else payload,
    )


def prompt_text(prompt: PromptLike) -> str:
    """The instruction text the ranker reads: a string as is; a chat as turns (see ``render_prompt``)."""
    if isinstance(prompt, str):
        return prompt
    messages = prompt.to_messages() if isinstance(prompt, PromptValue) else convert_to_messages(prompt)
    turns = [(_ROLES.get(m.type, m.type), ranking_text(m) if m.type == "ai" else m.text) for m in messages]
    return render_prompt(turns)


@functools.lru_cache(maxsize=4)
def _load_ranker(name_or_path: str) -> PairRanker:
    return PairRanker.from_pretrained(name_or_path)


def as_blender(ranker: PairRanker | Blender | str | Path | None, strategy: str = "full") -> Blender:
    """A ranking-only core Blender over ``ranker`` (a loaded ranker, a path / hub id, or None for the
    built-in default; names are loaded once per process and reused)."""
    if isinstance(ranker, Blender):
        return ranker
    if ranker is None:
        from blender_core.ranking.builtin import DEFAULT_RANKER

        ranker = DEFAULT_RANKER
    if isinstance(ranker, (str, Path)):
        ranker = _load_ranker(str(ranker))
    if not isinstance(ranker, PairRanker):
        raise TypeError(
            f"ranker must be a PairRanker, a path or hub id, or None; got {type(ranker).__name__}"
        )
    return Blender(ranker, None, top_k=1, strategy=strategy)


def _records(candidates: Sequence[BaseMessage], names: Sequence[str] | None) -> list[CandidateRecord]:
    if isinstance(candidates, BaseMessage) or not isinstance(candidates, Sequence):
        raise TypeError(f"candidates must be a list of AI messages, got {type(candidates).__name__}")
    if not candidates:
        raise ValueError("choose_best_message() got no candidates; pass at least one AI message")
    if names is None:
        names = [f"candidate_{i}" for i in range(len(candidates))]
    if len(names) != len(candidates) or len(set(names)) != len(names):
        raise ValueError(
            f"names must be {len(candidates)} distinct names, one per candidate; got {list(names)}"
        )
    records = []
    for i, (name, message) in enumerate(zip(names, candidates, strict=True)):
        if not isinstance(message, BaseMessage):
            raise TypeError(f"candidate {i} is a {type(message).__name__}; pass AIMessage objects")
        records.append(CandidateRecord(name, message_answer(message), 0.0))
    return records


def choose_best_message(
    prompt_or_messages: PromptLike,
    candidates: Sequence[AIMessage],
    ranker: PairRanker | Blender | str | Path | None = None,
    *,
    strategy: str = "full",
    names: Sequence[str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Rank candidate AI messages for one prompt and return the best one's index and the account.

    Args:
        prompt_or_messages: the prompt (a string, a prompt value, or the chat so far as messages).
        candidates: the AI messages to choose from (text answers or tool calls); never modified.
        ranker: a PairRanker, a path / hub id, a core ``Blender``, or None for the built-in default.
        strategy: ranking strategy (``full``, ``knockout``, ``bubble``, ``sort``).
        names: one name per candidate for the metadata (default ``candidate_0``, ...).

    Returns:
        ``(index, metadata)``: metadata lists every candidate with its score and rank (1 = best), the
        chosen name and the per-candidate usage (the same account as ``response_metadata["blender"]``).

    Example:
        >>> i, meta = choose_best_message(state["messages"], [msg_a, msg_b], ranker)  # doctest: +SKIP
        >>> best = [msg_a, msg_b][i]  # doctest: +SKIP
    """
    prompt = prompt_text(prompt_or_messages)
    records = _records(candidates, names)
    ensemble = Ensemble(as_blender(ranker, strategy))
    outcome = ensemble.select(prompt, records, fuse=False)
    return outcome.blend.best, outcome.metadata()


async def achoose_best_message(
    prompt_or_messages: PromptLike,
    candidates: Sequence[AIMessage],
    ranker: PairRanker | Blender | str | Path | None = None,
    *,
    strategy: str = "full",
    names: Sequence[str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """:func:`choose_best_message` in a worker thread, so ranking never blocks the event loop."""
    return await asyncio.to_thread(
        choose_best_message, prompt_or_messages, candidates, ranker, strategy=strategy, names=names
    )
