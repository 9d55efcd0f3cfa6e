"""``blender-llm calibrate`` as a user runs it: the report, the printed table and config, errors in the
command line's terms."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blender_core.app.cli import app
from tests.core.batch.records import write_lines

MODELS = ("cheap", "mid", "dear")
PRICES = """
[models.cheap]
price_in = 0.1
price_out = 0.2
tier = 1

[models.mid]
price_in = 0.5
price_out = 1.0
tier = 1

[models.dear]
price_in = 5.0
price_out = 15.0
tier = 2
tokens_per_s = 20.0
"""


def _pool(path: Path, n: int = 5) -> Path:
    rng = random.Random(1)
    words = "a good answer explains why with an example".split()
    rows = [
        {
            "idx": k,
            "instruction": f"question {k}?",
            "reference": "ref",
            "candidates": [
                {"model": m, "output": " ".join(rng.choices(words, k=rng.randint(2, 12))), "pref": round(1 + rng.random(), 2)}
                for m in MODELS
            ],
        }
        for k in range(n)
    ]
    return write_lines(path, rows)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "prices.toml").write_text(PRICES)
    return _pool(tmp_path / "pool.jsonl"), tmp_path / "prices.toml"


def test_calibrate_with_the_oracle_writes_the_report_and_prints_a_config(files: tuple[Path, Path], tmp_path: Path) -> None:
    pool, prices = files
    args = ["calibrate", "--data", str(pool), "--prices", str(prices), "--model", "oracle", "--out", str(tmp_path / "r")]
    res = CliRunner().invoke(app, [*args, "--policy", "cascade", "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["ranker"] == "oracle"
    assert report["oracle_points"] is None
    assert report["instructions"] == 5
    assert (tmp_path / "r" / "curve.png").is_file()
    assert "| setting | win rate | cost / instr." in res.output
    assert "[ensemble]\n# ranker: the oracle" in res.output
    assert res.output.count("[[backends]]") >= 2
    res = CliRunner().invoke(app, [*args, "--policy", "all", "--target-cost", "0", "--limit", "2", "--no-plot", "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["instructions"] == 2
    assert report["recommendation"]["target"] == "cost <= 0 per instruction"
    assert not report["recommendation"]["met"]
    assert "(no setting meets it: the closest)" in res.output


def test_calibrate_with_a_ranker_adds_the_oracle_curve(files: tuple[Path, Path], tmp_path: Path, tiny_reference_ckpt: Path) -> None:
    pool, prices = files
    args = ["calibrate", "--data", str(pool), "--prices", str(prices), "-m", str(tiny_reference_ckpt)]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r"), "--policy", "quorum", "--no-progress", "--no-plot"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [p["label"] for p in report["points"]] == ["quorum=1", "quorum=2", "quorum=3"]
    assert len(report["oracle_points"]) == 3
    assert f'ranker = "{tiny_reference_ckpt}"' in report["recommendation"]["config"]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--policy", "quorum", "--thresholds", "0.5"], 2, "--thresholds sets a cascade's accept_score"),
        (["--thresholds", "0.5,high"], 2, "'high' is not a number or 'none'"),
        (["--target-cost", "1", "--target-quality", "10"], 2, "give --target-cost or --target-quality, not both"),
        (["--policy", "best"], 2, "'best' is not one of cascade, quorum, all, single"),
    ],
)
def test_usage_errors_name_the_option(files: tuple[Path, Path], tmp_path: Path, extra: list[str], code: int, message: str) -> None:
    pool, prices = files
    args = ["calibrate", "--data", str(pool), "--prices", str(prices), "-m", "oracle", "--out", str(tmp_path / "r")]
    res = CliRunner().invoke(app, [*args, *extra])
    assert res.exit_code == code, res.output
    assert message in res.output
    assert not (tmp_path / "r").exists()


def test_a_price_table_for_another_pool_is_one_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    pool, _ = files
    prices = tmp_path / "other.toml"
    prices.write_text('[models."gpt-4"]\nprice_in = 10.0\nprice_out = 30.0\n')
    res = CliRunner().invoke(
        app, ["calibrate", "--data", str(pool), "--prices", str(prices), "-m", "oracle", "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 1
    assert "error: " in res.output
    assert "prices 'gpt-4', which the pool does not hold; its models are cheap, mid, dear" in res.output
