"""The text a ranker reads as the instruction of a chat."""

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
