"""A drop-in for ``llm_blender.Blender`` (llm-blender 0.0.2), built on :class:`PairRanker` and the GenFuser.

Replace ``import llm_blender; llm_blender.Blender()`` by ``from blender_core.compat import Blender; Blender()``:
the methods have the reference's names, arguments and return types (numpy arrays of ranks, scores, logits or
bools; lists of chosen candidates), and give the reference's numbers (checked by
``benchmarks/parity_reference.py``).

Example:
    >>> from blender_core.compat import Blender
    >>> blender = Blender()
    >>> blender.loadranker("llm-blender/PairRM", device="cpu")  # doctest: +SKIP
    >>> blender.rank(["hello, how are you!"], [["get out!", "hi! I am fine, thanks!", "bye!"]])  # doctest: +SKIP
    array([[3, 1, 2]], dtype=int32)

Differences from the reference, on purpose:

- Truncation is per prompt. The reference gives each candidate the budget
  ``candidate_maxlength + (source_maxlength - L) // 2`` with ``L`` the longest source *of its batch*, so when
  candidates are truncated its scores depend on which prompts share a batch. Here ``L`` is the prompt's own
  source length, which is what the reference computes at ``batch_size=1``; without truncation both agree at
  any batch size.
- ``batch_size`` bounds the comparisons per forward pass (the reference runs ``batch_size`` comparisons per
  pass too); the comparisons of all inputs are batched together, sorted by length, so fewer padding tokens run.
- The reference's ``assert`` checks raise ``ValueError`` / ``TypeError`` here, and calling a ranker method
  before :meth:`Blender.loadranker` raises ``RuntimeError`` (the reference logs and returns ``None``).
- Only PairRM (``pairranker``) checkpoints load, in any of the three layouts that
  :meth:`PairRanker.from_pretrained` reads; the reference's other reward models (DeBERTa-RM, UltraRM,
  Starling-RM) are not supported.
- The configs are frozen dataclasses: replace one (``dataclasses.replace``) instead of setting its fields.

The class is split by concern: its configs are in :mod:`~blender_core.compat.configs`, the ranker methods in
:mod:`~blender_core.compat.ranker_methods`, the fuser methods in :mod:`~blender_core.compat.fuser_methods`;
this module composes them and adds the two methods that use both (``rank_and_fuse``, ``best_of_n_generate``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from blender_core.compat.configs import BlenderConfig, GenFuserConfig, RankerConfig, coerce_config
from blender_core.compat.fuser_methods import FuserMethods
from blender_core.compat.ranker_methods import RankerMethods
from blender_core.ranking.pairrm.pair_ranker import PairRanker


class Blender(RankerMethods, FuserMethods):
    """llm-blender's ``Blender``: its ranker and fuser methods, on :class:`PairRanker` and the GenFuser.

    Args:
        blender_config: a :class:`BlenderConfig`, a dict, or ``llm_blender.BlenderConfig``.
        ranker_config: a :class:`RankerConfig`, a dict or ``llm_blender.RankerConfig``; when given, the ranker
            at its ``load_checkpoint`` is loaded at once.
        fuser_config: a :class:`GenFuserConfig`, a dict or ``llm_blender.GenFuserConfig``; when given, the
            fuser named by its ``model_name`` is loaded at once.

    Example:
        >>> blender = Blender({"device": "cpu", "use_tqdm": False})
        >>> blender.loadranker("llm-blender/PairRM")  # doctest: +SKIP
        >>> blender.compare(["1+1?"], ["2"], ["3"])  # doctest: +SKIP
        array([ True])
    """

    def __init__(
        self, blender_config: Any = None, ranker_config: Any = None, fuser_config: Any = None
    ) -> None:
        self.blender_config = coerce_config(blender_config, BlenderConfig, "blender_config")
        self.ranker = None
        self.ranker_config = None
        self._views: dict[tuple[int, int], PairRanker] = {}  # the ranker with other limits, by limits
        self.fuser = None
        self.fuser_config = fuser_config
        if ranker_config is not None:
            config = coerce_config(ranker_config, RankerConfig, "ranker_config")
            if config.load_checkpoint is None:
                raise ValueError(
                    "ranker_config.load_checkpoint is None; set it to the ranker's hub id or folder"
                )
            fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "load_checkpoint"}
            self.loadranker(config.load_checkpoint, **fields)
        if fuser_config is not None:
            self._init_fuser(fuser_config)

    def _init_fuser(self, fuser_config: Any) -> None:
        config = coerce_config(fuser_config, GenFuserConfig, "fuser_config")
        fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "model_name"}
        self.loadfuser(config.model_name, **fields)

    def rank_and_fuse(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        return_scores: bool = False,
        batch_size: int = 4,
        top_k: int = 3,
        **generate_kwargs: Any,
    ) -> tuple[list[str], np.ndarray]:
        """Rank with the ranker, fuse the ``top_k`` best with the fuser; returns (fused, ranks or scores)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        ranks_or_scores = self.rank(
            inputs, candidates, instructions=instructions, batch_size=batch_size, return_scores=return_scores
        )
        order = np.argsort(-ranks_or_scores if return_scores else ranks_or_scores, axis=1)[:, :top_k]
        top = [[str(c[i]) for i in row] for c, row in zip(candidates, order, strict=True)]
        fused = self.fuse(inputs, top, instructions=instructions, batch_size=batch_size, **generate_kwargs)
        return fused, ranks_or_scores

    def best_of_n_generate(
        self,
        model: Any,
        model_tokenizer: Any,
        inputs: Sequence[str],
        instructions: Sequence[str] | None = None,
        n: int = 5,
        sampling_mode: str | None = "top_p_sampling",
        batch_size: int = 4,
        pairrm_cmp_type: str = "bubble",
        return_all: bool = False,
        **generate_kwargs: Any,
    ) -> list[str] | list[list[str]] | np.ndarray:
        """Sample ``n`` generations per input and keep the best by the ranker (or all, best first)."""
        sampled = self.n_generate(
            model, model_tokenizer, inputs, instructions=instructions, n=n, sampling_mode=sampling_mode,
            batch_size=batch_size, **generate_kwargs,
        )  # fmt: skip
        return self.get_best_of_n(
            inputs, sampled, instructions=instructions, batch_size=min(batch_size, 32),
            pairrm_cmp_type=pairrm_cmp_type, return_all=return_all,
        )  # fmt: skip


__all__ = ["Blender", "BlenderConfig", "GenFuserConfig", "RankerConfig"]
