"""A Ray that ``blender-llm rank --engine ray`` starts for itself keeps its own logs off the user's terminal (issue 21:
Ray's token-auth warning, a ``core_worker.cc … E`` line, and its actors' output behind raw ANSI prefixes, such as
their weight-loading bars, all came through); what the command says, and the errors that matter, still do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.batch.lock_holder import ROOT
from tests.core.batch.records import read_lines, write_lines
from tests.core.batch.sharded_records import many_sets


def _rank_on_own_ray(inp: Path, out: Path, model: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "blender_core.app.cli", "rank", str(inp), "--out", str(out), "-m", model]
    cmd += ["--engine", "ray", "--cpus-per-actor", "0.5", "--device", "cpu"]  # and its progress bar
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # a Ray of its own, Ray's defaults
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_the_terminal_shows_the_command_and_none_of_rays_own_logs(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray.data", reason="the [ray] extra is not installed")
    inp = write_lines(tmp_path / "in.jsonl", many_sets(6))
    out = tmp_path / "out.jsonl"
    res = _rank_on_own_ray(inp, out, str(tiny_native_ckpt))
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(read_lines(out)) == 6
    assert res.stdout.splitlines()[-1].startswith("ranked 6 records;")
    assert "\x1b[" not in res.stderr  # no coloured actor prefixes
    lines = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines
    assert all(line.startswith("rank:") for line in lines), lines  # the bar, and nothing else
    # an error that matters still says what failed: a ranker each actor fails to load
    bad = _rank_on_own_ray(inp, tmp_path / "bad.jsonl", str(tmp_path / "in.jsonl"))
    assert bad.returncode == 1
    assert "\x1b[" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: the Ray job failed: ")
