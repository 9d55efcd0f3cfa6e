"""Reaping what a killed run's local Ray left (``blender_core.batch.local_ray``), without Ray: a process holding a file
in the noted Ray folder stands for Ray's agents and actors. Only the processes of that folder are stopped, only when
the noted driver is gone and the note is of this machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blender_core.batch.local_ray import NOTE, reap_orphans

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reaping reads /proc (Linux)")

_HOLD = "import sys, time; f = open(sys.argv[1], 'w'); print('open', flush=True); time.sleep(120)"


def _start_time(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[19]


@pytest.fixture
def ray_folder() -> Iterator[Path]:
    """A Ray folder as the package names its own, under /tmp (where a local Ray's folder goes)."""
    folder = Path(tempfile.mkdtemp(prefix="blender-llm-ray-", dir="/tmp"))
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.fixture
def holder(ray_folder: Path) -> Iterator[subprocess.Popen[str]]:
    """A process with a file open in the Ray folder, as Ray's agents have their logs."""
    (ray_folder / "session_x" / "logs").mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(ray_folder / "session_x" / "logs" / "agent.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "open"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def _dead_driver() -> tuple[int, str]:
    """The pid and start time of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = _start_time(proc.pid)
    proc.kill()
    proc.wait(30)
    return proc.pid, started


def _note(parts: Path, ray_folder: Path, pid: int, started: str, host: str | None = None) -> None:
    parts.mkdir(exist_ok=True)
    note = {"host": host or socket.gethostname(), "pid": pid, "started": started, "ray": str(ray_folder)}
    (parts / NOTE).write_text(json.dumps(note))


def test_the_ray_of_a_killed_driver_is_reaped(tmp_path: Path, ray_folder: Path, holder: subprocess.Popen[str]) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], cwd=tmp_path)
    try:
        _note(tmp_path / "out.jsonl.parts", ray_folder, *_dead_driver())
        assert reap_orphans(tmp_path / "out.jsonl.parts") == [holder.pid]
        assert holder.wait(10) == -9
        assert bystander.poll() is None  # a process of another folder is left alone
    finally:
        bystander.kill()
        bystander.wait(30)
    assert not ray_folder.exists()
    assert not (tmp_path / "out.jsonl.parts" / NOTE).exists()
    assert reap_orphans(tmp_path / "out.jsonl.parts") == []  # nothing noted any more


def test_a_driver_that_still_runs_keeps_its_ray(tmp_path: Path, ray_folder: Path, holder: subprocess.Popen[str]) -> None:
    """A process whose job failed lives on with its Ray (a notebook): its note is left for the run that removes it."""
    _note(tmp_path, ray_folder, os.getpid(), _start_time(os.getpid()))
    assert reap_orphans(tmp_path) == []
    assert holder.poll() is None
    assert ray_folder.exists()
    # a driver process id taken by another process since is no driver: then it is reaped
    _note(tmp_path, ray_folder, os.getpid(), "1")
    assert reap_orphans(tmp_path) == [holder.pid]


def test_a_note_of_another_machine_or_folder_is_not_acted_on(
    tmp_path: Path, ray_folder: Path, holder: subprocess.Popen[str]
) -> None:
    _note(tmp_path, ray_folder, *_dead_driver(), host="another-node")
    assert reap_orphans(tmp_path) == []  # on a cluster, another node's processes are not this one's to stop
    assert (tmp_path / NOTE).exists()
    _note(tmp_path, Path("/tmp/ray"), *_dead_driver())
    assert reap_orphans(tmp_path) == []  # Ray's shared folder, not one this package made for a run
    assert holder.poll() is None
    assert not (tmp_path / NOTE).exists()
