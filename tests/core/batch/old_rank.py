"""Outputs that ``rank`` wrote before it ran on the sharded engine (commit 3f7657d: ``rank_file``'s own
append-and-flush loop for one input), kept in ``tests/core/batch/data/old_rank/`` so that the tests can
check that today's engine writes the same bytes and resumes what the old one left.

The files were made by running this module (``python -m tests.core.batch.old_rank``) on that commit; it
refuses to overwrite them. The ranker is :class:`FractionRanker`, deterministic and with scores that are
not whole numbers, so the bytes do not depend on the machine, and how floats are written is tested too:

- ``in.jsonl``: every kind of record and bad line (``with_bad_lines``), non-ASCII text, a bad byte, a
  line ending in ``\\r\\n``, blank lines.
- ``ranked.jsonl`` / ``ranked.errors.jsonl``: the output and errors file of ``rank_file`` (chunks of 5).
- ``partial.jsonl``: what the same run left when it was stopped in its fourth chunk (three chunks
  flushed); ``partial_cut.jsonl``: the same, with the first 30 bytes of the next record after them, as a
  crash in the middle of a write leaves it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from blender_core.base.results import Ranking
from blender_core.ranking.aggregation import order_from_scores, ranks_from_scores
from blender_core.ranking.interface import BaseRanker
from tests.core.batch.sharded_records import many_sets, with_bad_lines

DATA = Path(__file__).parent / "data" / "old_rank"
CHUNK = 5  # records per chunk of the old run
STOP_AFTER = 3  # chunks the old run flushed before it was stopped
CUT = 30  # bytes of the next record a crash in the middle of a write left


class Stopped(Exception):
    """Stands for the run being stopped (not an error that ranking recovers from, so the run stops)."""


class FractionRanker(BaseRanker):
    """Deterministic scores that are not whole numbers: a third of a candidate's length, less a seventh of
    its position. Stops (raises :class:`Stopped`) at call ``stop_at`` when given; records each call's prompts."""

    name = "fraction"

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.prompts: list[str] = []
        self.calls = 0

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
    ) -> list[Ranking]:
        self.calls += 1
        if self.calls == self.stop_at:
            raise Stopped(f"stopped at call {self.calls}")
        self.prompts.extend(prompts)
        out = []
        for cands in candidates:
            scores = np.array([len(c) / 3 - k / 7 for k, c in enumerate(cands)])
            order = order_from_scores(scores)
            out.append(Ranking(scores, ranks_from_scores(scores), order, order[0], strategy, n_forward=0))
        return out


def input_bytes() -> bytes:
    """The bytes of ``in.jsonl``."""
    lines = [x if isinstance(x, str) else json.dumps(x) for x in with_bad_lines(many_sets(40, seed=11))]
    extra = [
        json.dumps(
            {
                "id": "u1",
                "prompt": "Ça va ? 你好",
                "candidates": ["très bien 👍", "bien", "mal — merci"],
                "models": ["é-model", "ü-model", "ß-model"],
            },
            ensure_ascii=False,
        ),
        json.dumps({"prompt": "tie?", "candidates": ["ab", "cd", "ef"]}),
        "",
    ]
    raw = [line.encode("utf-8") for line in [*lines[:12], *extra, *lines[12:]]]
    raw.insert(20, b'{"prompt": "caf\xe9", "candidates": ["a", "b"]}')  # not UTF-8
    raw[27] += b"\r"  # a line ending in \r\n
    return b"\n".join(raw) + b"\n"


def main() -> None:
    """Write the files with the ``rank_file`` of this checkout (see the module docstring)."""
    from blender_core.batch.rank_file import rank_file

    DATA.mkdir(parents=True, exist_ok=True)
    names = ("in.jsonl", "ranked.jsonl", "ranked.errors.jsonl", "partial.jsonl", "partial_cut.jsonl")
    if any((DATA / n).exists() for n in names):
        raise SystemExit(f"{DATA} already holds the old outputs; they are not made again")
    inp = DATA / "in.jsonl"
    inp.write_bytes(input_bytes())
    rank_file(
        FractionRanker(),
        inp,
        DATA / "ranked.jsonl",
        chunk_size=CHUNK,
        errors_path=DATA / "ranked.errors.jsonl",
        show_progress=False,
    )
    try:
        rank_file(
            FractionRanker(stop_at=STOP_AFTER + 1),
            inp,
            DATA / "partial.jsonl",
            chunk_size=CHUNK,
            show_progress=False,
        )
    except Stopped:
        pass
    else:
        raise SystemExit("the run was not stopped")
    partial = (DATA / "partial.jsonl").read_bytes()
    full = (DATA / "ranked.jsonl").read_bytes()
    assert full.startswith(partial)
    (DATA / "partial_cut.jsonl").write_bytes(partial + full[len(partial) : len(partial) + CUT])


if __name__ == "__main__":
    main()
