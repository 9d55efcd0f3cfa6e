"""Inputs of the sharded-engine tests (in this process and on Ray): many small candidate sets, and helpers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tests.core.batch.records import BAD_LINES, read_lines

_WORDS = (
    "the a answer question model better good write list explain code story poem reason first yes no".split()
)


def many_sets(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` records of every shape ``rank`` reads: general sets (with and without ids and models), pairs."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for k in range(n):
        cands = [
            " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(2, 4))
        ]
        prompt = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6))) + "?"
        if k % 7 == 3:
            out.append({"prompt": prompt, "a": cands[0], "b": cands[1], "label": 0})
        elif k % 3 == 0:
            out.append(
                {
                    "id": f"r{k}",
                    "prompt": prompt,
                    "candidates": cands,
                    "models": [f"m{i}" for i in range(len(cands))],
                }
            )
        else:
            out.append({"prompt": prompt, "candidates": cands})
    return out


def with_bad_lines(records: list[dict[str, Any]]) -> list[Any]:
    """``records`` with the bad lines of ``BAD_LINES`` (bad JSON, too few candidates, a repeated id…) among them."""
    return [*BAD_LINES, *records[:10], "", '{"broken', *records[10:], {"prompt": "x", "candidates": ["only"]}]


def keys(path: Path) -> list[Any]:
    """The key of each output line: id, else line (with the file, when it has one)."""
    out = []
    for r in read_lines(path):
        key = r.get("id", r.get("line"))
        out.append((r["file"], key) if "file" in r else key)
    return out


def same_rankings(got: Path, want: Path, abs_tol: float = 1e-5) -> None:
    """Same lines in the same order, the same ranks and choices; scores equal up to float noise of batching."""
    a, b = read_lines(got), read_lines(want)
    assert [{k: v for k, v in r.items() if k != "scores"} for r in a] == [
        {k: v for k, v in r.items() if k != "scores"} for r in b
    ]
    for x, y in zip(a, b, strict=True):
        assert x["scores"] == _approx(y["scores"], abs_tol)


def _approx(values: list[float], abs_tol: float) -> Any:
    import pytest

    return pytest.approx(values, abs=abs_tol)


def errors_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def counts(report: Any) -> tuple[Any, ...]:
    """What two runs that handled the same records report alike: written, skipped, pairs, errors."""
    return (report.written, report.skipped, report.pairs, report.errors)
