"""A LlamaIndex node postprocessor that reranks nodes against the query with a pairwise ranker (PairRM)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from blender_core.base.validation import check_choice
from blender_core.ranking.builtin import DEFAULT_RANKER
from blender_core.ranking.pair_ranker import PairRanker
from blender_core.ranking.strategies import STRATEGIES

dispatcher = get_dispatcher(__name__)


def ranker_name(ranker: Any) -> str:
    """A readable name for a ranker given as an object, a path / hub id, or None (the built-in default)."""
    if ranker is None:
        return DEFAULT_RANKER
    if isinstance(ranker, (str, Path)):
        return str(ranker)
    config = getattr(getattr(ranker, "model", None), "config", None)
    return getattr(config, "_name_or_path", "") or type(ranker).__name__


class PairRankerRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes (or candidate answers wrapped as nodes) by pairwise comparison against the query.

    The nodes' texts are ranked as candidate answers to the query with ``ranker.rank([query], [texts])``;
    the result is a copy of each node carrying the ranking score, best first, cut to ``top_n``. The
    caller's nodes are never modified. The ranker runs in a worker thread on the async path.

    Example:
        >>> rerank = PairRankerRerank(ranker="llm-blender/PairRM", top_n=3)  # doctest: +SKIP
        >>> engine = index.as_query_engine(similarity_top_k=10, node_postprocessors=[rerank])  # doctest: +SKIP
    """

    top_n: int | None = Field(default=5, description="Nodes to return, best first (None: all of them).")
    strategy: str = Field(default="full", description="Ranking strategy: full, bubble, knockout or sort.")
    ranker: Any = Field(
        default=None,
        exclude=True,
        description="A PairRanker (or any object with rank()), a path / hub id, or None for the built-in default.",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which node metadata is part of the text the ranker reads."
    )
    keep_retrieval_score: bool = Field(
        default=False, description="Keep each node's incoming score in the copy's metadata as 'retrieval_score'."
    )

    _loaded: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("top_n")
    @classmethod
    def _check_top_n(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"top_n must be >= 1 or None (keep all), got {value}")
        return value

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: str) -> str:
        return check_choice(value, STRATEGIES, "strategy")

    @field_validator("ranker")
    @classmethod
    def _check_ranker(cls, value: Any) -> Any:
        if value is None or isinstance(value, (str, Path)) or callable(getattr(value, "rank", None)):
            return value
        raise ValueError(
            f"ranker must be a PairRanker, a path / hub id, or None for the built-in default; got {type(value).__name__}"
        )

    @classmethod
    def class_name(cls) -> str:
        return "PairRankerRerank"

    @property
    def model_name(self) -> str:
        return ranker_name(self.ranker)

    def load_ranker(self) -> Any:
        """The ranker object, loaded on first use when a path, hub id or nothing (the default) was given."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    spec = self.ranker
                    if spec is None or isinstance(spec, (str, Path)):
                        spec = PairRanker.from_pretrained(spec if spec is not None else DEFAULT_RANKER)
                    self._loaded = spec
        return self._loaded

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
        if len(texts) < 2:
            return None
        (ranking,) = self.load_ranker().rank([query], [texts], strategy=self.strategy)
        return [(int(i), float(ranking.scores[i])) for i in ranking.order]

    def _copy(self, item: NodeWithScore, score: float | None) -> NodeWithScore:
        node = item.node.model_copy(deep=True)
        if self.keep_retrieval_score:
            node.metadata["retrieval_score"] = item.score
        return NodeWithScore(node=node, score=score)

    def _finish(self, nodes: list[NodeWithScore], ranked: list[tuple[int, float]] | None) -> list[NodeWithScore]:
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
            ranked = await asyncio.to_thread(self._rank, query, texts)  # the model never blocks the event loop
            out = self._finish(nodes, ranked)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out
