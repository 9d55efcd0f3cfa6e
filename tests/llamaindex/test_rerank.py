"""PairRankerRerank: ordering, copies, events, async path and a RAG query engine over a vector index."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from blender_core.ranking import registry
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from llamaindex_blender import PairRankerRerank
from tests.helpers.event_loop import ticking

QUERY = "explain the answer to the question"
TEXTS = [
    "the answer is good because of the reason",
    "no",
    "python code example: list of numbers",
    "a short story about the world and people",
    "thanks, please write a poem",
]


def make_nodes(scores: list[float | None] | None = None) -> list[NodeWithScore]:
    scores = scores if scores is not None else [0.9, 0.8, 0.7, 0.6, 0.5]
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"i": i}), score=s)
        for i, (t, s) in enumerate(zip(TEXTS, scores, strict=True))
    ]


def ranked_texts(nodes: list[NodeWithScore]) -> list[str]:
    """What the ranker reads: the node content with its embed-mode metadata (the postprocessor's default)."""
    return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]


def expected(ranker: PairRanker, texts: list[str] | None = None, strategy: str = "full") -> tuple[list[int], list[float]]:
    (r,) = ranker.rank([QUERY], [texts if texts is not None else ranked_texts(make_nodes())], strategy=strategy)
    return list(r.order), [float(r.scores[i]) for i in r.order]


def test_order_and_scores_match_the_ranker(tiny_ranker: PairRanker) -> None:
    order, scores = expected(tiny_ranker)
    out = PairRankerRerank(ranker=tiny_ranker, top_n=3).postprocess_nodes(make_nodes(), query_str=QUERY)
    assert [n.node.node_id for n in out] == [f"n{i}" for i in order[:3]]
    assert [n.score for n in out] == pytest.approx(scores[:3])
    got = [float(n.score or 0.0) for n in out]
    assert got == sorted(got, reverse=True)


@pytest.mark.parametrize("strategy", ["knockout", "sort"])
def test_strategy_is_passed_to_the_ranker(tiny_ranker: PairRanker, strategy: str) -> None:
    order, _ = expected(tiny_ranker, strategy=strategy)
    out = PairRankerRerank(ranker=tiny_ranker, top_n=None, strategy=strategy).postprocess_nodes(
        make_nodes(), query_str=QUERY
    )
    assert [n.node.node_id for n in out] == [f"n{i}" for i in order]


def test_metadata_mode_chooses_the_ranked_text(tiny_ranker: PairRanker) -> None:
    order, _ = expected(tiny_ranker, TEXTS)
    out = PairRankerRerank(ranker=tiny_ranker, top_n=None, metadata_mode=MetadataMode.NONE).postprocess_nodes(
        make_nodes(), query_str=QUERY
    )
    assert [n.node.node_id for n in out] == [f"n{i}" for i in order]


def test_caller_nodes_are_not_mutated(tiny_ranker: PairRanker) -> None:
    nodes = make_nodes()
    before = copy.deepcopy([n.model_dump() for n in nodes])
    out = PairRankerRerank(ranker=tiny_ranker, top_n=5, keep_retrieval_score=True).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert [n.model_dump() for n in nodes] == before
    originals = {n.node.node_id: n for n in nodes}
    for n in out:
        src = originals[n.node.node_id]
        assert n is not src
        assert n.node is not src.node
        assert n.node.metadata["retrieval_score"] == src.score
        assert "retrieval_score" not in src.node.metadata


def test_none_scores_are_fine(tiny_ranker: PairRanker) -> None:
    order, _ = expected(tiny_ranker)
    out = PairRankerRerank(ranker=tiny_ranker, top_n=2).postprocess_nodes(make_nodes([None] * 5), query_str=QUERY)
    assert [n.node.node_id for n in out] == [f"n{i}" for i in order[:2]]
    assert all(isinstance(n.score, float) for n in out)


def test_a_query_is_required(tiny_ranker: PairRanker) -> None:
    with pytest.raises(ValueError, match="ranks nodes against a query but got none"):
        PairRankerRerank(ranker=tiny_ranker).postprocess_nodes(make_nodes())


def test_fewer_than_two_nodes_are_returned_as_copies(tiny_ranker: PairRanker) -> None:
    rerank = PairRankerRerank(ranker=tiny_ranker)
    assert rerank.postprocess_nodes([], query_str=QUERY) == []
    (one,) = make_nodes()[:1]
    (out,) = rerank.postprocess_nodes([one], query_str=QUERY)
    assert out is not one
    assert (out.node.node_id, out.score) == (one.node.node_id, one.score)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        PairRankerRerank(top_n=0)
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        PairRankerRerank(strategy="best")
    with pytest.raises(TypeError, match="ranker must be a ranker object"):
        PairRankerRerank(ranker=42)


