"""``kill -9`` of the driver of ``blender-llm rank --engine ray`` that started its own local Ray, then an immediate rerun
(issue 20): Ray's processes of the killed run (its dashboard and runtime-env agents, its actors, still ranking) outlive
the driver for 8-60 s. The rerun starts a Ray of its own (never the dying one), reaps those orphans before it ranks,
and ends with every record once. Real processes, this machine's 2 CPUs, bounded in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.core.batch.lock_holder import ROOT
from tests.core.batch.records import read_lines, write_lines
from tests.core.batch.sharded_records import keys, many_sets

psutil = pytest.importorskip("psutil")


def _alive(proc: Any) -> bool:
    """Whether a process still runs (the same process: psutil checks its start time; a zombie holds nothing)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _wait_for_lines(out: Path, proc: subprocess.Popen[bytes], more_than: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_bytes().splitlines()) > more_than:
            return
        time.sleep(0.05)


def test_a_rerun_right_after_a_killed_driver_reaps_its_ray_and_writes_each_record_once(
    tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray.data", reason="the [ray] extra is not installed")
    # three times the candidates (slower shards, so the kill lands mid-run); models dropped to match
    records = [
        {**{k: v for k, v in r.items() if k != "models"}, "candidates": r["candidates"] * 3}
        for r in many_sets(120, seed=9)
        if "candidates" in r
    ]
    inp = write_lines(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "blender_core.app.cli", "rank", str(inp), "--out", str(out), "-m", str(tiny_native_ckpt)]
    cmd += ["--engine", "ray", "--actors", "2", "--cpus-per-actor", "0.5", "--shard-size", "2", "--chunk-size", "2"]
    cmd += ["--batch-size", "8", "--device", "cpu", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own, as a plain command
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ray_of_first: list[Any] = []
    second: subprocess.Popen[bytes] | None = None
    try:
        _wait_for_lines(out, first, 3, 180)
        assert first.poll() is None, first.stderr.read().decode()[-3000:] if first.stderr else ""
        ray_of_first = psutil.Process(first.pid).children(recursive=True)  # its GCS, raylet, agents, actors
        os.kill(first.pid, signal.SIGKILL)  # the driver alone, as the issue did
        first.wait(30)
        orphans = [p for p in ray_of_first if _alive(p)]
        assert orphans, "nothing of the killed run's Ray outlived it"
        before = out.read_bytes()
        assert 4 <= len(read_lines(out)) < len(records)

        start = time.monotonic()
        second = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for_lines(out, second, len(before.splitlines()), 240)  # the rerun's first shard is merged
        left_when_ranking = [p.pid for p in orphans if _alive(p)]
        stdout, stderr = second.communicate(timeout=240)
        took = time.monotonic() - start
    finally:  # whatever the outcome, nothing this test started stays behind
        for proc in [*ray_of_first, *([psutil.Process(second.pid)] if second and second.poll() is None else [])]:
            if _alive(proc):
                proc.kill()
        if first.poll() is None:
            first.kill()
    assert second.returncode == 0, stderr.decode()[-3000:]
    assert left_when_ranking == []  # the killed run's Ray was reaped before the rerun ranked
    assert took < 240
    assert out.read_bytes().startswith(before)
    assert keys(out) == [r.get("id", k) for k, r in enumerate(records, 1)]  # every record once, in input order
    assert f"skipped {len(before.splitlines())} already in {out}" in stdout.decode()  # it resumed
