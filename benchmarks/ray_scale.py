"""Batch ranking on Ray vs one process: records/s of ``rank`` in this process and on Ray with 1 and 2 actors.

    python benchmarks/ray_scale.py [--data PATH] [--copies 2] [--models tiny,builtin] [--shard-size 16]

The input is real: the 164 PandaLM instructions of ``../shared/data/pairs/pandalm.cands.jsonl.gz`` with their
4-5 candidates each (``--copies`` repeats them, with new ids, for a longer run), ranked with the full matrix
(n(n-1) comparisons per record), on CPU. Models: ``tiny`` (a random PairRM checkpoint built offline: the
engine's own cost) and ``builtin`` (``builtin:pairrm-minilm-l6``, a 22M MiniLM cross-encoder: a real model's
cost). For each model, in one run, on one local Ray (this machine's CPUs, no dashboard):

- ``local``: ``rank_file`` in this process, torch's default threads (all cores): the baseline of the ratios;
- ``local 1 thread``: the same on one core, what one 1-CPU actor should match;
- ``ray N actor(s)``: ``rank_with_ray`` with N actors of 1 CPU each (torch on 1 thread each), wall time from
  the call (actors start and load the ranker) to the merged output; "steady" is the rate between the first
  and the last shard written, per actor: the figure a cluster multiplies by its actors.

The rankings of every run must equal the local run's (same records in the same order, scores within 1e-4,
ranks that differ only between candidates tied that closely); the script exits 1 otherwise. It ends with the
driver's ceiling (a ranker that costs nothing, on 40 copies of the data in shards of 256: how many records/s
one driver can read, shard, hand to Ray and merge) and the estimate for a GPU actor at PairRM size, with its
formula.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' length ranker, for the driver's ceiling

from blender_core.batch.rank_file import rank_file  # noqa: E402
from blender_core.batch.ray_cluster import RaySettings  # noqa: E402
from blender_core.batch.ray_engine import rank_with_ray  # noqa: E402
from blender_core.batch.shards import ShardDone  # noqa: E402
from blender_core.ranking import load_ranker  # noqa: E402
from tests.helpers.core_fakes import LengthRanker  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pairs" / "pandalm.cands.jsonl.gz"
BUILTIN = "builtin:pairrm-minilm-l6"
# PairRM (DeBERTa-v3-large): parameters, and its input limits (source, each candidate) in tokens
PAIRRM_PARAMS = 435e6
PAIRRM_LIMITS = (1224, 412)
# dense bf16 peak FLOP/s, and the share of it an encoder's batched inference sustains (an assumption)
GPU_PEAKS = {"A100": 312e12, "L4": 121e12, "H100/H200": 989e12}
UTILISATION = 0.3
# the driver's ceiling: the records (copies of the data) and the shard size (the CLI's default) it is measured on
CEILING_COPIES = 40
CEILING_SHARD = 256


def write_input(data: Path, copies: int, path: Path) -> tuple[int, float]:
    """The PandaLM candidate sets as ``{id, prompt, candidates, models}`` lines; (records, mean candidates)."""
    rows = [json.loads(line) for line in gzip.open(data, "rt", encoding="utf-8")]
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for copy in range(copies):
            for k, row in enumerate(rows):
                models, texts = zip(*row["candidates"].items(), strict=True)
                record = {"id": f"{copy}-{k}", "prompt": row["prompt"], "candidates": texts, "models": models}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
    mean = sum(len(r["candidates"]) for r in rows) / len(rows)
    return n, mean


def spec_of(model: str, workdir: Path) -> str:
    if model == "builtin":
        return BUILTIN
    if model == "tiny":
        from blender_core.testing.pairrm import make_tiny_pairrm

        return str(
            make_tiny_pairrm(workdir / "tiny", "reference", source_maxlength=128, candidate_maxlength=128)
        )
    return model


def same_rankings(got: Path, want: Path) -> tuple[float, str | None]:
    """The largest score difference between two outputs, and what differs beyond float noise (None: nothing).

    Records, their order and their scores must match (1e-4); ranks may differ only between candidates whose
    scores are that close (a near-tie of the random tiny model can flip with the number of threads).
    """
    a = [json.loads(x) for x in got.read_text().splitlines()]
    b = [json.loads(x) for x in want.read_text().splitlines()]
    if [r["id"] for r in a] != [r["id"] for r in b]:
        return float("nan"), f"{got.name}: other records or order than {want.name}"
    worst = max(
        abs(x - y) for r, s in zip(a, b, strict=True) for x, y in zip(r["scores"], s["scores"], strict=True)
    )
    if worst > 1e-4:
        return worst, f"{got.name}: scores differ from {want.name} by {worst:.2e}"
    for r, s in zip(a, b, strict=True):
        x, y, scores = r["ranks"], s["ranks"], s["scores"]
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                flipped = (x[i] > x[j]) - (x[i] < x[j]) != (y[i] > y[j]) - (y[i] < y[j])
                if flipped and abs(scores[i] - scores[j]) > 2e-4:
                    return worst, f"{got.name}: record {r['id']} ranked otherwise than in {want.name}"
    return worst, None


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run_local(spec: str, inp: Path, out: Path, threads: int) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ranker = load_ranker(spec, device="cpu", batch_size=32)
        ranker.rank(["warm-up?"], [["a", "b"]])
        return timed(lambda: rank_file(ranker, inp, out, show_progress=False))
    finally:
        torch.set_num_threads(before)


def run_ray(spec: Any, inp: Path, out: Path, actors: int, shard_size: int) -> tuple[float, float]:
    """(wall s, steady records/s per actor)."""
    stamps: list[tuple[float, int]] = []

    def on_shard(done: ShardDone) -> None:
        stamps.append((time.perf_counter(), done.records))

    options = {"device": "cpu", "batch_size": 32} if isinstance(spec, str) else None
    wall = timed(
        lambda: rank_with_ray(
            inp,
            out,
            spec,
            ranker_options=options,
            ray_settings=RaySettings(actors=actors, cpus_per_actor=1.0),
            shard_size=shard_size,
            show_progress=False,
            on_shard=on_shard,
        )
    )
    # steady: from the first shard written to the last, the records of every shard after the first
    span = stamps[-1][0] - stamps[0][0] if len(stamps) > 1 else 0.0
    steady = sum(n for _, n in stamps[1:]) / span / actors if span > 0 else float("nan")
    return wall, steady


def tokens_per_comparison(inp: Path) -> float:
    """Mean tokens of one comparison (source + two candidates) within PairRM's limits, counted with the
    built-in ranker's WordPiece tokenizer (PairRM's SentencePiece counts are within ~10% of it)."""
    tokenizer = load_ranker(BUILTIN, device="cpu").tokenizer  # type: ignore[attr-defined]
    total = count = 0
    for line in inp.read_text().splitlines():
        r = json.loads(line)
        src = min(len(tokenizer.tokenize(r["prompt"])), PAIRRM_LIMITS[0])
        cands = [min(len(tokenizer.tokenize(c)), PAIRRM_LIMITS[1]) for c in r["candidates"]]
        n = len(cands)
        for i in range(n):
            for j in range(n):
                if i != j:
                    total += src + cands[i] + cands[j] + 4
                    count += 1
    return total / count


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--copies", type=int, default=1, help="repeat the 164 records this many times")
    parser.add_argument("--models", default="tiny,builtin")
    parser.add_argument("--shard-size", type=int, default=16)
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"no data at {args.data}; pass --data PATH (pandalm.cands.jsonl.gz)", file=sys.stderr)
        return 2
    import ray

    failures: list[str] = []
    worst = 0.0
    rows: list[tuple[str, str, float, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inp = work / "in.jsonl"
        n, mean_cands = write_input(args.data, args.copies, inp)
        comparisons = n * mean_cands * (mean_cands - 1)
        print(
            f"{n} records, {mean_cands:.2f} candidates each on average (full matrix: ~{comparisons:.0f} comparisons)"
        )
        print(f"this machine: {torch.get_num_threads()} torch threads; ray {ray.__version__}")
        t0 = time.perf_counter()
        ray.init(
            address="local", num_cpus=torch.get_num_threads(), include_dashboard=False, log_to_driver=False
        )
        print(f"ray.init: {time.perf_counter() - t0:.1f} s (once per run; not in the figures below)")
        try:
            for model in args.models.split(","):
                spec = spec_of(model, work)
                want = work / f"{model}-local.jsonl"
                base = run_local(spec, inp, want, torch.get_num_threads())
                rows.append((model, "local", base, n / base, 1.0, ""))
                one = run_local(spec, inp, work / f"{model}-local1.jsonl", 1)
                rows.append((model, "local 1 thread", one, n / one, base / one, f"{n / one:.1f}/core"))
                outs = [work / f"{model}-local1.jsonl"]
                for actors in (1, 2):
                    out = work / f"{model}-ray{actors}.jsonl"
                    wall, steady = run_ray(spec, inp, out, actors, args.shard_size)
                    label = f"ray {actors} actor{'s' if actors > 1 else ''}"
                    rows.append((model, label, wall, n / wall, base / wall, f"{steady:.1f}/actor"))
                    outs.append(out)
                for out in outs:
                    diff, failure = same_rankings(out, want)
                    worst = max(worst, diff)
                    failures += [failure] if failure else []
            many = work / "many.jsonl"
            records = write_input(args.data, CEILING_COPIES, many)[0]
            wall, steady = run_ray(LengthRanker(), many, work / "ceiling.jsonl", 2, CEILING_SHARD)
            ceiling = (records / wall, 2 * steady)
        finally:
            ray.shutdown()
        tokens = tokens_per_comparison(inp)

    print(f"\n{'model':8} {'engine':16} {'wall s':>8} {'records/s':>10} {'x local':>8}  steady")
    for model, label, wall, rate, ratio, steady in rows:
        print(f"{model:8} {label:16} {wall:8.1f} {rate:10.1f} {ratio:8.2f}  {steady}")
    print(f"\nevery run ranked as the local one: largest score difference {worst:.1e}")
    print(
        f"driver ceiling (a ranker that costs nothing, 2 actors, {records} records in shards of {CEILING_SHARD}): "
        f"{ceiling[1]:.0f} records/s steady, {ceiling[0]:.0f} end to end"
    )
    per_record = mean_cands * (mean_cands - 1)
    flops = 2 * PAIRRM_PARAMS * tokens * per_record
    print(
        f"\nGPU actor at PairRM size (estimate, not measured): records/s = U x peak / (2 x P x T x C), with\n"
        f"  P = {PAIRRM_PARAMS / 1e6:.0f}M parameters, T = {tokens:.0f} tokens per comparison on this data, "
        f"C = {per_record:.1f} comparisons per record (full), U = {UTILISATION} of the bf16 peak:"
    )
    for gpu, peak in GPU_PEAKS.items():
        print(f"  {gpu:10} {UTILISATION * peak / flops:8.1f} records/s per GPU actor")
    if failures:
        print("\nFAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
