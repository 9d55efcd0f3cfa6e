"""Reading a judge's verdict: the last exact ``[[A]]``, ``[[B]]`` or ``[[C]]`` tag in its reply.

The rules, strict so that a sloppy reply becomes a reported tie rather than a guess:

- Only the exact tags count: ``[[A]]``, ``[[B]]``, ``[[C]]``, capital letter, no spaces inside. ``[A]``,
  ``[[a]]``, ``[[ A ]]``, ``**A**`` or "Assistant A is better" are no verdict.
- The **last** tag wins. The prompt asks for the explanation first and the verdict last, and an
  explanation may quote the format before it (``"[[A]]" if A is better ... My verdict: [[B]]``); the first
  tag would read that quote as the verdict.
- No tag at all is no verdict (``None``): the caller counts it as a tie and reports it.

Example:
    >>> parse_verdict('A restates "[[A]]"-style tags, but B is correct. Final verdict: [[B]]')
    'B'
    >>> parse_verdict("Assistant A is better.") is None
    True
"""

from __future__ import annotations

import re
from typing import Literal

Verdict = Literal["A", "B", "C"]

#: M[i, j] for a verdict with candidate i as assistant A and j as B: +1 A wins, -1 B wins, 0 tie
VERDICT_VALUES: dict[str, float] = {"A": 1.0, "B": -1.0, "C": 0.0}

_TAG = re.compile(r"\[\[([ABC])\]\]")


def parse_verdict(text: str) -> Verdict | None:
    """The verdict of a judge's reply (the last exact tag), or ``None`` when it holds none."""
    tags = _TAG.findall(text)
    return tags[-1] if tags else None  # type: ignore[no-any-return]


def excerpt(text: str, limit: int = 80) -> str:
    """The end of a reply (where the verdict should be), for an issue message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else "…" + text[-limit:]
