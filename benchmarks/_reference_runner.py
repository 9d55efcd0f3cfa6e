"""Run llm-blender 0.0.2 (the reference) on a JSON spec; runs inside the reference venv, not this package's.

Usage: ``<ref-venv>/bin/python benchmarks/_reference_runner.py SPEC.json RESULT.json``

The spec is ``{"ranker": path, "load_kwargs": {...}, "device": "cpu", "threads": int, "calls": [call, ...]}``;
each call is ``{"name": str, "method": "rank" | "compare" | ..., "kwargs": {...}, "seed": int | null,
"warmup": bool, "warmup_kwargs": {...}, "repeats": int}`` (the warm-up call takes ``warmup_kwargs`` when given,
else ``kwargs``). On CUDA the reference runs fp16, as it does with PairRM's config. The result maps each call
name to ``{"result": ..., "times": [s, ...]}``, numpy arrays turned into lists. Everything the reference prints
goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any


def _plain(value: Any) -> Any:
    """JSON-able copy of a result: numpy arrays and scalars become lists and Python numbers."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def main(spec_path: str, result_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    with contextlib.redirect_stdout(sys.stderr):
        import llm_blender
        import torch

        torch.set_num_threads(int(spec.get("threads", 1)))
        device = spec.get("device", "cpu")
        blender = llm_blender.Blender(llm_blender.BlenderConfig(device=device, use_tqdm=False))
        blender.loadranker(spec["ranker"], device=device, **spec.get("load_kwargs", {}))
        out: dict[str, Any] = {}
        for call in spec["calls"]:
            method = getattr(blender, call["method"])
            kwargs = call.get("kwargs", {})
            if call.get("warmup"):
                method(**call.get("warmup_kwargs", kwargs))
            times, result = [], None
            for _ in range(int(call.get("repeats", 1))):
                if call.get("seed") is not None:
                    torch.manual_seed(int(call["seed"]))
                start = time.perf_counter()
                result = method(**kwargs)
                times.append(time.perf_counter() - start)
            out[call["name"]] = {"result": _plain(result), "times": times}
    with open(result_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
