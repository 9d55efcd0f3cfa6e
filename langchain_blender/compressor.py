"""PairRankerCompressor: rerank documents (e.g. candidate answers in a RAG pipeline) against the query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import PrivateAttr, field_validator, model_validator
from typing_extensions import Self, override

from blender_core.ensemble.pipeline import Blender
from blender_core.ranking.builtin import DEFAULT_RANKER
from blender_core.ranking.pair_ranker import PairRanker
from blender_core.ranking.strategies import STRATEGIES


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

    ranker: Any = DEFAULT_RANKER
    """A PairRanker, a path / hub id, or the built-in default ranker's name (loaded on first use)."""
    top_n: int | None = 3
    """How many documents to return (None: all of them, reordered)."""
    strategy: str = "full"
    """Ranking strategy: ``full`` (all pairs, a full order), ``sort`` (fewer comparisons for many
    documents), ``knockout`` / ``bubble`` (cheapest; trustworthy for the top document only)."""

    _blender: Any = PrivateAttr(default=None)

    @field_validator("ranker")
    @classmethod
    def _check_ranker(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (PairRanker, str, Path)):
            raise TypeError(
                f"ranker must be a PairRanker, a path or hub id, or None; got {type(value).__name__}"
            )
        return value

    @model_validator(mode="after")
    def _build(self) -> Self:
        if self.top_n is not None and self.top_n < 1:
            raise ValueError(f"top_n must be >= 1 or None, got {self.top_n}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        self._blender = Blender(self.ranker, None, top_k=1, strategy=self.strategy)
        return self

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
        (result,) = self._blender.rank_and_fuse([query], [[d.page_content for d in docs]], fuse=False)
        order = result.ranking.order if result.ranking is not None else (0,)
        keep = order if self.top_n is None else order[: self.top_n]
        return [
            docs[i].model_copy(
                update={"metadata": {**docs[i].metadata, "relevance_score": float(result.scores[i])}}
            )
            for i in keep
        ]

    @override
    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """:meth:`compress_documents` in a worker thread: ranking never blocks the event loop."""
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
