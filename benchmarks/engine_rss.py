"""Memory of the engine under steady concurrent load: does RSS climb (a leak) or only swing?

    python benchmarks/engine_rss.py [--blocks 8] [--per-block 400] [--concurrency 16]

The async engine with a tiny random PairRM (built offline; cross-request batching on, as by default) and
three fake async backends of 10 / 15 / 20 ms, ``--blocks`` x ``--per-block`` requests at ``--concurrency``
(bounded in count); prints the process's RSS and thread count after each block.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import torch

from blender_core.ensemble import BackendAnswer, Ensemble
from blender_core.testing.pairrm import make_tiny_pairrm


def backend(name: str, delay: float) -> Callable[[str], Awaitable[BackendAnswer]]:
    async def call(prompt: str) -> BackendAnswer:
        await asyncio.sleep(delay)
        return BackendAnswer(f"Paris ({name}).")

    return call


async def load(engine: Ensemble, blocks: int, per_block: int, concurrency: int) -> None:
    calls = {f"b{k}": backend(f"b{k}", d) for k, d in enumerate((0.01, 0.015, 0.02))}
    gate = asyncio.Semaphore(concurrency)
    proc = psutil.Process()

    async def one(i: int) -> None:
        async with gate:
            await engine.arun(f"What is the capital of France? {i % 7}", calls)

    for block in range(blocks):
        await asyncio.gather(*(one(i) for i in range(per_block)))
        rss = proc.memory_info().rss / 2**20
        print(f"after {(block + 1) * per_block} requests: RSS {rss:.1f} MB, threads {proc.num_threads()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--per-block", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ranker = make_tiny_pairrm(Path(tmp) / "ranker", "reference", source_maxlength=64, candidate_maxlength=64)
        asyncio.run(load(Ensemble(str(ranker)), args.blocks, args.per_block, args.concurrency))


if __name__ == "__main__":
    main()
