"""The text a ranker reads as the instruction of a chat, and the text that shows a Mixture-of-Agents
layer the previous layer's answers."""

from __future__ import annotations

from collections.abc import Sequence


def render_prompt(turns: Sequence[tuple[str, str]]) -> str:
    """The text the ranker reads as "instruction" for a chat: a lone user turn (with any system text
    before it) as is; a longer chat as ``ROLE: text`` lines."""
    system = [t for r, t in turns if r == "system" and t]
    rest = [(r, t) for r, t in turns if r != "system"]
    if len(rest) == 1 and rest[0][0] == "user":
        return "\n".join([*system, rest[0][1]])
    lines = [f"SYSTEM: {t}" for t in system] + [f"{r.upper()}: {t}" for r, t in rest]
    return "\n".join(lines)


#: Mixture-of-Agents' aggregate-and-synthesize prompt (Wang et al., 2024), given to a layer's backends with
#: the previous layer's answers
REFERENCES_PROMPT = (
    "You have been provided with a set of responses from various models to the latest user query. Your "
    "task is to synthesize these responses into a single, high-quality response. It is crucial to critically "
    "evaluate the information provided in these responses, recognizing that some of it may be biased or "
    "incorrect. Your response should not simply replicate the given answers but should offer a refined, "
    "accurate, and comprehensive reply to the instruction. Ensure your response is well-structured, "
    "coherent, and adheres to the highest standards of accuracy and reliability.\n\nResponses from models:"
)


def references_prompt(references: Sequence[str]) -> str:
    """The system text that shows a Mixture-of-Agents layer the previous layer's answers, numbered."""
    numbered = "\n".join(f"{k}. {text}" for k, text in enumerate(references, start=1))
    return f"{REFERENCES_PROMPT}\n{numbered}"
