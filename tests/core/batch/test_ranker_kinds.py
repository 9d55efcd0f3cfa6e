"""Batch ranking and ranker evaluation run with each kind of ranker, through the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blender_core.app.cli import app
from blender_core.batch.rank_file import rank_file
from blender_core.data.records import CandidateSet, Pair
from blender_core.evaluation.ranker import evaluate_pairs, evaluate_selection
from blender_core.ranking import Ranker

SETS = [
    {
        "prompt": "What is 2 + 2?",
        "candidates": ["4", "It is four, since 2 + 2 = 4.", "5"],
        "scores": [2.0, 3.0, 1.0],
    },
    {"prompt": "Name a colour.", "candidates": ["Blue is a colour.", "Car"], "scores": [2.0, 1.0]},
]


def write(path: Path) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in SETS))
    return path


def test_rank_file(any_ranker: Ranker, tmp_path: Path) -> None:
    report = rank_file(any_ranker, write(tmp_path / "in.jsonl"), tmp_path / "out.jsonl", show_progress=False)
    assert report.written == 2
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = any_ranker.rank([s["prompt"] for s in SETS], [s["candidates"] for s in SETS])
    assert [r["best"] for r in rows] == [e.best for e in expected]
    assert [r["ranks"] for r in rows] == [[int(x) for x in e.ranks] for e in expected]


def test_evaluation(any_ranker: Ranker) -> None:
    pairs = [Pair("q", "a short one", "a much longer answer here", 1), Pair("q2", "long answer text", "x", 0)]
    result = evaluate_pairs(any_ranker, pairs, name="p", show_progress=False)["p"]
    assert result.n == 2
    assert result.accuracy is not None
    sets = [
        CandidateSet(s["prompt"], tuple(s["candidates"]), tuple(s["scores"]), None, str(k))
        for k, s in enumerate(SETS)
    ]
    selection = evaluate_selection(any_ranker, sets, show_progress=False)
    assert selection.n == 2


def test_cli_with_a_reward_model(tiny_reward_dir: Path, tmp_path: Path) -> None:
    inp = write(tmp_path / "in.jsonl")
    res = CliRunner().invoke(
        app,
        [
            "rank",
            str(inp),
            "--out",
            str(tmp_path / "o.jsonl"),
            "-m",
            f"reward:{tiny_reward_dir}",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"ranker: reward:{tiny_reward_dir}" in res.stdout
    pairs = tmp_path / "p.pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "a": "yes it is", "b": "no", "label": 0}) + "\n")
    res = CliRunner().invoke(
        app,
        [
            "eval-ranker",
            "--model",
            f"reward:{tiny_reward_dir}",
            "--data",
            str(pairs),
            "--out",
            str(tmp_path / "ev"),
            "--no-plot",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["model"] == f"reward:{tiny_reward_dir}"
