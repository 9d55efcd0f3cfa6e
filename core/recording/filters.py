"""Which answered requests are not recorded: those whose texts match a pattern (``drop_matching``) or hold a
secret (the server's and its upstreams' keys, matched literally).

Example:
    >>> drop = DropMatching([r"(?i)password"], secrets=["sk-12345678"])
    >>> drop.matches({"prompt": "my Password is x", "candidates": []})
    True
    >>> drop.matches({"prompt": "hello", "candidates": ["key: sk-12345678"]})
    True
    >>> drop.matches({"prompt": "hello", "candidates": ["hi"]})
    False
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any


def record_texts(record: Mapping[str, Any]) -> Iterator[str]:
    """Every text of a record a person or a model wrote: the prompt, the messages, the candidates, the answer."""
    yield record.get("prompt") or ""
    for message in record.get("messages") or ():
        content = message.get("content")
        if isinstance(content, str):
            yield content
    yield from (c for c in record.get("candidates") or () if isinstance(c, str))
    answer = record.get("answer")
    if isinstance(answer, str):
        yield answer


class DropMatching:
    """Drops a record when any of its texts matches a pattern or contains a secret."""

    def __init__(self, patterns: Iterable[str] = (), *, secrets: Iterable[str] = ()) -> None:
        # each compiled on its own: a pattern may begin with its own flags, e.g. (?i)
        self.patterns = [re.compile(p) for p in patterns]
        literal = "|".join(re.escape(s) for s in sorted(set(secrets), key=len, reverse=True) if s)
        if literal:
            self.patterns.append(re.compile(literal))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether the record is to be dropped."""
        return any(p.search(text) for text in record_texts(record) for p in self.patterns)
