"""Regenerate the golden values of ``tests/test_compat.py`` with the reference package (llm-blender 0.0.2).

    python scripts/make_golden_scores.py [--ref-venv PATH]

Builds the tests' tiny checkpoint (``make_tiny_pairrm(..., "reference", source_maxlength=24,
candidate_maxlength=16)``, seed 0, as ``tests/conftest.py``), runs the reference in its venv on the
inputs of ``tests/golden_inputs.py`` (``batch_size=1``, the reference's exact per-prompt truncation) and
prints Python literals to paste into the test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from pprint import pformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import DEFAULT_REF_VENV, ensure_reference_venv, run_reference

from blender_core.testing.pairrm import make_tiny_pairrm
from tests.helpers.golden_inputs import (
    BUBBLE_SEED,
    CONVERSATION_LIMITS,
    GOLDEN_CANDIDATES,
    GOLDEN_CONVERSATIONS_A,
    GOLDEN_CONVERSATIONS_B,
    GOLDEN_INPUTS,
    GOLDEN_INSTRUCTIONS,
)


def golden_calls() -> list[dict[str, object]]:
    data = {
        "inputs": GOLDEN_INPUTS,
        "candidates": GOLDEN_CANDIDATES,
        "instructions": GOLDEN_INSTRUCTIONS,
        "batch_size": 1,
    }
    pair = {
        "inputs": GOLDEN_INPUTS,
        "candidates_A": [c[0] for c in GOLDEN_CANDIDATES],
        "candidates_B": [c[2] for c in GOLDEN_CANDIDATES],
        "instructions": GOLDEN_INSTRUCTIONS,
        "batch_size": 1,
        "return_logits": True,
    }
    return [
        {"name": "RANK_SCORES", "method": "rank", "kwargs": {**data, "return_scores": True}},
        {"name": "COMPARE_AB", "method": "compare", "kwargs": {**pair, "mode": "[A,B]"}},
        {"name": "COMPARE_BA", "method": "compare", "kwargs": {**pair, "mode": "[B,A]"}},
        {"name": "COMPARE_BOTH", "method": "compare", "kwargs": {**pair, "mode": "[A,B]+[B,A]"}},
        {
            "name": "RANK_WITH_REF_SCORES",
            "method": "rank_with_ref",
            "kwargs": {**data, "return_scores": True},
        },
        {
            "name": "BUBBLE_ALL",
            "method": "get_best_of_n",
            "kwargs": {**data, "return_all": True},
            "seed": BUBBLE_SEED,
        },
    ]


def conversation_calls() -> list[dict[str, object]]:
    conv = {
        "conversations_a": GOLDEN_CONVERSATIONS_A,
        "conversations_b": GOLDEN_CONVERSATIONS_B,
        "return_logits": True,
    }
    return [
        {"name": "CONVERSATION_LOGITS", "method": "compare_conversations", "kwargs": conv},
        {
            "name": "CONVERSATION_LOGITS_AB",
            "method": "compare_conversations",
            "kwargs": {**conv, "mode": "[A,B]"},
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref-venv", type=Path, default=DEFAULT_REF_VENV)
    args = parser.parse_args()
    python = ensure_reference_venv(args.ref_venv)
    with tempfile.TemporaryDirectory() as tmp:
        ranker = make_tiny_pairrm(Path(tmp), "reference", source_maxlength=24, candidate_maxlength=16)
        result = run_reference(python, {"ranker": str(ranker), "threads": 1, "calls": golden_calls()})
        wide = {
            "ranker": str(ranker),
            "threads": 1,
            "calls": conversation_calls(),
            "load_kwargs": CONVERSATION_LIMITS,
        }
        result.update(run_reference(python, wide))
    print("# From llm-blender 0.0.2 (scripts/make_golden_scores.py), batch_size=1.")
    for call in [*golden_calls(), *conversation_calls()]:
        name = str(call["name"])
        print(f"GOLDEN_{name} = {pformat(result[name]['result'], width=100, compact=True)}")


if __name__ == "__main__":
    main()