def test_ranker_from_a_path_is_loaded_lazily(tiny_reference_ckpt: Path, tiny_ranker: PairRanker) -> None:
    registry.clear_ranker_cache()
    rerank = PairRankerRerank(ranker=str(tiny_reference_ckpt), top_n=None)
    assert registry.cached_specs() == []
    out = rerank.postprocess_nodes(make_nodes(), query_str=QUERY)
    assert registry.cached_specs() == [str(tiny_reference_ckpt)]
    assert isinstance(rerank.load_ranker(), PairRanker)
    assert [n.node.node_id for n in out] == [f"n{i}" for i in expected(tiny_ranker)[0]]


def test_default_ranker_is_not_loaded_at_construction() -> None:
    registry.clear_ranker_cache()
    rerank = PairRankerRerank(top_n=2)
    assert rerank.model_name == "llm-blender/PairRM"  # the default ranker
    assert registry.cached_specs() == []


def test_callback_and_instrumentation_events(tiny_ranker: PairRanker, collected: list[Any]) -> None:
    debug = LlamaDebugHandler()
    rerank = PairRankerRerank(ranker=tiny_ranker, top_n=2, callback_manager=CallbackManager([debug]))
    nodes = make_nodes()
    out = rerank.postprocess_nodes(nodes, query_str=QUERY)

    (pair,) = debug.get_event_pairs(CBEventType.RERANKING)
    start, end = pair
    assert start.payload is not None
    assert end.payload is not None
    assert start.payload[EventPayload.QUERY_STR] == QUERY
    assert start.payload[EventPayload.TOP_K] == 2
    assert start.payload[EventPayload.NODES] is nodes
    assert end.payload[EventPayload.NODES] == out

    starts = [e for e in collected if isinstance(e, ReRankStartEvent)]
    ends = [e for e in collected if isinstance(e, ReRankEndEvent)]
    assert len(starts) == len(ends) == 1
    assert isinstance(starts[0].query, QueryBundle)
    assert starts[0].query.query_str == QUERY
    assert starts[0].top_n == 2
    assert [n.node.node_id for n in ends[0].nodes] == [n.node.node_id for n in out]


class SlowRanker:
    """A boundary fake: the tiny ranker behind a blocking 0.5 s delay, as a big model on CPU would be."""

    def __init__(self, ranker: PairRanker) -> None:
        self.ranker = ranker

    def rank(self, prompts: Any, candidates: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return self.ranker.rank(prompts, candidates, **kwargs)


async def test_async_path_matches_and_does_not_block_the_loop(tiny_ranker: PairRanker, collected: list[Any]) -> None:
    rerank = PairRankerRerank(ranker=SlowRanker(tiny_ranker), top_n=3)
    async with ticking(0.02) as ticks:
        out = await rerank.apostprocess_nodes(make_nodes(), query_str=QUERY)
    assert ticks.count >= 10  # the loop kept running while the ranker worked for 0.5 s
    assert [n.node.node_id for n in out] == [f"n{i}" for i in expected(tiny_ranker)[0][:3]]
    assert sum(isinstance(e, ReRankStartEvent) for e in collected) == 1
    assert sum(isinstance(e, ReRankEndEvent) for e in collected) == 1


DOCS = [
    "the model writes python code for the user",
    "a poem about the world, the people and time",
    "the answer to the question is a number",
    "hello, thanks for the good example",
    "a list of reasons why the result is better",
]


def test_rag_query_engine_uses_the_pairranker_order(tiny_ranker: PairRanker) -> None:
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS], embed_model=MockEmbedding(embed_dim=8))
    retriever = index.as_retriever(similarity_top_k=4)
    # Pick a query whose pairwise order differs from the retrieval order, so the test shows a reordering.
    for query in ("what is the answer?", "write python code", "a poem please", "explain the reason"):
        retrieved = retriever.retrieve(query)
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in retrieved]
        (ranking,) = tiny_ranker.rank([query], [texts])
        want = [retrieved[i].node.node_id for i in ranking.order[:2]]
        if want != [n.node.node_id for n in retrieved[:2]]:
            break
    else:
        pytest.fail("the tiny ranker kept the retrieval order for every query")

    engine = index.as_query_engine(
        llm=MockLLM(), similarity_top_k=4, node_postprocessors=[PairRankerRerank(ranker=tiny_ranker, top_n=2)]
    )
    response = engine.query(query)
    assert [n.node.node_id for n in response.source_nodes] == want
    assert [n.score for n in response.source_nodes] == pytest.approx([float(ranking.scores[i]) for i in ranking.order[:2]])
    assert all(n.score == pytest.approx(1.0) for n in retriever.retrieve(query))  # the index is untouched
