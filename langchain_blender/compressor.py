"""PairRankerCompressor: rerank documents (e.g. candidate answers in a RAG pipeline) against the query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from typing_extensions import override

from blender_core.ensemble.fields import RankerField, StrategyField, TopNField
from blender_core.ranking.interface import rank_one
from blender_core.ranking.registry import DEFAULT_TOP_N, load_ranker


class PairRankerCompressor(BaseDocumentCompressor):
    """Rerank documents with the PairRanker, which compares them two at a time against the query.

    Returns copies of the ``top_n`` best documents, best first, each with ``metadata["relevance_score"]``
    (the ranker's score: higher is better; not a probability). The input documents are never modified.

    Example:
        .. code-block:: python

            from langchain_blender import PairRankerCompressor

            compressor = PairRankerCompressor(ranker="llm-blender/PairRM", top_n=2)
            best = compressor.compress_documents(docs, "What is the capital of France?")
            best[0].metadata["relevance_score"]
    """

    ranker: RankerField = None
    """A ranker, a folder / hub id / built-in name (loaded on first use), or None for the default ranker."""
    top_n: TopNField = DEFAULT_TOP_N
    """How many documents to return (None: all of them, reordered)."""
    strategy: StrategyField = "full"
    """Ranking strategy: ``full`` (all pairs, a full order), ``sort`` (fewer comparisons for many
    documents), ``knockout`` / ``bubble`` (cheapest; trustworthy for the top document only)."""

    @override
    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        docs = list(documents)
        if not docs:
            return []
        for i, d in enumerate(docs):
            if not isinstance(d, Document):
                raise TypeError(f"documents[{i}] is a {type(d).__name__}, not a Document")
        ranked = rank_one(
            load_ranker(self.ranker),
            query,
            [d.page_content for d in docs],
            top_k=self.top_n,
            strategy=self.strategy,
        )
        return [
            docs[c.index].model_copy(
                update={"metadata": {**docs[c.index].metadata, "relevance_score": c.score}}
            )
            for c in ranked
        ]

    @override
    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """:meth:`compress_documents` in a worker thread: ranking never blocks the event loop."""
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
