"""A LlamaIndex node postprocessor that reranks nodes against the query with a pairwise ranker (PairRM)."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from blender_core.ensemble.fields import RankerField, StrategyField, TopNField
from blender_core.ranking.interface import Ranker, rank_one
from blender_core.ranking.registry import DEFAULT_TOP_N, load_ranker, spec_name

dispatcher = get_dispatcher(__name__)


class PairRankerRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes (or candidate answers wrapped as nodes) by pairwise comparison against the query.

    The nodes' texts are ranked as candidate answers to the query with ``ranker.rank([query], [texts])``;
    the result is a copy of each node carrying the ranking score, best first, cut to ``top_n``. The
    caller's nodes are never modified. The ranker runs in a worker thread on the async path.

    Example:
        >>> rerank = PairRankerRerank(ranker="llm-blender/PairRM", top_n=3)  # doctest: +SKIP
        >>> engine = index.as_query_engine(similarity_top_k=10, node_postprocessors=[rerank])  # doctest: +SKIP
    """

    top_n: TopNField = Field(
        default=DEFAULT_TOP_N, description="Nodes to return, best first (None: all of them)."
    )
    strategy: StrategyField = Field(
        default="full", description="Ranking strategy: full, bubble, knockout or sort."
    )
    ranker: RankerField = Field(
        default=None,
        exclude=True,
        description="A ranker, a folder / hub id / built-in name (loaded on first use), or None for the default.",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which node metadata is part of the text the ranker reads."
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description="Keep each node's incoming score in the copy's metadata as 'retrieval_score'.",
    )

    @classmethod
    def class_name(cls) -> str:
        return "PairRankerRerank"

    @property
    def model_name(self) -> str:
        return spec_name(self.ranker)

    def load_ranker(self) -> Ranker:
        """The ranker, loaded on first use (through ``load_ranker``: once per process and spec)."""
        return load_ranker(self.ranker)

    # ------------------------------------------------------------------ steps shared by sync and async
    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str]]:
        if query_bundle is None:
            raise ValueError(
                "PairRankerRerank ranks nodes against a query but got none; call "
                "postprocess_nodes(nodes, query_str=...) or pass a query_bundle"
            )
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes), model_name=self.model_name
            )
        )
        return query_bundle.query_str, [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]

    def _rank(self, query: str, texts: list[str]) -> list[tuple[int, float]] | None:
        """(index, score) best first, or None when there is nothing to rank (fewer than two nodes)."""
        if len(texts) < 2:  # a lone node keeps its own score: a trivial ranking would set it to 0
            return None
        return [
            (c.index, c.score) for c in rank_one(self.load_ranker(), query, texts, strategy=self.strategy)
        ]

    def _copy(self, item: NodeWithScore, score: float | None) -> NodeWithScore:
        node = item.node.model_copy(deep=True)
        if self.keep_retrieval_score:
            node.metadata["retrieval_score"] = item.score
        return NodeWithScore(node=node, score=score)

    def _finish(
        self, nodes: list[NodeWithScore], ranked: list[tuple[int, float]] | None
    ) -> list[NodeWithScore]:
        if ranked is None:  # 0 or 1 node: returned as they are (copied), with their own score
            out = [self._copy(n, n.score) for n in nodes]
        else:
            out = [self._copy(nodes[i], score) for i, score in ranked]
        return out[: self.top_n] if self.top_n is not None else out

    def _payload(self, nodes: list[NodeWithScore], query: str) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model_name,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n,
        }

    # ------------------------------------------------------------------ the postprocessor API
    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            out = self._finish(nodes, self._rank(query, texts))
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            ranked = await asyncio.to_thread(
                self._rank, query, texts
            )  # the model never blocks the event loop
            out = self._finish(nodes, ranked)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out
