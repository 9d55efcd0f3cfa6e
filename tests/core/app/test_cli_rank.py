"""``blender-llm rank`` and ``blender_core.batch_rank``: output, resume, bad lines, interrupted writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from blender_core.app.cli import app
from blender_core.batch.rank_file import LineError, rank_file, read_done
from blender_core.ranking.pair_ranker import PairRanker

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


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_same_rankings(got: Path, want: Path) -> None:
    """Same records in the same order, same choices; scores equal up to float noise of batching."""
    a, b = _read(got), _read(want)
    assert [{k: v for k, v in r.items() if k != "scores"} for r in a] == [
        {k: v for k, v in r.items() if k != "scores"} for r in b
    ]
    for x, y in zip(a, b, strict=True):
        assert x["scores"] == pytest.approx(y["scores"], abs=1e-5)


@pytest.fixture(scope="module")
def ranker(tiny_native_ckpt: Path) -> PairRanker:
    return PairRanker.from_pretrained(tiny_native_ckpt, device="cpu", batch_size=8)


class CountingRanker(PairRanker):
    """The real ranker, counting the candidate sets it is asked to rank."""

    ranked = 0

    def rank(self, prompts: Any, candidates: Any, **kwargs: Any) -> Any:
        type(self).ranked += len(prompts)
        return super().rank(prompts, candidates, **kwargs)


@pytest.fixture
def counting() -> type[CountingRanker]:
    CountingRanker.ranked = 0
    return CountingRanker


def test_output_has_scores_ranks_and_best_per_record(ranker: PairRanker, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", SETS)
    report = rank_file(ranker, inp, tmp_path / "out.jsonl", show_progress=False)
    assert (report.written, report.skipped, report.errors, report.pairs) == (6, 0, (), 1)
    rows = _read(tmp_path / "out.jsonl")
    assert [r.get("id", r.get("line")) for r in rows] == ["q1", 2, 3, 4, "q5", 6]
    assert rows[0]["line"] == 1
    assert rows[0]["prompt"] == "What is 2+2?"
    assert rows[2]["prompt"] == "Say hello politely"  # instruction + input, the data module's convention
    assert rows[3]["pair"] is True
    assert "pair" not in rows[0]
    # the same scores as ranking directly (batched across records or not)
    texts = [s.get("candidates") for s in SETS]
    texts[2] = ["Hello there.", "hi"]
    texts[3] = ["yes", "no"]
    direct = ranker.rank([r["prompt"] for r in rows], texts)
    for row, cands, want in zip(rows, texts, direct, strict=True):
        assert row["scores"] == pytest.approx(want.scores.tolist(), abs=1e-5)
        assert row["ranks"] == want.ranks.tolist()
        assert row["best"] == want.best
        assert row["best_text"] == cands[want.best]
        assert row["ranks"][row["best"]] == 1
    assert rows[0]["best_model"] == ["m1", "m2", "m3"][rows[0]["best"]]
    assert rows[2]["best_model"] == ["alpha", "beta"][rows[2]["best"]]
    assert "best_model" not in rows[1]


def test_chunking_does_not_change_results(ranker: PairRanker, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", SETS)
    rank_file(ranker, inp, tmp_path / "one.jsonl", chunk_size=1, show_progress=False)
    rank_file(ranker, inp, tmp_path / "all.jsonl", chunk_size=64, batch_size=3, show_progress=False)
    one, many = _read(tmp_path / "one.jsonl"), _read(tmp_path / "all.jsonl")
    for a, b in zip(one, many, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
        # the same best, up to ties
        assert a["scores"][b["best"]] == pytest.approx(max(a["scores"]), abs=1e-5)


def test_resume_ranks_only_the_records_not_in_out(
    counting: type[CountingRanker], tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    ranker = counting.from_pretrained(tiny_native_ckpt, device="cpu")
    out = tmp_path / "out.jsonl"
    first = rank_file(ranker, _write(tmp_path / "a.jsonl", SETS[:3]), out, show_progress=False)
    assert (first.written, counting.ranked) == (3, 3)
    before = out.read_bytes()

    counting.ranked = 0
    second = rank_file(ranker, _write(tmp_path / "b.jsonl", SETS), out, show_progress=False)
    assert (second.written, second.skipped, counting.ranked) == (3, 3, 3)
    assert out.read_bytes().startswith(before)  # earlier lines untouched
    assert [r.get("id", r.get("line")) for r in _read(out)] == ["q1", 2, 3, 4, "q5", 6]

    counting.ranked = 0
    third = rank_file(ranker, tmp_path / "b.jsonl", out, show_progress=False)
    assert (third.written, third.skipped, counting.ranked) == (0, 6, 0)


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


def test_bad_lines_are_reported_with_their_number_and_skipped(ranker: PairRanker, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", BAD_LINES)
    seen: list[LineError] = []
    report = rank_file(
        ranker,
        inp,
        tmp_path / "out.jsonl",
        errors_path=tmp_path / "err.jsonl",
        show_progress=False,
        on_error=seen.append,
    )
    assert report.written == 3
    assert [e.line for e in report.errors] == [2, 4, 5, 6, 8, 9]
    assert seen == list(report.errors)
    reasons = {e.line: str(e) for e in report.errors}
    assert reasons[2].startswith("line 2: not valid JSON")
    assert reasons[4] == "line 4: 1 candidate(s); ranking needs at least 2"
    assert reasons[5] == "line 5: expected a JSON object, got list"
    assert "not a pair" in reasons[6]
    assert "['answers', 'question']" in reasons[6]
    assert "'scores' must be a list of 2 numbers" in reasons[8]
    assert reasons[9] == "line 9: id 'q1' already used by line 1"
    assert [r.get("id", r.get("line")) for r in _read(tmp_path / "out.jsonl")] == ["q1", 3, "q5"]
    errors = _read(tmp_path / "err.jsonl")
    assert [e["line"] for e in errors] == [2, 4, 5, 6, 8, 9]
    assert errors[0]["text"] == BAD_LINES[1]
    again = rank_file(
        ranker, inp, tmp_path / "out.jsonl", errors_path=tmp_path / "err.jsonl", show_progress=False
    )
    assert (again.written, again.skipped, len(again.errors)) == (0, 3, 6)
    assert _read(tmp_path / "err.jsonl") == errors  # rewritten, not appended to


def test_cli_reports_bad_lines_and_a_summary(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", BAD_LINES)
    out = tmp_path / "out.jsonl"
    args = ["rank", str(inp), "--out", str(out), "--model", str(tiny_native_ckpt), "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{inp}: line 2: not valid JSON" in res.stderr
    assert f"{inp}: line 4: 1 candidate(s); ranking needs at least 2; skipped" in res.stderr
    assert "ranked 3 records; skipped 6 bad lines" in res.stdout
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "ranked 0 records; skipped 3 already in" in again.stdout
    assert len(_read(out)) == 3


def test_partial_last_line_is_dropped_and_its_record_ranked_again(ranker: PairRanker, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", SETS)
    full = tmp_path / "full.jsonl"
    rank_file(ranker, inp, full, show_progress=False)
    lines = full.read_text().splitlines(keepends=True)
    crashed = tmp_path / "crashed.jsonl"
    crashed.write_text("".join(lines[:2]) + lines[2][:25])  # a crash in the middle of writing record 3
    assert read_done(crashed, repair=False) == {("id", "q1"): 1, ("line", 2): 2}
    report = rank_file(ranker, inp, crashed, show_progress=False)
    assert (report.written, report.skipped) == (4, 2)
    _assert_same_rankings(crashed, full)


def test_complete_last_line_without_newline_is_kept(ranker: PairRanker, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", SETS)
    full = tmp_path / "full.jsonl"
    rank_file(ranker, inp, full, show_progress=False)
    lines = full.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:2]) + lines[2].rstrip("\n"))
    report = rank_file(ranker, inp, cut, show_progress=False)
    assert (report.written, report.skipped) == (3, 3)
    _assert_same_rankings(cut, full)


def test_interrupted_run_keeps_written_chunks_and_resumes(ranker: PairRanker, tmp_path: Path) -> None:
    lines = [*SETS[:4], '{"broken', *SETS[4:]]
    inp = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"

    def interrupt(error: LineError) -> None:
        raise KeyboardInterrupt  # the user presses Ctrl-C while line 5 is reported

    with pytest.raises(KeyboardInterrupt):
        rank_file(ranker, inp, out, chunk_size=2, show_progress=False, on_error=interrupt)
    assert len(_read(out)) == 4  # two full chunks were flushed before the interruption
    report = rank_file(ranker, inp, out, chunk_size=2, show_progress=False)
    assert (report.written, report.skipped, [e.line for e in report.errors]) == (2, 4, [5])
    assert [r.get("id", r.get("line")) for r in _read(out)] == ["q1", 2, 3, 4, "q5", 7]


def test_knockout_strategy_finds_the_best(ranker: PairRanker, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", SETS)
    rank_file(ranker, inp, tmp_path / "full.jsonl", show_progress=False)
    rank_file(ranker, inp, tmp_path / "ko.jsonl", strategy="knockout", show_progress=False)
    full, ko = _read(tmp_path / "full.jsonl"), _read(tmp_path / "ko.jsonl")
    assert all(len(r["scores"]) == len(r["ranks"]) for r in ko)
    two = [k for k, r in enumerate(full) if len(r["scores"]) == 2]
    assert [ko[k]["best"] for k in two] == [full[k]["best"] for k in two]  # one comparison pair: same winner


def test_bad_arguments_are_clear_errors(ranker: PairRanker, tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", SETS[:2])
    with pytest.raises(ValueError, match="is the input file"):
        rank_file(ranker, inp, inp, show_progress=False)
    with pytest.raises(ValueError, match="must be plain JSON lines"):
        rank_file(ranker, inp, tmp_path / "out.jsonl.gz", show_progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rank_file(ranker, tmp_path / "missing.jsonl", tmp_path / "out.jsonl", show_progress=False)
    res = CliRunner().invoke(
        app,
        [
            "rank",
            str(inp),
            "-o",
            str(tmp_path / "o.jsonl"),
            "-m",
            str(tiny_native_ckpt),
            "--strategy",
            "best",
        ],
    )
    assert res.exit_code == 2
    assert "unknown strategy 'best'" in res.output
    res = CliRunner().invoke(
        app, ["rank", str(inp), "-o", str(tmp_path / "o.jsonl"), "-m", str(tmp_path / "nope")]
    )
    assert res.exit_code == 1
    assert "could not load the ranker" in res.stderr
