"""``blender-llm train-ranker`` then ``blender-llm eval-ranker`` end to end on a tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blender_core.app.cli import app
from blender_core.data.records import read_records
from tests.helpers.training import make_candidate_file, make_pair_file, make_tiny_encoder


def test_train_then_eval(tmp_path: Path) -> None:
    encoder = make_tiny_encoder(tmp_path / "encoder")
    cands = make_candidate_file(tmp_path / "pool.jsonl.gz", n=20)
    pairs = make_pair_file(tmp_path / "mini.pairs.jsonl.gz", n=10)
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, [
        "train-ranker", "--train", str(cands), "--train", str(pairs), "--out", str(out), "--encoder", str(encoder),
        "--dev-fraction", "0.3", "--source-maxlength", "16", "--candidate-maxlength", "24", "--lora", "--lora-r", "4",
        "--max-steps", "3", "--eval-every", "2", "--batch-size", "4", "--sampling", "top_bottom", "--num-pos", "2",
        "--num-neg", "2", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["steps"] == 3
    assert summary["stopped_by"] == "max_steps"
    held = read_records(out / "dev" / "pool.heldout.jsonl.gz")
    assert held
    assert all(r.prompt.startswith("write a poem") for r in held)
    assert (out / "best" / "compact" / "ranker.json").exists()
    config = json.loads((out / "train_config.json").read_text())
    assert config["notes"]["command"].startswith("blender-llm ")

    report_dir = tmp_path / "report"
    result = runner.invoke(app, [
        "eval-ranker", "--model", str(out / "best"), "--data", str(pairs), "--data", str(cands),
        "--out", str(report_dir), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((report_dir / "report.json").read_text())
    assert report["sets"]["mini.pairs"]["n"] == 10
    assert report["sets"]["mini.pairs"]["n_nontie"] == 8
    assert 0.0 <= report["sets"]["mini.pairs"]["accuracy"] <= 1.0
    assert set(report["sets"]) == {"mini.pairs", "mini.pairs/other", "mini.pairs/tiny"}
    selection = report["selection"]["pool"]
    assert selection["n"] == 20
    assert selection["random"] <= selection["oracle"]
    assert "Pair accuracy" in (report_dir / "report.md").read_text()
    assert (report_dir / "accuracy.png").stat().st_size > 1000


def test_train_needs_an_encoder_or_a_ranker(tmp_path: Path) -> None:
    pairs = make_pair_file(tmp_path / "p.jsonl.gz")
    result = CliRunner().invoke(app, ["train-ranker", "--train", str(pairs), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "exactly one of --encoder" in result.output
