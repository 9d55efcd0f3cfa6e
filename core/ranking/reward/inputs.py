"""What a reward model reads: conversations checked, rendered with the model's chat template, tokenized and,
when too long, cut to their end (so that the scored assistant turn survives).

Example:
    >>> check_conversation([{"role": "USER", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "c")
    [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}]
    >>> keep_end([1, 2, 3, 4, 5], 3)
    ([3, 4, 5], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from blender_core.base.validation import check_text

#: the roles a turn may have (compared case-insensitively, passed to the chat template in lower case)
ROLES = ("system", "user", "assistant", "tool")
# Above this, a tokenizer's model_max_length is transformers' "no limit" placeholder (about 1e30).
_NO_LIMIT = 10**9


def check_conversation(conversation: Any, what: str) -> list[dict[str, str]]:
    """A copy of an OpenAI-style conversation whose last turn (the one scored) is the assistant's.

    Each turn is a dict with a ``role`` (system / user / assistant / tool, any case) and a str ``content``;
    the copy has the role in lower case and only those two keys, so the caller's dicts are never changed.
    """
    if isinstance(conversation, (str, dict)) or not isinstance(conversation, Sequence):
        raise TypeError(
            f"{what} must be a list of {{'role', 'content'}} turns, got {type(conversation).__name__}"
        )
    if not conversation:
        raise ValueError(f"{what} has no turns; it needs at least the assistant turn to score")
    turns = []
    for t, turn in enumerate(conversation):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise TypeError(f"{what} turn {t} must be a dict with 'role' and 'content', got {turn!r:.80}")
        role = str(turn["role"]).lower()
        if role not in ROLES:
            raise ValueError(f"{what} turn {t} has role {turn['role']!r}; use one of {', '.join(ROLES)}")
        turns.append({"role": role, "content": check_text(turn["content"], f"{what} turn {t} content")})
    if turns[-1]["role"] != "assistant":
        raise ValueError(
            f"{what} ends with a {turns[-1]['role']!r} turn; the scored turn must be the last, an 'assistant' turn"
        )
    return turns


def prompt_conversation(prompt: str, candidate: str) -> list[dict[str, str]]:
    """The one-turn conversation that scores ``candidate`` as the answer to ``prompt``."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": candidate}]


def render(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[list[dict[str, str]]]) -> list[str]:
    """Each conversation as the text of the tokenizer's chat template (no generation prompt)."""
    texts = []
    for conv in conversations:
        text = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=False)
        assert isinstance(text, str)  # tokenize=False on one conversation gives one str
        texts.append(text)
    return texts


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered texts; the template already wrote any BOS, so none is added again."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def position_limit(config: Any, tokenizer: PreTrainedTokenizerBase, max_length: int | None) -> int | None:
    """The most tokens one text may have: ``max_length`` when given, else the model's positions
    (``max_position_embeddings`` or ``n_positions``), else the tokenizer's ``model_max_length`` when it is
    a real limit; None when nothing limits it."""
    if max_length is not None:
        return max_length
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for field in ("max_position_embeddings", "n_positions"):
        value = getattr(text_config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < _NO_LIMIT else None


def keep_end(ids: list[int], limit: int | None) -> tuple[list[int], bool]:
    """The last ``limit`` tokens of ``ids`` (the scored turn is at the end) and whether any were dropped."""
    if limit is None or len(ids) <= limit:
        return ids, False
    return ids[-limit:], True
