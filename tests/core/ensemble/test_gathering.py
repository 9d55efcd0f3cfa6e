"""Cross-request batching through the engine: concurrent requests (asyncio tasks, threads calling the sync
engine) share the ranker's forward passes and each gets exactly the scores it gets alone."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from blender_core.ensemble import Ensemble, EnsembleConfig
from blender_core.ranking import PairRanker
from tests.helpers.core_fakes import aanswering, answering

PROMPTS = [f"question {k}: what is {k} + {k}?" for k in range(8)]


def answers(k: int) -> dict[str, str]:
    return {"a": f"it is {2 * k}", "b": f"{2 * k}, since {k} + {k} = {2 * k}", "c": "I do not know"}


def test_concurrent_async_requests_are_batched_and_score_as_alone(tiny_ranker: PairRanker) -> None:
    config = EnsembleConfig(rank_batch_window_ms=50.0, rank_max_batch=16)
    alone = Ensemble(tiny_ranker, None, config)
    one_by_one = [
        alone.run(p, {n: answering(t) for n, t in answers(k).items()}).blend.scores for k, p in enumerate(PROMPTS)
    ]
    engine = Ensemble(tiny_ranker, None, config)
    runs = tiny_ranker.gatherer.runs

    async def all_at_once() -> list[tuple[float, ...]]:
        outcomes = await asyncio.gather(
            *(
                engine.arun(p, {n: aanswering(t, delay=0.01) for n, t in answers(k).items()})
                for k, p in enumerate(PROMPTS)
            )
        )
        return [o.blend.scores for o in outcomes]

    assert asyncio.run(all_at_once()) == one_by_one  # bit for bit
    assert tiny_ranker.gatherer.runs > runs  # some requests shared a forward-pass engine call


def test_threads_calling_the_sync_engine_are_batched_and_score_as_alone(tiny_ranker: PairRanker) -> None:
    engine = Ensemble(tiny_ranker, None, rank_batch_window_ms=50.0)
    one_by_one = [
        engine.run(p, {n: answering(t) for n, t in answers(k).items()}).blend.scores for k, p in enumerate(PROMPTS)
    ]
    runs = tiny_ranker.gatherer.runs

    def run(k: int) -> tuple[float, ...]:
        return engine.run(PROMPTS[k], {n: answering(t, delay=0.01) for n, t in answers(k).items()}).blend.scores

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        assert list(pool.map(run, range(len(PROMPTS)))) == one_by_one
    assert tiny_ranker.gatherer.runs > runs


def test_rank_max_batch_1_turns_gathering_off(tiny_ranker: PairRanker) -> None:
    engine = Ensemble(tiny_ranker, None, rank_max_batch=1)
    runs = tiny_ranker.gatherer.runs

    async def all_at_once() -> None:
        await asyncio.gather(
            *(engine.arun(p, {n: aanswering(t) for n, t in answers(k).items()}) for k, p in enumerate(PROMPTS))
        )

    asyncio.run(all_at_once())
    assert tiny_ranker.gatherer.runs == runs
