"""Lines that once stopped a batch job, and every rerun at the same line (issue 20): a candidate holding a lone
surrogate, a line nested 100,000 deep, a line too long to hold in memory, a record whose output cannot be written
as UTF-8. Each is a bad line, as a line of bad JSON is: reported with its file, line and reason (and in the errors
file), skipped, and the job goes on, for ``rank`` and ``label-pairs`` alike, where the driver reads the input and
where an executor parses its shard."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from blender_core.batch.pairs import label_pairs
from blender_core.batch.parts import read_part
from blender_core.batch.plan import LineError
from blender_core.batch.rank_file import rank_files
from blender_core.batch.shards import JobSpec, RankRows, ShardTask, rank_shard
from tests.core.batch.records import POISON_IDS, POISON_LINES, SURROGATE_LINE, write_lines
from tests.core.batch.sharded_records import errors_of, keys
from tests.helpers.core_fakes import LengthRanker

JOBS: dict[str, Callable[..., Any]] = {"rank": rank_files, "label-pairs": label_pairs}
#: records without ids, keyed by line; the longest candidate of each wins (LengthRanker), so each gives a pair
GOOD = [{"prompt": f"q{k}", "candidates": [f"a{k}", f"bbb{k}", f"cc{k}"]} for k in range(6)]


@pytest.mark.parametrize("job", list(JOBS))
@pytest.mark.parametrize(("line", "reason"), POISON_LINES, ids=POISON_IDS)
def test_a_poison_line_is_a_bad_line_and_the_run_goes_on(job: str, line: str, reason: str, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", [*GOOD[:3], line, *GOOD[3:]])
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    seen: list[LineError] = []
    run = JOBS[job]
    report = run(inp, out, LengthRanker(), shard_size=2, errors_path=err, show_progress=False, on_error=seen.append)
    assert report.errors == (LineError(4, reason),)
    assert seen == list(report.errors)
    assert report.written == 6
    assert sorted(set(keys(out))) == [1, 2, 3, 5, 6, 7]  # every line but the poison one
    assert errors_of(err) == [{"line": 4, "error": reason, "text": line}]
    # a rerun is no dead end: it finds the same bad line, and nothing else to do
    again = run(inp, out, LengthRanker(), shard_size=2, show_progress=False)
    assert (again.written, again.skipped, again.errors) == (0, 6, report.errors)


@pytest.mark.parametrize("job", list(JOBS))
def test_a_line_too_long_is_skipped_without_being_held_in_memory(job: str, tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    size = 40 << 20  # 2.5 times the 16 MiB a line may have
    with inp.open("w") as f:
        f.write("".join(json.dumps(g) + "\n" for g in GOOD[:2]))
        head = '{"prompt": "p", "candidates": ["a", "'
        f.write(head)
        for _ in range(size >> 20):
            f.write("x" * (1 << 20))
        f.write('"]}\n')
        f.write("".join(json.dumps(g) + "\n" for g in GOOD[2:]))
    length = len(inp.read_bytes().split(b"\n")[2])
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    tracemalloc.start()
    try:
        report = JOBS[job](inp, out, LengthRanker(), shard_size=2, errors_path=err, show_progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.errors == (LineError(3, f"too long ({length} bytes; a line may have at most 16777216)"),)
    assert report.written == 6
    # never held whole: at most the 16 MiB a line may have is held before it is known to be too long (it was 8
    # times the line's size: read, decoded, parsed)
    assert peak < 20 << 20
    (bad,) = errors_of(err)
    assert bad["text"] == (head + "x" * 1024)[:1024]  # its start, to find it by


@pytest.mark.parametrize("job", list(JOBS))
def test_a_record_whose_output_cannot_be_written_is_a_bad_line(job: str, tmp_path: Path) -> None:
    """The writer cannot be poisoned by a record: here an input whose file name is not UTF-8 (Linux gives it a
    lone surrogate, and each output record of a job over several inputs names its input)."""
    plain = write_lines(tmp_path / "a.jsonl", GOOD[:3])
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.jsonl"))
    write_lines(odd, GOOD[3:])
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    report = JOBS[job]([plain, odd], out, LengthRanker(), errors_path=err, show_progress=False)
    assert [(e.file, e.line) for e in report.errors] == [(str(odd), 1), (str(odd), 2), (str(odd), 3)]
    for e in report.errors:
        assert e.reason.startswith("its output cannot be written as UTF-8 JSON ('utf-8' codec can't encode")
    assert report.written == 3
    assert sorted(set(keys(out))) == [(str(plain), 1), (str(plain), 2), (str(plain), 3)]
    # the errors file takes the name as its JSON escape (ASCII), which reads back as the name
    assert [(e["file"], e["line"]) for e in errors_of(err)] == [(str(odd), 1), (str(odd), 2), (str(odd), 3)]


@pytest.mark.parametrize(("line", "reason"), POISON_LINES, ids=POISON_IDS)
def test_an_executor_parses_its_shard_within_the_same_bounds(line: str, reason: str, tmp_path: Path) -> None:
    """Where a shard is ranked (this process, or a Ray actor) its lines are parsed again: a poison line there is an
    error of the part, never a crash of the actor."""
    good = json.dumps(GOOD[0])
    task = ShardTask("0000-00000000", "d1g3st", "in.jsonl", None, ((1, good), (2, line), (3, good.replace("q0", "q3"))))
    done = rank_shard(LengthRanker(), task, JobSpec(RankRows(), ranker_name="length"), tmp_path)
    assert (done.records, done.rows) == (2, 2)
    (path,) = tmp_path.glob("*.part.jsonl")
    part = read_part(path)
    assert part is not None
    assert [e["line"] for e in part.errors] == [2]
    assert part.errors[0]["error"] == reason
    assert [json.loads(r)["line"] for r in part.rows] == [1, 3]


def test_a_lone_surrogate_never_reaches_the_ranker(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", [GOOD[0], SURROGATE_LINE, GOOD[1]])
    ranker = LengthRanker()
    rank_files(inp, tmp_path / "out.jsonl", ranker, show_progress=False)
    assert [p for prompts, _, _ in ranker.calls for p in prompts] == ["q0", "q1"]
