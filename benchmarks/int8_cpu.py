"""Is an int8 CPU mode worth offering for the built-in ranker? Pair accuracy, winner flips and time per compare.

    python benchmarks/int8_cpu.py [--data ../shared/data/pairs] [--timing-pairs 40] [--rounds 3] [--limit N] [--json OUT]

Variants of ``builtin:pairrm-minilm-l6``, every one scored through the library's own path
(``PairRanker.rank`` with the ``full`` strategy, as ``eval-ranker`` does: the library's tokenization,
truncation, pair layout and length-sorted batches; only the model object that ``pair_logits`` calls is
swapped):

- ``torch fp32``: the library's normal CPU path (the reference of every comparison);
- ``ORT fp32``: the same model exported with ``torch.onnx.export`` and run by ONNX Runtime (the control:
  it must match torch fp32; the script exits 1 when a logit differs by more than 1e-4);
- ``ORT int8 per-channel``: ONNX Runtime dynamic quantization (``quantize_dynamic``, int8 weights with
  one scale per output channel, activations quantized per tensor at run time);
- ``ORT int8 per-tensor``: the same with one scale per weight tensor;
- ``torch.ao int8``: ``torch.ao.quantization.quantize_dynamic`` on the Linear layers (deprecated in
  torch 2.13; the row says so when it no longer runs).

Accuracy is over the non-tie pairs of PandaLM (``pandalm.pairs.jsonl.gz``) and LLMBar Natural
(``llmbar_LLMBar_Natural.pairs.jsonl.gz``), from the both-orders margin ``M[a, b] - M[b, a]``, as
``eval-ranker`` reports it. A flip is a pair (ties included) whose margin has another sign than under torch
fp32. Time per compare: ``ranker.compare([prompt], [a], [b])`` (both orders: one forward pass of two rows) on
``--timing-pairs`` pairs drawn from both sets, one thread everywhere, the variants run in alternating order
in each of ``--rounds`` rounds, each variant's best round kept.

Decision rule (issue 24): an int8 mode is offered only if its accuracy on each dev set stays within one point
(0.01) of torch fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from _common import REPO_ROOT, print_table

from blender_core.data.records import Pair, read_pairs
from blender_core.evaluation.ranker import margin_metrics
from blender_core.ranking.batches import pad_batch
from blender_core.ranking.pairrm.builtin import BUILTIN_RANKER
from blender_core.ranking.pairrm.pair_ranker import PairRanker

SETS = {"PandaLM": "pandalm.pairs.jsonl.gz", "LLMBar": "llmbar_LLMBar_Natural.pairs.jsonl.gz"}
CONTROL_TOLERANCE = 1e-4
ONE_POINT = 0.01


# ---------------------------------------------------------------- the ONNX Runtime variants
class _Logits(torch.nn.Module):
    """The ranker's forward pass with plain tensor inputs and outputs, for the exporter."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(ranker: PairRanker, path: Path) -> None:
    """Export the ranker's model; the example batch is built by the library's encoder and padded, so the
    attention mask is traced with padding in it (batch and sequence length stay dynamic)."""
    enc = ranker.encoder
    src = enc.encode_sources(["Name a colour."])[0]
    short, long_ = enc.encode_candidates(["Red.", "Blue is a colour, and so is green."])
    ids, mask = pad_batch([enc.build(src, short, long_), enc.build(src, short, short)], ranker.pad_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Logits(ranker.model).eval(),
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "logits": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )


