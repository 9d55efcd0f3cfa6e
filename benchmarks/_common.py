"""Helpers shared by the benchmarks: the reference venv, running the reference, test data, timing, tables."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF_VENV = REPO_ROOT / ".refvenv"
RUNNER = Path(__file__).resolve().parent / "_reference_runner.py"
REFERENCE_PACKAGE = "llm-blender==0.0.2"

# Words of the tiny checkpoints' tokenizer corpus (plus a few it has never seen), for readable random texts.
WORDS = (
    "the a an of to and in is it that for on with as was be by this are or from at which but not have "
    "answer question model better worse good bad write list explain python code story poem summary reason "
    "first second third because however therefore example number time people world data value result "
    "source candidate instruction input output response user assistant hello thanks please sure yes no "
    "zebra quantum 42 résumé naïve"
).split()


# ---------------------------------------------------------------- the reference venv
def reference_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def usable_reference(venv: Path) -> Path | None:
    """The reference venv's python if it imports llm_blender, else None (never installs anything)."""
    python = reference_python(venv)
    if not python.exists():
        return None
    probe = subprocess.run([python, "-c", "import llm_blender"], capture_output=True, text=True)
    return python if probe.returncode == 0 else None


def ensure_reference_venv(venv: Path, torch_index_url: str | None = None) -> Path:
    """Return the reference venv's python, creating the venv (torch, transformers<5, llm-blender) if missing."""
    python = reference_python(venv)
    if usable_reference(venv) is not None:
        return python
    if python.exists():
        print(f"{venv} exists but cannot import llm_blender; installing it there", file=sys.stderr)
    else:
        print(f"creating the reference venv {venv} (one time; downloads torch)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    torch_pin = f"torch=={_torch_version()}"
    if torch_index_url:
        subprocess.run([*pip, torch_pin, "--index-url", torch_index_url], check=True)
    subprocess.run([*pip, torch_pin, "transformers<5", REFERENCE_PACKAGE], check=True)
    return python


def run_reference(python: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``_reference_runner.py`` on ``spec`` in the reference venv; returns its JSON result."""
    with tempfile.TemporaryDirectory(prefix="refrun-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run(
            [str(python), str(RUNNER), str(spec_path), str(result_path)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"the reference runner failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result


# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class Prompts:
    """N inputs with their instructions and C candidates each."""

    instructions: list[str]
    inputs: list[str]
    candidates: list[list[str]]


def random_text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!"])


def make_prompts(
    seed: int,
    n_prompts: int,
    n_candidates: int,
    *,
    instruction_words: tuple[int, int],
    input_words: tuple[int, int],
    candidate_words: Sequence[tuple[int, int]],
) -> Prompts:
    """Random prompts; each candidate's length range is drawn from ``candidate_words`` (varied lengths)."""
    rng = random.Random(seed)
    instructions = [random_text(rng, rng.randint(*instruction_words)) + " " for _ in range(n_prompts)]
    inputs = [random_text(rng, rng.randint(*input_words)) for _ in range(n_prompts)]
    candidates = [
        [random_text(rng, rng.randint(*rng.choice(candidate_words))) for _ in range(n_candidates)]
        for _ in range(n_prompts)
    ]
    return Prompts(instructions, inputs, candidates)


# ---------------------------------------------------------------- timing and printing
def best_time(
    fn: Callable[[], Any], repeats: int, warmup: Callable[[], Any] | None = None
) -> tuple[float, Any]:
    """Best wall time of ``repeats`` runs (seconds) after one warm-up run (``warmup``, else ``fn``), and the result."""
    (warmup or fn)()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
