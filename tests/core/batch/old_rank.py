"""Outputs that ``rank`` wrote before it ran on the sharded engine (commit 3f7657d: ``rank_file``'s own
append-and-flush loop for one input), kept in ``tests/core/batch/data/old_rank/`` so that the tests can
check that today's engine writes the same bytes and resumes what the old one left.

The files were made by running this module (``python -m tests.core.batch.old_rank``) on that commit
(where :class:`FractionRanker` was written out in full, and stopped itself; the same scores); it refuses to
overwrite them. The ranker is deterministic, with scores that are not whole numbers, so the bytes do not
depend on the machine, and how floats are written is tested too:

- ``in.jsonl``: every kind of record and bad line (``with_bad_lines``), non-ASCII text, a bad byte, a
  line ending in ``\\r\\n``, blank lines.
- ``ranked.jsonl`` / ``ranked.errors.jsonl``: the output and errors file of ``rank_file`` (chunks of 5).
- ``partial.jsonl``: what the same run left when it was stopped in its fourth chunk (three chunks
  flushed); ``partial_cut.jsonl``: the same, with the first 30 bytes of the next record after them, as a
  crash in the middle of a write leaves it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.core.batch.ray_rankers import InterruptAfter, Interrupted
from tests.core.batch.sharded_records import many_sets, with_bad_lines
from tests.helpers.core_fakes import LengthRanker

DATA = Path(__file__).parent / "data" / "old_rank"
CHUNK = 5  # records per chunk of the old run
STOP_AFTER = 3  # chunks the old run flushed before it was stopped
CUT = 30  # bytes of the next record a crash in the middle of a write left


class FractionRanker(LengthRanker):
    """Deterministic scores that are not whole numbers: a third of a candidate's length, less a seventh of
    its position (``calls`` records what it ranked, as :class:`LengthRanker` does)."""

    name = "fraction"

    def score(self, index: int, text: str) -> float:
        return len(text) / 3 - index / 7

    def ranked(self) -> list[str]:
        """The prompts it ranked, in order."""
        return [p for prompts, _, _ in self.calls for p in prompts]


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
            InterruptAfter(FractionRanker(), STOP_AFTER),
            inp,
            DATA / "partial.jsonl",
            chunk_size=CHUNK,
            show_progress=False,
        )
    except Interrupted:
        pass
    else:
        raise SystemExit("the run was not stopped")
    partial = (DATA / "partial.jsonl").read_bytes()
    full = (DATA / "ranked.jsonl").read_bytes()
    assert full.startswith(partial)
    (DATA / "partial_cut.jsonl").write_bytes(partial + full[len(partial) : len(partial) + CUT])


if __name__ == "__main__":
    main()
