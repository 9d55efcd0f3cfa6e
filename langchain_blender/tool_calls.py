"""A canonical text form of an AI message's tool calls, so the ranker can compare tool-call answers.

Two calls that do the same thing (same tool, same arguments, in any key order, under any call id) give the
same text, so equal candidates compare equal.

Example:
    >>> canonical_tool_calls([{"name": "add", "args": {"b": 2, "a": 1}, "id": "call_9"}])
    'add({"a":1,"b":2})'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolCallChunk
from langchain_core.messages.tool import tool_call_chunk


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def canonical_tool_calls(tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """One line per call, ``name({sorted JSON args})``, the lines sorted; ids are left out."""
    lines = sorted(f"{call.get('name') or ''}({_dumps(call.get('args') or {})})" for call in tool_calls)
    return "\n".join(lines)


def message_text(message: BaseMessage) -> str:
    """The plain text of a message (text blocks joined; no tool calls)."""
    return message.text


def ranking_text(message: BaseMessage) -> str:
    """The text the ranker reads for a message: its text, then the canonical form of its tool calls."""
    text = message_text(message)
    calls = list(getattr(message, "tool_calls", None) or [])
    invalid = list(getattr(message, "invalid_tool_calls", None) or [])
    parts = [text] if text else []
    if calls:
        parts.append(canonical_tool_calls(calls))
    if invalid:  # arguments that did not parse: ranked as they were written
        parts.extend(sorted(f"{c.get('name') or ''}({c.get('args') or ''})" for c in invalid))
    return "\n".join(parts)


def has_tool_calls(message: BaseMessage) -> bool:
    return bool(getattr(message, "tool_calls", None) or getattr(message, "invalid_tool_calls", None))


def tool_call_chunks(message: AIMessage) -> list[ToolCallChunk]:
    """The message's tool calls as streaming chunks (args as JSON text), so a stream rebuilds them."""
    chunks = [
        tool_call_chunk(name=c["name"], args=_dumps_args(c.get("args")), id=c.get("id"), index=i)
        for i, c in enumerate(message.tool_calls)
    ]
    offset = len(chunks)
    chunks.extend(
        tool_call_chunk(name=c.get("name"), args=c.get("args"), id=c.get("id"), index=offset + i)
        for i, c in enumerate(message.invalid_tool_calls)
    )
    return chunks


def _dumps_args(args: Any) -> str:
    return json.dumps(args if args is not None else {}, ensure_ascii=False)


def as_chunk(message: AIMessage) -> AIMessageChunk:
    """A chunk carrying a whole message's content and tool calls (for streaming a chosen answer)."""
    return AIMessageChunk(content=message.content, tool_call_chunks=tool_call_chunks(message))
