"""Another process that holds an output's lock, as a second ``rank`` run would find it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

_HOLD = """
import sys
from blender_core.batch.parts import PartStore
with PartStore(sys.argv[1]).locked():
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def lock_held_elsewhere(out: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding ``out``'s lock for the block (killed after it, if the block has not killed it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
