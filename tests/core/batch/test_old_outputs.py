"""What ``rank`` wrote before it ran on the one batch engine (``tests/core/batch/data/old_rank``, made by
``tests/core/batch/old_rank.py`` with the append-and-flush ``rank_file`` of 3f7657d): the engine writes the same
bytes, whatever the shard and chunk sizes, and resumes what an interrupted old run left, every record once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from blender_core.batch.rank_file import rank_file, rank_files
from tests.core.batch.old_rank import CHUNK, DATA, STOP_AFTER, FractionRanker
from tests.core.batch.records import read_lines

RANKED = DATA / "ranked.jsonl"


@pytest.mark.parametrize(
    ("shard_size", "chunk_size"),
    [(256, CHUNK), (1, 1), (7, 3), (10, 64)],
    ids=["as-rank-ran", "a-shard-a-line", "shards-cut-chunks", "chunks-bigger-than-shards"],
)
def test_the_engine_writes_the_bytes_rank_wrote(tmp_path: Path, shard_size: int, chunk_size: int) -> None:
    out, errors = tmp_path / "ranked.jsonl", tmp_path / "ranked.errors.jsonl"
    report = rank_file(
        FractionRanker(),
        DATA / "in.jsonl",
        out,
        chunk_size=chunk_size,
        shard_size=shard_size,
        errors_path=errors,
        show_progress=False,
    )
    assert out.read_bytes() == RANKED.read_bytes()
    assert errors.read_bytes() == (DATA / "ranked.errors.jsonl").read_bytes()
    assert (report.written, report.skipped, len(report.errors)) == (45, 0, 9)
    # the data has what the bytes must get right: text that is not ASCII, floats that are not whole, a CRLF line
    text = RANKED.read_text(encoding="utf-8")
    assert "très bien 👍" in text
    assert "0.3333333333333333" in text
    assert b"\r" in (DATA / "in.jsonl").read_bytes()


@pytest.mark.parametrize("left", ["partial.jsonl", "partial_cut.jsonl"], ids=["stopped", "cut-mid-write"])
def test_an_old_partial_output_resumes_every_record_once(tmp_path: Path, left: str) -> None:
    out = tmp_path / "ranked.jsonl"
    shutil.copyfile(DATA / left, out)
    before = len(read_lines(DATA / "partial.jsonl"))
    assert before == STOP_AFTER * CHUNK
    ranker = FractionRanker()
    report = rank_files(DATA / "in.jsonl", out, ranker, shard_size=8, chunk_size=4, show_progress=False)
    assert (
        out.read_bytes() == RANKED.read_bytes()
    )  # every record once, in input order, the old lines untouched
    assert (report.skipped, report.written) == (before, 45 - before)
    # only the records the old run had not written were ranked, each once (the cut one among them)
    assert ranker.ranked() == [r["prompt"] for r in read_lines(RANKED)[before:]]
    # and a run after that has nothing left to do
    again = rank_files(DATA / "in.jsonl", out, FractionRanker(), show_progress=False)
    assert (again.skipped, again.written) == (45, 0)


def test_the_old_outputs_are_what_the_old_run_left() -> None:
    """The data files fit together as the module docstring says (a guard on the data, not on the engine)."""
    full, partial, cut = (DATA / n for n in ("ranked.jsonl", "partial.jsonl", "partial_cut.jsonl"))
    assert full.read_bytes().startswith(partial.read_bytes())
    assert cut.read_bytes().startswith(partial.read_bytes())
    tail = cut.read_bytes()[len(partial.read_bytes()) :]
    assert b"\n" not in tail
    with pytest.raises(json.JSONDecodeError):
        json.loads(tail)
