"""Ranker speed: this package's PairRanker vs llm-blender 0.0.2 (the reference), same random checkpoints.

    python benchmarks/ranker_speed.py [--ref-venv PATH] [--out DIR] [--models tiny,mid] [--repeats 2] [--threads 1]
    python benchmarks/ranker_speed.py --gpu [--ref-venv PATH] [--out DIR]

CPU (default): two random reference-layout checkpoints, ``tiny`` (hidden 32, 2 layers, limits 128/128) and
``mid`` (DeBERTa-v2 hidden 256, 4 layers, 4 heads, intermediate 1024, limits 1224/412 as PairRM), on 8 prompts x
6 candidates of varied lengths (some candidates over the limits). Times, each the best of ``--repeats`` runs
after one warm-up (on the first prompt): the reference's ``rank`` (full matrix) and ``get_best_of_n`` (bubble)
at ``batch_size=1`` (its exact per-prompt truncation) and at its default ``batch_size=8``; this package with
its defaults: ``rank`` (full matrix), ``best_of_n`` (knockout, the default) and ``best_of_n`` bubble. The
speed-up is against the faster of the two reference settings. Our full-matrix scores are checked against the
reference's ``batch_size=1`` scores (1e-4); the script exits 1 if they differ.

``--gpu``: a PairRM-size random DeBERTa (hidden 1024, 24 layers, 16 heads, intermediate 4096, 2048 positions,
relative attention as DeBERTa-v3) in bf16 on CUDA, 32 prompts x 6 candidates; prints comparisons/s of ours
(bf16 and fp16) and of the reference (fp16, as it loads PairRM on CUDA) when its venv imports there.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    DEFAULT_REF_VENV,
    Prompts,
    best_time,
    ensure_reference_venv,
    make_prompts,
    print_table,
    random_text,
    run_reference,
    usable_reference,
)

from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.testing.pairrm import make_tiny_pairrm

TOLERANCE = 1e-4


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    source_maxlength: int
    candidate_maxlength: int
    encoder: dict[str, Any] = field(default_factory=dict)


TINY = ModelSpec("tiny", "DeBERTa-v2 hidden 32, 2 layers, limits 128/128", 128, 128)
MID = ModelSpec(
    "mid",
    "DeBERTa-v2 hidden 256, 4 layers, 4 heads, limits 1224/412",
    1224,
    412,
    {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "max_position_embeddings": 2048,
    },
)
PAIRRM_SIZE = ModelSpec(
    "pairrm-size",
    "DeBERTa-v3-large shape (hidden 1024, 24 layers, 16 heads), limits 1224/412",
    1224,
    412,
    {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "max_position_embeddings": 2048,
    },
)
CPU_MODELS = {m.name: m for m in (TINY, MID)}


def build(spec: ModelSpec, root: Path) -> Path:
    return make_tiny_pairrm(
        root / spec.name,
        "reference",
        source_maxlength=spec.source_maxlength,
        candidate_maxlength=spec.candidate_maxlength,
        **spec.encoder,
    )


def cpu_prompts() -> Prompts:
    """8 x 6: mostly short and medium answers, about one in eight 330-420 words, and one far over the limits."""
    p = make_prompts(
        0,
        8,
        6,
        instruction_words=(4, 20),
        input_words=(5, 100),
        candidate_words=[(3, 40)] * 4 + [(60, 150)] * 3 + [(330, 420)],
    )
    candidates = [list(c) for c in p.candidates]
    candidates[0][3] = random_text(random.Random(1), 900)  # ~1100 tokens: truncated even with a short source
    return Prompts(p.instructions, p.inputs, candidates)


def gpu_prompts() -> Prompts:
    return make_prompts(
        2,
        32,
        6,
        instruction_words=(4, 30),
        input_words=(10, 200),
        candidate_words=[(10, 80)] * 3 + [(80, 300)] * 2 + [(300, 700)],
    )


def _sources(p: Prompts) -> list[str]:
    return [i + x for i, x in zip(p.instructions, p.inputs, strict=True)]


def _data(p: Prompts, k: int | None = None) -> dict[str, Any]:
    end = len(p.inputs) if k is None else k
    return {"inputs": p.inputs[:end], "candidates": p.candidates[:end], "instructions": p.instructions[:end]}


def _ref_call(name: str, method: str, p: Prompts, repeats: int, **kwargs: Any) -> dict[str, Any]:
    seed = 0 if method == "get_best_of_n" else None
    return {
        "name": name,
        "method": method,
        "kwargs": {**_data(p), **kwargs},
        "warmup": True,
        "warmup_kwargs": {**_data(p, 1), **kwargs},
        "repeats": repeats,
        "seed": seed,
    }


# ---------------------------------------------------------------- CPU
def bench_cpu_model(
    spec: ModelSpec, root: Path, python: Path, p: Prompts, repeats: int, threads: int
) -> dict[str, Any]:
    ckpt = build(spec, root)
    calls = [
        _ref_call("rank.bs1", "rank", p, repeats, return_scores=True, batch_size=1),
        _ref_call("rank.bs8", "rank", p, repeats, return_scores=True, batch_size=8),
        _ref_call("bubble.bs1", "get_best_of_n", p, repeats, batch_size=1),
        _ref_call("bubble.bs8", "get_best_of_n", p, repeats, batch_size=8),
    ]
    ref = run_reference(python, {"ranker": str(ckpt), "threads": threads, "calls": calls})
    ref_time = {k: min(v["times"]) for k, v in ref.items()}

    ranker = PairRanker.from_pretrained(ckpt, device="cpu")  # defaults: fp32, batch_size 32
    sources, cands = _sources(p), p.candidates
    warm = lambda: ranker.rank(sources[:1], cands[:1])  # noqa: E731
    t_full, rankings = best_time(lambda: ranker.rank(sources, cands), repeats, warm)
    t_knockout, knockout_best = best_time(lambda: ranker.best_of_n(sources, cands), repeats, warm)
    t_bubble, _ = best_time(
        lambda: ranker.best_of_n(sources, cands, strategy="bubble", seed=0), repeats, warm
    )

    scores = np.stack([r.scores for r in rankings])
    diff = float(np.abs(scores - np.asarray(ref["rank.bs1"]["result"])).max())
    full_best = [r.best for r in rankings]
    n, c = len(sources), len(cands[0])
    return {
        "model": spec.name,
        "description": spec.description,
        "score_diff": diff,
        "knockout_agrees_with_full": sum(a == b for a, b in zip(knockout_best, full_best, strict=True)),
        "n_prompts": n,
        "rows": [
            (
                "full matrix (rank)",
                n * c * (c - 1),
                ref_time["rank.bs1"],
                ref_time["rank.bs8"],
                "full",
                t_full,
            ),
            (
                "best-of-n",
                n * 2 * (c - 1),
                ref_time["bubble.bs1"],
                ref_time["bubble.bs8"],
                "knockout",
                t_knockout,
            ),
            (
                "best-of-n",
                n * 2 * (c - 1),
                ref_time["bubble.bs1"],
                ref_time["bubble.bs8"],
                "bubble",
                t_bubble,
            ),
        ],
    }


def print_cpu(results: list[dict[str, Any]], threads: int, repeats: int) -> None:
    print(
        f"CPU, torch {torch.__version__}, {threads} thread(s) for both; best of {repeats} after one warm-up; "
        "reference = llm-blender 0.0.2 (its rank = full matrix, its get_best_of_n = bubble); "
        "ours = PairRanker defaults (fp32, batch_size 32). Speed-up = faster reference setting / ours."
    )
    rows = []
    for res in results:
        for task, n_cmp, r1, r8, ours_name, ours in res["rows"]:
            base = min(r1, r8)
            rows.append(
                (
                    res["model"],
                    task,
                    n_cmp,
                    f"{r1:.2f}",
                    f"{r8:.2f}",
                    f"{ours_name} {ours:.2f}",
                    f"{base / ours:.2f}x vs {'bs=1' if r1 <= r8 else 'bs=8'}",
                    f"{r1 / ours:.2f}x / {r8 / ours:.2f}x",
                )
            )
    print_table(
        ["model", "task", "cmp", "ref bs=1 (s)", "ref bs=8 (s)", "ours (s)", "speed-up", "vs bs=1 / bs=8"],
        rows,
    )
    print()
    for res in results:
        print(
            f"{res['model']} ({res['description']}): full-matrix scores vs reference batch_size=1: "
            f"max |diff| {res['score_diff']:.2e} ({'ok' if res['score_diff'] <= TOLERANCE else 'FAIL'}); "
            f"knockout picks the full-matrix best for {res['knockout_agrees_with_full']}/{res['n_prompts']} prompts"
        )


# ---------------------------------------------------------------- GPU
def _time_ours_gpu(
    ckpt: Path, dtype: torch.dtype, sources: list[str], cands: list[list[str]], sync_time: Any
) -> tuple[float, float]:
    ranker = PairRanker.from_pretrained(ckpt, device="cuda", dtype=dtype)
    return sync_time(lambda: ranker.rank(sources, cands)), sync_time(lambda: ranker.best_of_n(sources, cands))


def bench_gpu(root: Path, python: Path | None, repeats: int) -> list[tuple[str, str, int, float]]:
    ckpt = build(PAIRRM_SIZE, root)
    p = gpu_prompts()
    sources, cands = _sources(p), p.candidates
    n, c = len(sources), len(cands[0])
    n_full, n_best = n * c * (c - 1), n * 2 * (c - 1)
    rows = []

    def sync_time(fn: Any) -> float:
        def run() -> Any:
            out = fn()
            torch.cuda.synchronize()
            return out

        return best_time(run, repeats, run)[0]

    for dtype in (torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        t_full, t_best = _time_ours_gpu(ckpt, dtype, sources, cands, sync_time)
        rows.append((f"ours {name}", "rank (full)", n_full, t_full))
        rows.append((f"ours {name}", "best_of_n knockout", n_best, t_best))
        torch.cuda.empty_cache()
    if python is not None:
        calls = [
            _ref_call("rank.bs8", "rank", p, repeats, return_scores=True, batch_size=8),
            _ref_call("rank.bs32", "rank", p, repeats, return_scores=True, batch_size=32),
            _ref_call("bubble.bs8", "get_best_of_n", p, repeats, batch_size=8),
        ]
        ref = run_reference(python, {"ranker": str(ckpt), "device": "cuda", "threads": 8, "calls": calls})
        rows.append(("reference fp16", "rank (bs=8)", n_full, min(ref["rank.bs8"]["times"])))
        rows.append(("reference fp16", "rank (bs=32)", n_full, min(ref["rank.bs32"]["times"])))
        rows.append(
            ("reference fp16", "get_best_of_n bubble (bs=8)", n_best, min(ref["bubble.bs8"]["times"]))
        )
    return rows


def print_gpu(rows: list[tuple[str, str, int, float]], repeats: int, ref_note: str) -> None:
    print(
        f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}; {PAIRRM_SIZE.description}, random weights "
        f"(vocabulary of the tiny tokenizer: the embedding lookup is the only part it changes); 32 prompts x 6 "
        f"candidates; best of {repeats} after one warm-up. {ref_note}"
    )
    print_table(
        ["who", "task", "comparisons", "time (s)", "comparisons/s"],
        [(who, task, k, f"{t:.2f}", f"{k / t:.1f}") for who, task, k, t in rows],
    )


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref-venv", type=Path, default=DEFAULT_REF_VENV)
    parser.add_argument("--torch-index-url", default=None, help="pip index for torch when creating the venv")
    parser.add_argument("--out", type=Path, default=None, help="write speed.json there")
    parser.add_argument("--models", default="tiny,mid", help="CPU models, comma-separated: tiny, mid")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads, the same for both packages"
    )
    parser.add_argument("--gpu", action="store_true", help="the PairRM-size CUDA benchmark instead")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="speed-") as tmp:
        if args.gpu:
            if not torch.cuda.is_available():
                print("--gpu needs CUDA; none is available", file=sys.stderr)
                return 2
            python: Path | None = usable_reference(args.ref_venv)
            note = f"Reference venv: {args.ref_venv}."
            if python is None:
                note = f"Reference skipped: no venv importing llm_blender at {args.ref_venv}."
            gpu_rows = bench_gpu(Path(tmp), python, args.repeats)
            print_gpu(gpu_rows, args.repeats, note)
            if args.out is not None:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "speed_gpu.json").write_text(json.dumps(gpu_rows, indent=2))
            return 0

        torch.set_num_threads(args.threads)
        python = ensure_reference_venv(args.ref_venv, args.torch_index_url)
        prompts = cpu_prompts()
        results = [
            bench_cpu_model(CPU_MODELS[name], Path(tmp), python, prompts, args.repeats, args.threads)
            for name in args.models.split(",")
        ]
    print_cpu(results, args.threads, args.repeats)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "speed.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["score_diff"] <= TOLERANCE for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
