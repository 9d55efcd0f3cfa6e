"""The output's lock (``blender_core.batch.parts``, the ``filelock`` package) covers every run, local ones too: a
second run on the same output is refused with an error naming the run that holds it, whether that run is in
this process or another one, and a holder that is killed leaves no lock behind."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from blender_core.batch.parts import OutputBusyError, parts_folder
from blender_core.batch.rank_file import rank_files
from tests.core.batch.lock_holder import lock_held_elsewhere
from tests.core.batch.ray_rankers import Gate
from tests.core.batch.records import read_lines, write_lines
from tests.core.batch.sharded_records import many_sets
from tests.helpers.core_fakes import LengthRanker


def test_a_second_local_run_is_refused_naming_the_first(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(12))
    out = tmp_path / "out.jsonl"
    gate = Gate(LengthRanker())
    first: dict[str, object] = {}
    holder = threading.Thread(
        target=lambda: first.update(report=rank_files(inp, out, gate, shard_size=4, show_progress=False))
    )
    holder.start()
    try:
        assert gate.entered.wait(60)  # the first run holds the lock and ranks its first shard
        ranker = LengthRanker()
        with pytest.raises(OutputBusyError) as info:
            rank_files(inp, out, ranker, show_progress=False)
    finally:
        gate.open.set()
        holder.join(60)
    message = str(info.value)
    assert message.startswith(
        f"another run is writing {out}: process {os.getpid()} on {socket.gethostname()}, started "
    )
    assert message.endswith(
        f"Wait for it to finish, or stop it, then run again (its lock, {parts_folder(out) / 'lock'}, is released "
        "when its process ends)"
    )
    assert ranker.calls == []  # the refused run ranked nothing
    assert first["report"].written == 12  # type: ignore[attr-defined]  # and wrote nothing beside the first
    assert len(read_lines(out)) == 12
    assert not parts_folder(out).exists()
    assert rank_files(inp, out, LengthRanker(), show_progress=False).skipped == 12  # the lock is free again


def test_a_run_in_another_process_is_named_and_its_death_frees_the_output(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(6))
    out = tmp_path / "out.jsonl"
    with lock_held_elsewhere(out) as proc:
        with pytest.raises(OutputBusyError, match=rf"^another run is writing .*: process {proc.pid} on "):
            rank_files(inp, out, LengthRanker(), show_progress=False)
        assert not out.exists()
        proc.kill()  # killed, without a chance to let go: the system frees the lock
        proc.wait(30)
    report = rank_files(inp, out, LengthRanker(), show_progress=False)
    assert report.written == 6
    assert not parts_folder(out).exists()  # the dead run's lock and owner file went with this run's folder
