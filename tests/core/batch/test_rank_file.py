"""``blender_core.batch.rank_file`` (``rank_file``, one input): output, chunking, resume, bad lines, interrupted
writes, bad arguments."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from blender_core.batch.rank_file import LineError, rank_file, read_done
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from tests.core.batch.records import BAD_LINES, SETS, read_lines, write_lines
from tests.helpers.core_fakes import LengthRanker


def _assert_same_rankings(got: Path, want: Path) -> None:
    """Same records in the same order, same choices; scores equal up to float noise of batching."""
    a, b = read_lines(got), read_lines(want)
    assert [{k: v for k, v in r.items() if k != "scores"} for r in a] == [
        {k: v for k, v in r.items() if k != "scores"} for r in b
    ]
    for x, y in zip(a, b, strict=True):
        assert x["scores"] == pytest.approx(y["scores"], abs=1e-5)


@pytest.fixture(scope="module")
def ranker(tiny_native_ckpt: Path) -> PairRanker:
    return PairRanker.from_pretrained(tiny_native_ckpt, device="cpu", batch_size=8)


def test_output_has_scores_ranks_and_best_per_record(ranker: PairRanker, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    report = rank_file(ranker, inp, tmp_path / "out.jsonl", show_progress=False)
    assert (report.written, report.skipped, report.errors, report.pairs) == (6, 0, (), 1)
    rows = read_lines(tmp_path / "out.jsonl")
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


def test_chunking_does_not_change_results(ranker: PairRanker, tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    rank_file(ranker, inp, tmp_path / "one.jsonl", chunk_size=1, show_progress=False)
    # the batch size is a loading option of the ranker, not an argument of rank_file
    small_batches = PairRanker.from_pretrained(tiny_native_ckpt, device="cpu", batch_size=3)
    rank_file(small_batches, inp, tmp_path / "all.jsonl", chunk_size=64, show_progress=False)
    one, many = read_lines(tmp_path / "one.jsonl"), read_lines(tmp_path / "all.jsonl")
    for a, b in zip(one, many, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
        # the same best, up to ties
        assert a["scores"][b["best"]] == pytest.approx(max(a["scores"]), abs=1e-5)


def test_resume_ranks_only_the_records_not_in_out(tmp_path: Path) -> None:
    counting = LengthRanker()  # any ranker will do: rank_file needs only the ranker interface

    def ranked() -> int:  # how many candidate sets it was asked to rank
        return sum(len(prompts) for prompts, _, _ in counting.calls)

    out = tmp_path / "out.jsonl"
    first = rank_file(counting, write_lines(tmp_path / "a.jsonl", SETS[:3]), out, show_progress=False)
    assert (first.written, ranked()) == (3, 3)
    before = out.read_bytes()

    counting.calls.clear()
    second = rank_file(counting, write_lines(tmp_path / "b.jsonl", SETS), out, show_progress=False)
    assert (second.written, second.skipped, ranked()) == (3, 3, 3)
    assert out.read_bytes().startswith(before)  # earlier lines untouched
    assert [r.get("id", r.get("line")) for r in read_lines(out)] == ["q1", 2, 3, 4, "q5", 6]

    counting.calls.clear()
    third = rank_file(counting, tmp_path / "b.jsonl", out, show_progress=False)
    assert (third.written, third.skipped, ranked()) == (0, 6, 0)


def test_bad_lines_are_reported_with_their_number_and_skipped(ranker: PairRanker, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", BAD_LINES)
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
    assert [r.get("id", r.get("line")) for r in read_lines(tmp_path / "out.jsonl")] == ["q1", 3, "q5"]
    errors = read_lines(tmp_path / "err.jsonl")
    assert [e["line"] for e in errors] == [2, 4, 5, 6, 8, 9]
    assert errors[0]["text"] == BAD_LINES[1]
    again = rank_file(
        ranker, inp, tmp_path / "out.jsonl", errors_path=tmp_path / "err.jsonl", show_progress=False
    )
    assert (again.written, again.skipped, len(again.errors)) == (0, 3, 6)
    assert read_lines(tmp_path / "err.jsonl") == errors  # rewritten, not appended to


@pytest.mark.parametrize(
    ("cut", "want_done", "want_report"),
    [
        # a crash in the middle of writing record 3: that line is dropped and its record ranked again
        (lambda line: line[:25], {("id", "q1"): 1, ("line", 2): 2}, (4, 2)),
        # a complete last line without its newline is kept
        (lambda line: line.rstrip("\n"), {("id", "q1"): 1, ("line", 2): 2, ("line", 3): 3}, (3, 3)),
    ],
    ids=["partial_last_line_is_dropped", "complete_last_line_without_newline_is_kept"],
)
def test_an_interrupted_write_is_repaired(
    ranker: PairRanker,
    tmp_path: Path,
    cut: Callable[[str], str],
    want_done: dict[tuple[str, object], int],
    want_report: tuple[int, int],
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    full = tmp_path / "full.jsonl"
    rank_file(ranker, inp, full, show_progress=False)
    lines = full.read_text().splitlines(keepends=True)
    crashed = tmp_path / "crashed.jsonl"
    crashed.write_text("".join(lines[:2]) + cut(lines[2]))
    assert read_done(crashed, repair=False) == want_done
    report = rank_file(ranker, inp, crashed, show_progress=False)
    assert (report.written, report.skipped) == want_report
    _assert_same_rankings(crashed, full)


def test_interrupted_run_keeps_written_shards_and_resumes(ranker: PairRanker, tmp_path: Path) -> None:
    lines = [*SETS[:4], '{"broken', *SETS[4:]]
    inp = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"

    def interrupt(error: LineError) -> None:
        raise KeyboardInterrupt  # the user presses Ctrl-C while line 5 is reported

    with pytest.raises(KeyboardInterrupt):
        rank_file(ranker, inp, out, chunk_size=2, shard_size=2, show_progress=False, on_error=interrupt)
    # two shards were ranked and merged, each as soon as the reading had passed it, before the interruption
    assert len(read_lines(out)) == 4
    report = rank_file(ranker, inp, out, chunk_size=2, shard_size=2, show_progress=False)
    assert (report.written, report.skipped, [e.line for e in report.errors]) == (2, 4, [5])
    assert [r.get("id", r.get("line")) for r in read_lines(out)] == ["q1", 2, 3, 4, "q5", 7]


def test_knockout_strategy_finds_the_best(ranker: PairRanker, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    rank_file(ranker, inp, tmp_path / "full.jsonl", show_progress=False)
    rank_file(ranker, inp, tmp_path / "ko.jsonl", strategy="knockout", show_progress=False)
    full, ko = read_lines(tmp_path / "full.jsonl"), read_lines(tmp_path / "ko.jsonl")
    assert all(len(r["scores"]) == len(r["ranks"]) for r in ko)
    two = [k for k, r in enumerate(full) if len(r["scores"]) == 2]
    assert [ko[k]["best"] for k in two] == [full[k]["best"] for k in two]  # one comparison pair: same winner
    # a tournament's scores are match margins, not an order, and its lines say so; full's lines do not
    assert all(r["scores_order"] is False for r in ko)
    assert all("scores_order" not in r for r in full)


def test_bad_arguments_are_clear_errors(ranker: PairRanker, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS[:2])
    with pytest.raises(ValueError, match="is the input file"):
        rank_file(ranker, inp, inp, show_progress=False)
    with pytest.raises(ValueError, match="must be plain JSON lines"):
        rank_file(ranker, inp, tmp_path / "out.jsonl.gz", show_progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rank_file(ranker, tmp_path / "missing.jsonl", tmp_path / "out.jsonl", show_progress=False)
