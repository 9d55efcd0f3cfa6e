"""Choose the best of several candidate AI messages with a ranker: for LangGraph nodes and agents.

Text answers are ranked on their text, tool-call answers on a canonical text form of their calls (see
:mod:`langchain_blender.tool_calls`), so a node that asked several models can keep the best response,
tool calls included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from blender_core.ensemble import CandidateRecord, Ensemble, EnsembleConfig
from blender_core.ranking.registry import RankerSpec

from .messages import PromptLike, message_answer, prompt_text


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
    ranker: RankerSpec = None,
    *,
    strategy: str = "full",
    names: Sequence[str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Rank candidate AI messages for one prompt and return the best one's index and the account.

    Args:
        prompt_or_messages: the prompt (a string, a prompt value, or the chat so far as messages).
        candidates: the AI messages to choose from (text answers or tool calls); never modified.
        ranker: a ranker, a folder / hub id / built-in name (loaded once per process), or None for the
            default ranker.
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
    outcome = Ensemble(ranker, None, EnsembleConfig(strategy=strategy)).select(prompt, records)
    return outcome.blend.best, outcome.metadata()


async def achoose_best_message(
    prompt_or_messages: PromptLike,
    candidates: Sequence[AIMessage],
    ranker: RankerSpec = None,
    *,
    strategy: str = "full",
    names: Sequence[str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """:func:`choose_best_message` in a worker thread, so ranking never blocks the event loop."""
    return await asyncio.to_thread(
        choose_best_message, prompt_or_messages, candidates, ranker, strategy=strategy, names=names
    )
