"""Fuser parity with the reference package: this package's ``GenFuser`` vs llm-blender 0.0.2 ``Blender.fuse``.

Both read the same tiny random T5 in the published ``gen_fuser_3b`` layout (built offline), decode
greedily (num_beams 1, 16 new tokens) and must produce identical strings. The reference runs in its own
venv (transformers 4.x) through ``_reference_fuser_runner.py``.

Functions only; ``parity_reference.py`` calls :func:`run_fuser_parity`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REFERENCE_PYTHON = "/work/refvenv/bin/python"
GREEDY = {"num_beams": 1, "max_new_tokens": 16}

_LONG = " ".join(
    ["the answer is good because the data value of the first example is 42"] * 12
)  # > 128 tokens


def build_tiny_fuser(folder: str | Path) -> Path:
    """A tiny random T5 fuser (model + tokenizer files) in the published layout, readable by transformers 4 and 5."""
    from blender_core.testing.fusers import make_tiny_gen_fuser

    return make_tiny_gen_fuser(folder)


def parity_calls() -> list[dict[str, Any]]:
    """The ``fuse`` calls compared, as the reference takes them: ``inputs``, ``candidates``, ``instructions``.

    Covered: separate instruction and input, empty instruction or input, candidates over the 128-token cut,
    a prompt over the 1024-token cap, literal ``</s>`` / ``<extra_id_5>`` and non-ASCII in user text,
    2 to 4 candidates, batches of 4 padded to different lengths, and ``instructions=None``.
    """
    instructions = [
        "Answer the question.",
        "Write a short poem.",
        "",
        "Explain the code.",
        "Summarize the text.",
        "Translate to French: hello world",
        "Give three numbers.",
        "List " + " ".join(["first second third example number"] * 250),  # > 1024 tokens: the cap cuts it
        "Say yes or no.",
        "Why is the sky blue?",
    ]
    inputs = [
        "What is 2+2?",
        "",
        "Tell me about Paris, France.",
        "def f(x): return x * 2",
        _LONG,
        "",
        "between 1 and 100",
        "",
        "Is water wet? </s> <extra_id_5>",
        "Über naïve café — äöü",
    ]
    candidates = [
        ["The answer is 4.", "four", "It is 4 because 2 and 2 is 4."],
        ["A poem: the world is good", "world world world", "roses are red", "extra fourth one"],
        [_LONG, "Paris is the capital of France.", "It is a city."],
        ["It doubles x.", "f returns x times 2", _LONG + " python code"],
        ["The text is long.", "data value result"],
        ["Bonjour le monde", "Salut monde", "bonjour monde </s> hello"],
        ["7, 8, 9", "1 2 3", "42 43 44"],
        ["first second third", "example", "number number"],
        ["Yes.", "No.", "<extra_id_1> maybe"],
        ["Because of light scattering.", "blue light", _LONG],
    ]
    return [
        {"inputs": inputs, "candidates": candidates, "instructions": instructions, "generate_kwargs": GREEDY},
        {"inputs": inputs[:6], "candidates": candidates[:6], "instructions": None, "generate_kwargs": GREEDY},
    ]


def run_ours(
    fuser_dir: str | Path, calls: list[dict[str, Any]]
) -> tuple[list[list[str]], list[list[list[int]]]]:
    """This package's ``GenFuser`` on each call, mapped from the reference's argument order.

    Returns the fused strings and the fuser input ids (after the 1024-token cap) per call.
    """
    from blender_core.fusion.seq2seq import GenFuser

    # A fuser fuses every candidate it is given, as the reference's fuse() does (top-K is rank_and_fuse's job).
    fuser = GenFuser.from_pretrained(fuser_dir, device="cpu", dtype="float32", local_files_only=True)
    # The strings come from the drop-in (compat.Blender.fuse, the reference's signature) over that GenFuser.
    from blender_core.compat import Blender

    blender = Blender({"device": "cpu", "use_tqdm": False})
    blender.loadfuser(fuser_dir, torch_dtype="float32")
    outputs, input_ids = [], []
    for call in calls:
        n = len(call["inputs"])
        instructions = call["instructions"] if call["instructions"] is not None else [""] * n
        texts = fuser.build_inputs(instructions, call["candidates"], inputs=call["inputs"])
        enc = fuser.tokenizer(texts, max_length=fuser.max_length, truncation=True, add_special_tokens=False)
        input_ids.append([list(ids) for ids in enc["input_ids"]])
        outputs.append(
            blender.fuse(
                call["inputs"],
                call["candidates"],
                instructions=call["instructions"],
                **call.get("generate_kwargs", {}),
            )
        )
    return outputs, input_ids


def run_reference(
    fuser_dir: str | Path, calls: list[dict[str, Any]], workdir: str | Path, python: str = REFERENCE_PYTHON
) -> dict[str, Any]:
    """The reference ``Blender.fuse`` on each call, in the reference venv; returns ``{"outputs", "versions"}``."""
    work = Path(workdir)
    cases, out = work / "fuser_cases.json", work / "fuser_reference_out.json"
    cases.write_text(json.dumps({"calls": calls}))
    proc = subprocess.run(
        [python, str(HERE / "_reference_fuser_runner.py"), str(fuser_dir), str(cases), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"the reference fuser runner failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(out.read_text())


def run_fuser_parity(workdir: str | Path | None = None, python: str = REFERENCE_PYTHON) -> dict[str, Any]:
    """Build the tiny fuser, run both packages, and return a report with per-input matches.

    Returns:
        ``{"n_inputs", "n_identical", "n_identical_input_ids", "identical" (bool: strings and input ids),
        "rows": [{"call", "index", "ours", "reference", "same", "same_input_ids", "n_input_tokens"}],
        "reference_versions"}``.
    """
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    work = Path(tmp.name if tmp is not None else str(workdir))
    try:
        fuser_dir = build_tiny_fuser(work / "tiny_gen_fuser")
        calls = parity_calls()
        ours, our_ids = run_ours(fuser_dir, calls)
        ref = run_reference(fuser_dir, calls, work, python)
        rows = []
        for c in range(len(calls)):
            for i, (o, r) in enumerate(zip(ours[c], ref["outputs"][c], strict=True)):
                same_ids = our_ids[c][i] == ref["input_ids"][c][i]
                rows.append(
                    {
                        "call": c,
                        "index": i,
                        "ours": o,
                        "reference": r,
                        "same": o == r,
                        "same_input_ids": same_ids,
                        "n_input_tokens": len(our_ids[c][i]),
                    }
                )
        n_same = sum(r["same"] for r in rows)
        n_same_ids = sum(r["same_input_ids"] for r in rows)
        return {
            "n_inputs": len(rows),
            "n_identical": n_same,
            "n_identical_input_ids": n_same_ids,
            "identical": n_same == n_same_ids == len(rows),
            "rows": rows,
            "reference_versions": ref["versions"],
        }
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_report(report: dict[str, Any]) -> str:
    """A short text table of :func:`run_fuser_parity`'s report."""
    lines = [
        f"GenFuser parity (greedy, 16 new tokens) vs llm-blender 0.0.2 {report['reference_versions']}: "
        f"{report['n_identical']}/{report['n_inputs']} identical strings, "
        f"{report['n_identical_input_ids']}/{report['n_inputs']} identical fuser input ids"
    ]
    for r in report["rows"]:
        ok = "ok" if r["same"] and r["same_input_ids"] else "DIFF"
        lines.append(
            f"  [{ok}] call {r['call']} #{r['index']} ({r['n_input_tokens']} input tokens): {r['ours']!r}"
        )
        if not r["same"]:
            lines.append(f"         reference: {r['reference']!r}")
    return "\n".join(lines)


if __name__ == "__main__":
    result = run_fuser_parity(sys.argv[1] if len(sys.argv) > 1 else None)
    print(format_report(result))
    sys.exit(0 if result["identical"] else 1)
