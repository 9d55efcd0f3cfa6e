"""The reference's conversation format: two chats with the same user turns become one comparison."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blender_core.base.validation import check_same_length, check_text

CONVERSATION_INSTRUCTION = (
    # sic: the reference's wording, typo included, so that scores match it.
    "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
)

def _check_conversation(conv: Any, name: str) -> list[tuple[str, str]]:
    if isinstance(conv, (str, dict)) or not isinstance(conv, Sequence):
        raise TypeError(f"{name} must be a list of {{'role', 'content'}} turns, got {type(conv).__name__}")
    if len(conv) == 0 or len(conv) % 2:
        raise ValueError(
            f"{name} has {len(conv)} turns; it needs user/assistant pairs (an even, non-zero number)"
        )
    turns = []
    for t, turn in enumerate(conv):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise TypeError(f"{name} turn {t} must be a dict with 'role' and 'content', got {turn!r:.80}")
        role = str(turn["role"]).upper()
        want = "USER" if t % 2 == 0 else "ASSISTANT"
        if role != want:
            raise ValueError(
                f"{name} turn {t} has role {turn['role']!r}; turns must alternate USER, ASSISTANT"
            )
        turns.append((role, check_text(turn["content"], f"{name} turn {t} content")))
    return turns


def conversations_to_pairs(
    conversations_a: Sequence[Sequence[dict[str, Any]]], conversations_b: Sequence[Sequence[dict[str, Any]]]
) -> tuple[list[str], list[str], list[str]]:
    """The reference's conversation format: one source (instruction + user turns) and two candidate texts."""
    for name, convs in (("conversations_a", conversations_a), ("conversations_b", conversations_b)):
        if isinstance(convs, (str, dict)) or not isinstance(convs, Sequence):
            raise TypeError(
                f"compare_conversations() takes a list of conversations for {name}, got {type(convs).__name__}"
            )
    check_same_length(
        "compare_conversations", conversations_a=conversations_a, conversations_b=conversations_b
    )
    sources: list[str] = []
    texts_a: list[str] = []
    texts_b: list[str] = []
    for k, (ca, cb) in enumerate(zip(conversations_a, conversations_b, strict=True)):
        ta = _check_conversation(ca, f"conversations_a[{k}]")
        tb = _check_conversation(cb, f"conversations_b[{k}]")
        if len(ta) != len(tb) or any(ta[i][1] != tb[i][1] for i in range(0, len(ta), 2)):
            raise ValueError(f"conversations_a[{k}] and conversations_b[{k}] must have the same user turns")
        user = [ta[i][1] for i in range(0, len(ta), 2)]
        sources.append(
            CONVERSATION_INSTRUCTION
            + "\n".join(f"USER: {u}\nAssistant: <Response {i + 1}>" for i, u in enumerate(user))
        )
        for turns, dest in ((ta, texts_a), (tb, texts_b)):
            dest.append("\n".join(f"<Response {i // 2 + 1}>: {turns[i][1]}" for i in range(1, len(turns), 2)))
    return sources, texts_a, texts_b