class OrtModel:
    """Stands in for the ranker's model inside ``pair_logits``: same call, same ``.logits`` output."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))


def quantize(src: Path, dst: Path, *, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8)


def torch_ao_int8(model: torch.nn.Module) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )


def with_model(base: PairRanker, model: Any) -> PairRanker:
    """The same ranker (tokenizer, encoder, batching settings) with another model object."""
    ranker = copy.copy(base)
    ranker.model = model
    return ranker


# ---------------------------------------------------------------- measuring
@dataclass
class Scores:
    ab: np.ndarray  # M[a, b] per pair
    ba: np.ndarray  # M[b, a] per pair

    @property
    def margin(self) -> np.ndarray:
        return self.ab - self.ba


def score_pairs(ranker: PairRanker, pairs: list[Pair]) -> Scores:
    """The two single-order logits of each pair, from ``rank(..., strategy="full")`` as eval-ranker runs it."""
    rankings = ranker.rank([p.prompt for p in pairs], [[p.a, p.b] for p in pairs], strategy="full")
    matrices = [r.matrix for r in rankings]
    return Scores(np.array([m[0, 1] for m in matrices]), np.array([m[1, 0] for m in matrices]))


def time_compares(rankers: dict[str, PairRanker], pairs: list[Pair], rounds: int) -> dict[str, float]:
    """Best seconds per compare of each ranker, the order of the rankers alternating between rounds."""
    names = list(rankers)
    for name in names:  # warm-up
        rankers[name].compare([pairs[0].prompt], [pairs[0].a], [pairs[0].b])
    best = dict.fromkeys(names, float("inf"))
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            ranker = rankers[name]
            start = time.perf_counter()
            for p in pairs:
                ranker.compare([p.prompt], [p.a], [p.b])
            best[name] = min(best[name], (time.perf_counter() - start) / len(pairs))
    return best


def largest_change(accuracy: dict[str, float | None], base: dict[str, float | None]) -> float:
    """The largest |accuracy - base accuracy| over the sets (the decision rule's measure)."""
    if set(accuracy) != set(base) or any(v is None for v in (*accuracy.values(), *base.values())):
        raise ValueError(f"need an accuracy on the same sets: got {accuracy} against {base}")
    return max(abs(accuracy[s] - base[s]) for s in base)  # type: ignore[operator]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "pairs")
    parser.add_argument("--timing-pairs", type=int, default=40, help="pairs timed per round (half per set)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each set (a quick check)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    data = {name: read_pairs(args.data / file)[: args.limit] for name, file in SETS.items()}
    fp32 = PairRanker.from_pretrained(BUILTIN_RANKER, device="cpu")
    rankers: dict[str, PairRanker] = {"torch fp32": fp32}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_fp32 = Path(tmp) / "ranker.onnx"
        export_onnx(fp32, onnx_fp32)
        rankers["ORT fp32"] = with_model(fp32, OrtModel(onnx_fp32))
        for label, per_channel in (("per-channel", True), ("per-tensor", False)):
            path = Path(tmp) / f"ranker.int8.{label}.onnx"
            quantize(onnx_fp32, path, per_channel=per_channel)
            rankers[f"ORT int8 {label}"] = with_model(fp32, OrtModel(path))
        try:
            rankers["torch.ao int8"] = with_model(fp32, torch_ao_int8(fp32.model))
        except Exception as exc:  # deprecated API: report, do not fail the benchmark
            skipped["torch.ao int8"] = f"{type(exc).__name__}: {exc}"

        scores = {
            name: {s: score_pairs(r, pairs) for s, pairs in data.items()} for name, r in rankers.items()
        }
        rng = random.Random(0)
        half = args.timing_pairs // 2
        timing = [p for pairs in data.values() for p in rng.sample(pairs, min(half, len(pairs)))]
        seconds = time_compares(rankers, timing, args.rounds)

    ref = scores["torch fp32"]
    rows, results = [], {}
    for name in rankers:
        acc = {s: margin_metrics(data[s], scores[name][s].margin).accuracy for s in data}
        flips = sum(int((np.sign(scores[name][s].margin) != np.sign(ref[s].margin)).sum()) for s in data)
        diff = max(
            float(
                np.abs(np.concatenate([scores[name][s].ab - ref[s].ab, scores[name][s].ba - ref[s].ba])).max()
            )
            for s in data
        )
        ms, speedup = seconds[name] * 1000, seconds["torch fp32"] / seconds[name]
        results[name] = {
            "accuracy": acc,
            "flips": flips,
            "max_abs_logit_diff": diff,
            "ms_per_compare": ms,
            "speedup": speedup,
        }
        row = [
            f"{acc['PandaLM']:.4f}",
            f"{acc['LLMBar']:.4f}",
            flips,
            f"{diff:.2e}",
            f"{ms:.2f}",
            f"{speedup:.2f}x",
        ]
        rows.append([name, *row])
    sizes = ", ".join(f"{s} {len(p)} pairs ({sum(x.label != 2 for x in p)} non-tie)" for s, p in data.items())
    print(f"{BUILTIN_RANKER}, {sizes}; {len(timing)} pairs timed, best of {args.rounds} rounds, 1 thread")
    headers = [
        "variant",
        "PandaLM acc",
        "LLMBar acc",
        "flips vs fp32",
        "max |dlogit|",
        "ms/compare",
        "speed-up",
    ]
    print_table(headers, rows)
    for name, why in skipped.items():
        print(f"{name}: not run ({why})")

    base = results["torch fp32"]["accuracy"]
    for name in (n for n in results if "int8" in n):
        worst = largest_change(results[name]["accuracy"], base)
        verdict = "qualifies" if worst <= ONE_POINT else "does not qualify"
        print(
            f"{name}: largest accuracy change {worst * 100:.1f} points -> {verdict} (rule: within 1 point on each set)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results, "skipped": skipped}, indent=2))
    control = results["ORT fp32"]["max_abs_logit_diff"]
    if control > CONTROL_TOLERANCE:
        print(f"ORT fp32 differs from torch fp32 by {control:.2e} > {CONTROL_TOLERANCE}: the export is wrong")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
