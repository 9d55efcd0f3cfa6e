"""LlamaIndex adapters for blender-llm: a pairwise-ranking node postprocessor and an LLM over several LLMs.

Example:
    >>> from llamaindex_blender import BlenderLLM, PairRankerRerank
    >>> rerank = PairRankerRerank(ranker="llm-blender/PairRM", top_n=3)  # doctest: +SKIP
    >>> llm = BlenderLLM([llm_a, llm_b, llm_c], ranker="llm-blender/PairRM", fuser=llm_a)  # doctest: +SKIP

May import: blender_core.base, blender_core.ranking, blender_core.ranking.judge, blender_core.fusion,
blender_core.ensemble.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "llamaindex_blender needs llama-index-core; install the extra: pip install 'blender-llm[llamaindex]'"
    ) from exc

from blender_core.ensemble.engine import EnsembleError

from .fusers import LlamaIndexFuser
from .judge import judge_ranker
from .llm import BlenderLLM
from .rerank import PairRankerRerank

__all__ = ["BlenderLLM", "EnsembleError", "LlamaIndexFuser", "PairRankerRerank", "judge_ranker"]
