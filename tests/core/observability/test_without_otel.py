"""Without ``opentelemetry-api`` nothing of OpenTelemetry is imported and an ensemble runs as ever: a
subprocess where every ``opentelemetry`` import fails runs whole requests (sync, async, streamed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

RUN = """
import asyncio, importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

sys.meta_path.insert(0, Blocked())
try:
    import opentelemetry.trace
except ModuleNotFoundError:
    print("BLOCKED")

from blender_core.ensemble import BackendAnswer, Ensemble
from blender_core.observability.tracing import get_tracer
from tests.helpers.core_fakes import LengthRanker, ScriptedFuser


def calls():
    return {"a": lambda: BackendAnswer("4"), "b": lambda: BackendAnswer("four")}


async def acalls_run(engine):
    async def a():
        return BackendAnswer("4")
    async def b():
        return BackendAnswer("four")
    return await engine.arun("2+2?", {"a": a, "b": b})


engine = Ensemble(LengthRanker(), ScriptedFuser(), top_k=2, timeout=5)
assert engine.tracer is None and get_tracer() is None
print("RUN", engine.run("2+2?", calls()).text)
print("STREAM", [type(e).__name__ for e in engine.stream("2+2?", calls())][-1])
print("ARUN", asyncio.run(acalls_run(engine)).best.backend)
print("OTEL", sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
"""


def test_an_ensemble_runs_without_opentelemetry_and_imports_none_of_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", RUN], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert "BLOCKED" in out  # the block works: opentelemetry is installed here
    assert "RUN four + 4" in out
    assert "STREAM EnsembleOutcome" in out
    assert "ARUN b" in out
    assert "OTEL []" in out
