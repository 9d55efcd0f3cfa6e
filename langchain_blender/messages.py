"""LangChain messages to and from the engine: the prompt text the ranker reads, a message as a candidate
answer, its token usage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue

from blender_core.ensemble import USAGE_KEYS, BackendAnswer, render_prompt

from .tool_calls import has_tool_calls, ranking_text

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}

#: a string, a prompt value, or messages (or their dict / tuple forms)
PromptLike = str | PromptValue | Sequence[Any]


def message_usage(message: BaseMessage) -> dict[str, int] | None:
    """The message's token counts (input/output/total) as a plain dict, or ``None`` if it reported none."""
    usage = getattr(message, "usage_metadata", None)
    if not usage:
        return None
    return {k: int(usage.get(k, 0) or 0) for k in USAGE_KEYS}


def message_answer(message: BaseMessage, payload: Any = None) -> BackendAnswer:
    """A candidate for the engine: the message's text, its ranking text (tool calls in a canonical form),
    usage, whether it may be fused (not with tool calls), and a payload (default: the message) returned
    as is when it wins."""
    calls = has_tool_calls(message)
    return BackendAnswer(
        text=message.text,
        rank_text=ranking_text(message) if calls else None,
        usage=message_usage(message),
        payload=message if payload is None else payload,
        fusible=not calls,
    )


def prompt_text(prompt: PromptLike) -> str:
    """The instruction text the ranker reads: a string as is; a chat as turns (see ``render_prompt``)."""
    if isinstance(prompt, str):
        return prompt
    messages = prompt.to_messages() if isinstance(prompt, PromptValue) else convert_to_messages(prompt)
    turns = [(_ROLES.get(m.type, m.type), ranking_text(m) if m.type == "ai" else m.text) for m in messages]
    return render_prompt(turns)
