"""Input records of the batch-ranking tests (the library's and the CLI's), and file helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SETS: list[dict[str, Any]] = [
    {"id": "q1", "prompt": "What is 2+2?", "candidates": ["4", "5", "four"], "models": ["m1", "m2", "m3"]},
    {"prompt": "Capital of France?", "candidates": ["Paris", "Lyon", "Marseille", "Nice"]},
    {
        "instruction": "Say hello",
        "input": " politely",
        "candidates": [
            {"model": "alpha", "output": "Hello there.", "pref": 1.0},
            {"model": "beta", "output": "hi", "pref": 0.0},
        ],
    },
    {"prompt": "Is the sky blue?", "a": "yes", "b": "no", "label": 0},
    {"id": "q5", "prompt": "Write a poem", "candidates": ["roses are red", "a poem", "no"]},
    {"prompt": "Name a colour", "candidates": ["red", "blue"]},
]

BAD_LINES = [
    SETS[0],
    '{"prompt": "cut", "candidates": [',  # 2: bad JSON
    SETS[1],
    {"prompt": "lonely", "candidates": ["only one"]},  # 4: too few candidates
    "[1, 2, 3]",  # 5: not an object
    {"question": "?", "answers": ["a", "b"]},  # 6: no known format
    "",  # 7: blank lines are not records
    {"prompt": "x", "candidates": ["a", "b"], "scores": [1.0]},  # 8: scores do not match
    {"id": "q1", "prompt": "again", "candidates": ["a", "b"]},  # 9: duplicate id
    SETS[4],
]


def write_lines(path: Path, lines: list[Any]) -> Path:
    """One line per item: a str as is, anything else as JSON."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------- lines that once stopped a job (issue 20)

#: candidates holding lone surrogates: the JSON escapes (``\ud800``) as the file spells them (ASCII, valid UTF-8);
#: both, so that whichever the ranker prefers, the output once had to write one
SURROGATE_LINE = '{"prompt": "p", "candidates": ["x\\ud800", "y\\udfff"]}'
SURROGATE_REASON = (
    "candidates[0] holds a lone surrogate (\\ud800), which is not a character; "
    "write the character itself or a surrogate pair"
)
#: a record whose extra field nests 100,000 arrays deep (Python's parser stops at its recursion limit)
DEEP_LINE = '{"prompt": "p", "candidates": ["a", "bb"], "extra": ' + "[" * 100_000 + "]" * 100_000 + "}"
DEEP_REASON = "arrays and objects nested more than 100 deep; a record needs a few levels"
#: (line, the reason it is skipped with), for parametrized tests
POISON_LINES = [(SURROGATE_LINE, SURROGATE_REASON), (DEEP_LINE, DEEP_REASON)]
POISON_IDS = ["lone-surrogate", "nested-100000-deep"]
