"""``blender-llm label-pairs``: bad lines as ``rank`` reports them, the TRL fields and the summary, resume, clear
usage errors, and the same pairs on Ray actors as in this process (``blender_core.batch.pairs`` itself is
tested in ``tests/core/batch``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from blender_core.app.cli import app
from tests.core.batch.lock_holder import lock_held_elsewhere
from tests.core.batch.ray_local import local_ray
from tests.core.batch.records import POISON_IDS, POISON_LINES, read_lines, write_lines
from tests.core.batch.sharded_records import many_sets, with_bad_lines

FIELDS = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected", "margin")
FLOATS = ("score_chosen", "score_rejected", "margin")


def _skipped(res: Result) -> list[str]:
    """The bad-line reports of a run (``FILE: line N: reason; skipped``), in order."""
    return [line for line in res.stderr.splitlines() if line.endswith("; skipped")]


def _summary(res: Result) -> str:
    return res.stdout.strip().splitlines()[-1]


def _label(inp: Path, out: Path, ckpt: Path, *more: str) -> Result:
    args = ["label-pairs", str(inp), "--out", str(out), "--model", str(ckpt), "--pairs", "best-vs-each"]
    return CliRunner().invoke(app, [*args, "--no-progress", *more])


def test_pairs_bad_lines_summary_and_resume(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(many_sets(20, seed=5)))
    out = tmp_path / "pairs.jsonl"
    res = _label(inp, out, tiny_native_ckpt)
    assert res.exit_code == 0, res.output
    # the bad lines, reported exactly as `rank` reports them
    rank = ["rank", str(inp), "--out", str(tmp_path / "ranked.jsonl"), "-m", str(tiny_native_ckpt)]
    ranked = CliRunner().invoke(app, [*rank, "--no-progress"])
    assert ranked.exit_code == 0, ranked.output
    bad = _skipped(ranked)
    assert len(bad) == 8
    assert _skipped(res) == bad
    assert f"{inp}: line 2: not valid JSON" in res.stderr
    # every line in TRL's format, the chosen candidate scored above the rejected one
    rows = read_lines(out)
    assert rows
    for row in rows:
        assert all(f in row for f in FIELDS), row
        assert row["margin"] == row["score_chosen"] - row["score_rejected"]
        assert row["margin"] > 0
    records = len(read_lines(tmp_path / "ranked.jsonl"))
    summary = _summary(res)
    assert summary.startswith(f"labelled {records} records into {len(rows)} pairs;"), summary
    assert f"skipped {len(bad)} bad lines" in summary
    assert summary.endswith(f"-> {out}")
    # the same command again: nothing new, and nothing ranked again (a record that gave no pair is remembered)
    before = out.read_bytes()
    again = _label(inp, out, tiny_native_ckpt)
    assert again.exit_code == 0, again.output
    assert _skipped(again) == bad
    assert _summary(again).startswith(f"labelled 0 records into 0 pairs; skipped {records} already in {out};")
    assert out.read_bytes() == before


@pytest.fixture
def wide_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer's error box on one line per message, so that messages with long paths can be asserted whole."""
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 1000)


@pytest.mark.parametrize(("line", "reason"), POISON_LINES, ids=POISON_IDS)
def test_a_poison_line_is_one_bad_line(tiny_native_ckpt: Path, tmp_path: Path, line: str, reason: str) -> None:
    """As for ``rank`` (issue 20): once exit 2 at writing, or a RecursionError before anything was written."""
    records = many_sets(4, seed=5)
    inp = write_lines(tmp_path / "in.jsonl", [*records[:2], line, *records[2:]])
    out = tmp_path / "pairs.jsonl"
    for _ in range(2):  # the rerun reports it again and does not stop there either
        res = _label(inp, out, tiny_native_ckpt)
        assert res.exit_code == 0, res.output
        assert "Traceback" not in res.output
        assert _skipped(res) == [f"{inp}: line 3: {reason}; skipped"]
    assert _summary(res).startswith("labelled 0 records")
    assert {r.get("id", r["line"]) for r in read_lines(out)} <= {"r0", 2, 4, 5}
    assert "skipped 1 bad lines" in _summary(res)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ["--pairs", "best-vs-median"],
            "Invalid value for '--pairs': 'best-vs-median' is not one of best-vs-worst, best-vs-each, all-pairs",
        ),
        (["--margin", "-1"], "Invalid value for '--margin': margin must be a finite number >= 0, got -1.0"),
        (
            ["--engine", "spark"],
            "Invalid value for '--engine': 'spark' is not one of local, ray",
        ),
        (["--actors", "2"], "Invalid value for '--actors': --actors is an option of --engine ray"),
    ],
)
def test_bad_options_are_usage_errors_before_any_loading(
    wide_errors: None, tiny_native_ckpt: Path, tmp_path: Path, option: list[str], message: str
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(3))
    out = tmp_path / "pairs.jsonl"
    args = ["label-pairs", str(inp), "-o", str(out), "-m", str(tiny_native_ckpt), *option]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # a message, no traceback
    assert message in res.stderr
    assert "ranker:" not in res.stdout  # nothing was loaded
    assert not out.exists()


