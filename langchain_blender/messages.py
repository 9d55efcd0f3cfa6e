"""LangChain messages to and from the engine: the prompt text the ranker reads, a message as a candidate
answer, its token usage; the engine's outcome and stream pieces as an AI message and chunks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompt_values import PromptValue

from blender_core.ensemble import USAGE_KEYS, BackendAnswer, Delta, EnsembleOutcome, render_prompt

from .tool_calls import as_chunk, has_tool_calls, ranking_text

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


def chat_turns(prompt: PromptLike) -> list[dict[str, str]]:
    """The chat as ``{"role", "content"}`` dicts (roles as OpenAI names them), for the engine's sinks."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = prompt.to_messages() if isinstance(prompt, PromptValue) else convert_to_messages(prompt)
    return [
        {"role": _ROLES.get(m.type, m.type), "content": ranking_text(m) if m.type == "ai" else m.text}
        for m in messages
    ]


def _metadata(outcome: EnsembleOutcome, model_name: str) -> tuple[UsageMetadata, dict[str, Any]]:
    usage = outcome.usage
    return (
        UsageMetadata(
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            total_tokens=usage["total_tokens"],
        ),
        {"model_name": model_name, "blender": outcome.metadata()},
    )


def outcome_message(outcome: EnsembleOutcome, model_name: str) -> AIMessage:
    """The final message: the fused text, or the chosen backend's content and tool calls; the engine's
    account in ``response_metadata["blender"]`` and the summed usage."""
    usage, meta = _metadata(outcome, model_name)
    if outcome.blend.fused:
        return AIMessage(content=outcome.text, usage_metadata=usage, response_metadata=meta)
    chosen = outcome.best_answer.payload
    return AIMessage(
        content=chosen.content,
        tool_calls=getattr(chosen, "tool_calls", []),
        invalid_tool_calls=getattr(chosen, "invalid_tool_calls", []),
        usage_metadata=usage,
        response_metadata=meta,
    )


def event_chunk(event: Delta | EnsembleOutcome, model_name: str) -> ChatGenerationChunk:
    """A piece of the streamed answer as a chunk; the ended outcome as the last chunk (account and usage)."""
    if isinstance(event, EnsembleOutcome):
        usage, meta = _metadata(event, model_name)
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="", usage_metadata=usage, response_metadata=meta, chunk_position="last"
            )
        )
    if event.answer is not None:  # the chosen backend's whole answer, tool calls included
        return ChatGenerationChunk(message=as_chunk(event.answer.payload))
    return ChatGenerationChunk(message=AIMessageChunk(content=event.text))