def test_an_out_another_run_is_writing_is_refused(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(3))
    out = tmp_path / "pairs.jsonl"
    with lock_held_elsewhere(out) as holder:
        res = _label(inp, out, tiny_native_ckpt)
    assert res.exit_code == 1, res.output
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: another run is writing {out}: process {holder.pid} on ")
    )
    assert "ranker:" not in res.stdout
    assert not out.exists()


# ---------------------------------------------------------------------------- settings (issue 21)


def _refusal(out: Path, said: str) -> str:
    return (
        f"error: {out} was written with other settings: {said}. Nothing was loaded, ranked or written. Run with the "
        f"settings it was written with (they are in {out}.settings.json), add --overwrite to start over (it deletes "
        f"{out}, its errors file and its parts), or write to another --out"
    )


def _policies_do_not_mix(inp: Path, out: Path, ckpt: Path, *more: str) -> None:
    """The issue's reproduction: ``--margin 0.5``, then ``--pairs best-vs-each --margin 0`` on the same --out (it
    appended 106 pairs of the other policy to the 126 there)."""
    base = ["label-pairs", str(inp), "--out", str(out), "--model", str(ckpt), "--no-progress", *more]
    first = CliRunner().invoke(app, [*base, "--margin", "0.5"])
    assert first.exit_code == 0, first.output
    before = out.read_bytes()
    again = CliRunner().invoke(app, [*base, "--pairs", "best-vs-each", "--margin", "0"])
    assert again.exit_code == 1, again.output
    assert again.stderr.strip().splitlines()[-1] == _refusal(
        out, "--pairs best-vs-worst (this run: best-vs-each), --margin 0.5 (this run: 0)"
    )
    assert "ranker:" not in again.stdout  # refused before the ranker was loaded
    assert out.read_bytes() == before
    # --overwrite starts over: the new policy's pairs only
    over = CliRunner().invoke(app, [*base, "--pairs", "best-vs-each", "--margin", "0", "--overwrite"])
    assert over.exit_code == 0, over.output
    fresh = out.with_name("fresh.jsonl")
    want = CliRunner().invoke(app, [*base[:3], str(fresh), *base[4:], "--pairs", "best-vs-each", "--margin", "0"])
    assert want.exit_code == 0, want.output
    assert [{k: v for k, v in r.items() if k not in FLOATS} for r in read_lines(out)] == [
        {k: v for k, v in r.items() if k not in FLOATS} for r in read_lines(fresh)
    ]
    assert len(read_lines(out)) > len(before.splitlines())


def test_a_rerun_with_another_pair_policy_is_refused(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(20, seed=5))
    _policies_do_not_mix(inp, tmp_path / "pairs.jsonl", tiny_native_ckpt)


# ---------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """The Ray the command joins (it joins the Ray this process already runs)."""
    yield from local_ray()


def test_ray_engine_writes_the_same_pairs_as_the_local_one(
    ray_instance: Any, tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(many_sets(16, seed=4)))
    local = _label(inp, tmp_path / "local.jsonl", tiny_native_ckpt, "--device", "cpu")
    assert local.exit_code == 0, local.output
    ray = ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "0.5", "--shard-size", "5"]
    on_ray = _label(inp, tmp_path / "ray.jsonl", tiny_native_ckpt, "--device", "cpu", *ray)
    assert on_ray.exit_code == 0, on_ray.output
    assert "(loaded by each Ray actor; actors: 1)" in on_ray.stdout
    assert _skipped(on_ray) == _skipped(local)
    a, b = read_lines(tmp_path / "local.jsonl"), read_lines(tmp_path / "ray.jsonl")
    assert a
    assert [{k: v for k, v in r.items() if k not in FLOATS} for r in a] == [
        {k: v for k, v in r.items() if k not in FLOATS} for r in b
    ]
    for x, y in zip(a, b, strict=True):
        assert [x[f] for f in FLOATS] == pytest.approx([y[f] for f in FLOATS], abs=1e-5)
    assert _summary(on_ray).split(";")[0] == _summary(local).split(";")[0]  # labelled N records into M pairs


def test_on_ray_a_rerun_with_another_pair_policy_is_refused(
    ray_instance: Any, tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(20, seed=5))
    ray = ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "0.5", "--device", "cpu"]
    _policies_do_not_mix(inp, tmp_path / "pairs.jsonl", tiny_native_ckpt, *ray)
