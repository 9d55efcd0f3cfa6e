"""The ranker half of the llm-blender drop-in: ``loadranker``, ``rank``, ``compare``, ``rank_with_ref``,
``compare_conversations``, ``get_best_of_n`` and ``get_worst_of_n``, with the reference's names, arguments and
return types, on this package's :class:`PairRanker`. :class:`~blender_core.compat.blender.Blender` gets them
from :class:`RankerMethods`; see its module for the differences from the reference.

This is PairRM-specific on purpose (the reference's methods expose single-order logits, truncation limits and
a seeded bubble pass), so it uses :class:`PairRanker` itself rather than the ranker interface.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blender_core.base.devices import resolve_device
from blender_core.base.validation import check_choice
from blender_core.compat.configs import BlenderConfig, RankerConfig, check_config_kwargs
from blender_core.compat.inputs import (
    LIMIT_KWARGS,
    candidate_table,
    check_batch_size,
    per_input_texts,
    rank_limits,
    source_texts,
)
from blender_core.ranking import strategies
from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.pairrm.conversations import conversations_to_pairs
from blender_core.ranking.pairrm.encoding import PairEncoder
from blender_core.ranking.pairrm.pair_ranker import REF_MODES, PairRanker, reference_answer

logger = logging.getLogger(__name__)

COMPARE_MODES: tuple[str, ...] = ("[A,B]", "[B,A]", "[A,B]+[B,A]")
CMP_TYPES: tuple[str, ...] = ("bubble", "full")


def _ranks(scores: np.ndarray) -> np.ndarray:
    """(N, C) ranks from scores, int32 as the reference: 1 = best, tied scores share the better rank."""
    return (1 + (scores[:, None, :] > scores[:, :, None]).sum(axis=-1)).astype(np.int32)


def _pairrm_config(ranker: PairRanker) -> PairRMConfig:
    """The ranker model's config, which holds the truncation limits."""
    config = ranker.model.config
    if not isinstance(config, PairRMConfig):
        raise TypeError(f"the ranker's model has a {type(config).__name__}, not a PairRMConfig")
    return config


def _negated(gen: strategies.StrategyGen) -> strategies.StrategyGen:
    """Run a strategy on negated logits: the reference's "worst" bubble pass keeps the worse candidate."""
    pairs = next(gen)
    while True:
        answer = yield pairs
        try:
            pairs = gen.send({p: -v for p, v in answer.items()})
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def _table_args(
    fn: str, inputs: Any, candidates: Any, instructions: Any, batch_size: Any
) -> tuple[int, list[str], list[list[str]], int]:
    """The checked arguments of a method over an (N, C) table of candidates: its batch size, the N sources
    (instruction + input), the candidate lists and C."""
    batch_size = check_batch_size(batch_size, fn)
    sources = source_texts(inputs, instructions, fn)
    cands, n = candidate_table(sources, candidates, fn)
    return batch_size, sources, cands, n


def _compare_logits(
    ranker: PairRanker, sources: list[str], a: Sequence[str], b: Sequence[str], mode: str, batch_size: int
) -> np.ndarray:
    """(N,) float32 logits of one :meth:`RankerMethods.compare` mode."""
    check_choice(mode, COMPARE_MODES, "mode")
    if mode == "[B,A]":
        values = ranker.compare(sources, b, a, both_orders=False, batch_size=batch_size)
    else:
        values = ranker.compare(sources, a, b, both_orders=mode == "[A,B]+[B,A]", batch_size=batch_size)
    return np.asarray(values, dtype=np.float32)


class RankerMethods:
    """llm-blender's ranker methods, on a :class:`PairRanker` loaded by :meth:`loadranker`."""

    blender_config: BlenderConfig
    ranker: PairRanker | None
    ranker_config: RankerConfig | None
    _views: dict[tuple[int, int], PairRanker]

    def loadranker(
        self, ranker_path: str | Path, device: str | torch.device | None = None, **kwargs: Any
    ) -> None:
        """Load a PairRM ranker from a hub id (``llm-blender/PairRM``) or a local folder.

        Args:
            ranker_path: hub id or folder, in the reference, PairRM-hf or this package's layout.
            device: ``"cuda"``, ``"cpu"``, a ``torch.device``…; default the config's, then the BlenderConfig's,
                then CUDA when available.
            kwargs: :class:`RankerConfig` fields; ``cache_dir``, ``source_maxlength``, ``candidate_maxlength``
                and ``fp16`` are honoured (``None`` values are ignored).
        """
        check_config_kwargs(kwargs, RankerConfig, "loadranker")
        config = RankerConfig(**{k: v for k, v in kwargs.items() if v is not None})
        chosen = device or config.device or self.blender_config.device
        where = resolve_device(chosen)
        dtype = torch.float16 if where.type in ("cuda", "mps") and config.fp16 else torch.float32
        ranker = PairRanker.from_pretrained(
            ranker_path,
            device=where,
            dtype=dtype,
            cache_dir=None if config.cache_dir is None else str(config.cache_dir),
        )
        model_config = _pairrm_config(ranker)
        source_max = config.source_maxlength or model_config.source_maxlength
        candidate_max = config.candidate_maxlength or model_config.candidate_maxlength
        if (source_max, candidate_max) != (model_config.source_maxlength, model_config.candidate_maxlength):
            model_config.source_maxlength, model_config.candidate_maxlength = source_max, candidate_max
            ranker.encoder = PairEncoder(ranker.tokenizer, model_config)
        self.ranker = ranker
        self.ranker_tokenizer = ranker.tokenizer
        self.ranker_config = dataclasses.replace(
            config,
            ranker_type="pairranker",
            load_checkpoint=str(ranker_path),
            source_maxlength=source_max,
            candidate_maxlength=candidate_max,
            device=str(where),
        )
        self._views = {}
        logger.info("loaded ranker from %s on %s (%s)", ranker_path, where, dtype)

    def _require_ranker(self, fn: str) -> PairRanker:
        if self.ranker is None:
            raise RuntimeError(
                f"{fn}() needs a ranker; load one first with blender.loadranker('llm-blender/PairRM')"
            )
        return self.ranker

    def _ranker_for(
        self, fn: str, source_max_length: int | None = None, candidate_max_length: int | None = None
    ) -> PairRanker:
        """The loaded ranker, or a view of it with other truncation limits (same model, no copy)."""
        ranker = self._require_ranker(fn)
        cfg = _pairrm_config(ranker)
        limits = (source_max_length or cfg.source_maxlength, candidate_max_length or cfg.candidate_maxlength)
        for name, value in zip(LIMIT_KWARGS, limits, strict=True):
            if isinstance(value, bool) or not isinstance(value, int) or value < 4:
                raise ValueError(f"{fn}() got {name}={value!r}; pass an int >= 4 (special tokens take 3)")
        if limits == (cfg.source_maxlength, cfg.candidate_maxlength):
            return ranker
        if limits not in self._views:
            view_cfg = copy.deepcopy(cfg)
            view_cfg.source_maxlength, view_cfg.candidate_maxlength = limits
            view = PairRanker(
                ranker.model,
                ranker.tokenizer,
                device=ranker.device,
                dtype=ranker.dtype,
                batch_size=ranker.batch_size,
            )
            view.encoder = PairEncoder(ranker.tokenizer, view_cfg)
            self._views[limits] = view
        return self._views[limits]

    def _show_progress(self, disable_tqdm: bool = False) -> bool:
        return self.blender_config.use_tqdm and not disable_tqdm

    def rank(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        return_scores: bool = False,
        batch_size: int = 8,
        disable_tqdm: bool = False,
        **rank_kwargs: Any,
    ) -> np.ndarray:
        """Rank each input's candidates with the full comparison matrix (n(n-1) comparisons).

        Args:
            inputs: N input texts; ``instructions[k]`` (optional) is prepended to ``inputs[k]``.
            candidates: N lists of C candidate texts (the same C for every input).
            return_scores: return the ``max_logits`` scores instead of the ranks.
            batch_size: comparisons per forward pass.
            rank_kwargs: ``source_max_length`` / ``candidate_max_length`` override the ranker's limits.

        Returns:
            ranks, (N, C) int32, 1 = best and ties share the better rank; or scores, (N, C) float32,
            higher is better.
        """
        limits = rank_limits(rank_kwargs, "rank")
        ranker = self._ranker_for("rank", *limits)
        batch_size, sources, cands, n = _table_args("rank", inputs, candidates, instructions, batch_size)
        scores = np.zeros((len(sources), n), dtype=np.float32)  # one candidate: score 0, rank 1 (reference)
        if n >= 2:
            rankings = ranker.rank(
                sources, cands, strategy="full", aggregation="max_logits", batch_size=batch_size,
                show_progress=self._show_progress(disable_tqdm),
            )  # fmt: skip
            scores = np.stack([r.scores for r in rankings]).astype(np.float32)
        return scores if return_scores else _ranks(scores)

    def compare(
        self,
        inputs: Sequence[str],
        candidates_A: Sequence[str],
        candidates_B: Sequence[str],
        instructions: Sequence[str] | None = None,
        batch_size: int = 4,
        return_logits: bool = False,
        mode: str = "[A,B]+[B,A]",
        disable_tqdm: bool = False,
    ) -> np.ndarray:
        """Compare ``candidates_A[k]`` with ``candidates_B[k]`` for each input.

        Modes, as the reference: ``"[A,B]"`` the logit with A in slot 1 (> 0: A better); ``"[B,A]"`` the logit
        with B in slot 1 (> 0: B better); ``"[A,B]+[B,A]"`` (default, cancels the position bias)
        M[A, B] - M[B, A] (> 0: A better).

        Returns:
            (N,) float32 logits with ``return_logits``, else (N,) bools (logit > 0).
        """
        ranker = self._require_ranker("compare")
        batch_size = check_batch_size(batch_size, "compare")
        sources = source_texts(inputs, instructions, "compare")
        logits = _compare_logits(ranker, sources, candidates_A, candidates_B, mode, batch_size)
        return logits if return_logits else logits > 0

    def rank_with_ref(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        return_scores: bool = False,
        batch_size: int = 8,
        ref_mode: str = "longest",
        ref_candidates: Sequence[str] | None = None,
        **rank_kwargs: Any,
    ) -> np.ndarray:
        """Score each candidate against one reference answer per input: score = -compare(ref, candidate).

        2 comparisons per candidate, so it scales linearly in C (the usual choice for reward labelling).

        Args:
            ref_mode: which candidate is the reference: ``longest`` / ``shortest`` / ``median_length``
                (in characters) / ``first`` / ``last``.
            ref_candidates: one reference text per input; overrides ``ref_mode``.
            rank_kwargs: ``source_max_length`` / ``candidate_max_length``, and ``mode`` (a :meth:`compare` mode).

        Returns:
            (N, C) float64 scores (``return_scores``) or int32 ranks.
        """
        limits = rank_limits(rank_kwargs, "rank_with_ref", extra=("mode",))
        mode = rank_kwargs.get("mode", "[A,B]+[B,A]")
        if mode not in COMPARE_MODES:
            raise ValueError(
                f"rank_with_ref() got mode={mode!r}; mode is a compare mode ({', '.join(COMPARE_MODES)}). "
                f"To choose the reference answer, pass ref_mode= ({', '.join(REF_MODES)})"
            )
        ranker = self._ranker_for("rank_with_ref", *limits)
        batch_size, sources, cands, n = _table_args("rank_with_ref", inputs, candidates, instructions, batch_size)
        if ref_candidates is None:
            check_choice(ref_mode, REF_MODES, "ref_mode")
            refs = [reference_answer(c, ref_mode) for c in cands]
        else:
            refs = per_input_texts(ref_candidates, len(sources), "ref_candidates", "rank_with_ref")
        flat_sources = [s for s in sources for _ in range(n)]
        flat_refs = [r for r in refs for _ in range(n)]
        flat_cands = [x for c in cands for x in c]
        logits = _compare_logits(ranker, flat_sources, flat_refs, flat_cands, mode, batch_size)
        scores = -logits.astype(np.float64).reshape(len(sources), n)
        return scores if return_scores else _ranks(scores)

    def compare_conversations(
        self,
        conversations_a: Sequence[Sequence[dict[str, Any]]],
        conversations_b: Sequence[Sequence[dict[str, Any]]],
        batch_size: int = 4,
        return_logits: bool = False,
        mode: str = "[A,B]+[B,A]",
    ) -> np.ndarray:
        """Compare two conversations with the same USER turns, as :meth:`compare` (> 0 / True: a is better).

        A conversation is a list of ``{"role": "USER" | "ASSISTANT", "content": str}`` turns, user first.
        """
        ranker = self._require_ranker("compare_conversations")
        batch_size = check_batch_size(batch_size, "compare_conversations")
        sources, texts_a, texts_b = conversations_to_pairs(conversations_a, conversations_b)
        logits = _compare_logits(ranker, sources, texts_a, texts_b, mode, batch_size)
        return logits if return_logits else logits > 0

    def get_best_of_n(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        pairrm_cmp_type: str = "bubble",
        return_all: bool = False,
        batch_size: int = 8,
    ) -> list[str] | list[list[str]] | np.ndarray:
        """The best candidate of each input.

        Args:
            pairrm_cmp_type: ``"bubble"`` (2(n-1) comparisons: one pass over a random order; the order is one
                ``torch.randperm(n)`` per chunk of ``batch_size`` inputs from torch's global generator, as the
                reference, so the same ``torch.manual_seed`` picks the same candidates) or ``"full"`` (the
                full matrix, via :meth:`rank`).
            return_all: return every candidate instead of the best; ``bubble``: the best, then the loser of each
                step in order; ``full``: all candidates best first, as an (N, C) numpy array of str (as the
                reference).

        Returns:
            a list of N best candidates, or (``return_all``) N lists / an (N, C) array of candidates.
        """
        return self._select_of_n(
            "get_best_of_n", inputs, candidates, instructions, pairrm_cmp_type, return_all, batch_size
        )

    def get_worst_of_n(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        pairrm_cmp_type: str = "bubble",
        return_all: bool = False,
        batch_size: int = 8,
    ) -> list[str] | list[list[str]] | np.ndarray:
        """The worst candidate of each input, as :meth:`get_best_of_n` (``return_all``: worst first)."""
        return self._select_of_n(
            "get_worst_of_n", inputs, candidates, instructions, pairrm_cmp_type, return_all, batch_size
        )

    def _select_of_n(
        self,
        fn: str,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None,
        pairrm_cmp_type: str,
        return_all: bool,
        batch_size: int,
    ) -> list[str] | list[list[str]] | np.ndarray:
        ranker = self._require_ranker(fn)
        check_choice(pairrm_cmp_type, CMP_TYPES, "pairrm_cmp_type")
        batch_size, sources, cands, n = _table_args(fn, inputs, candidates, instructions, batch_size)
        worst = fn == "get_worst_of_n"
        if n <= 1:  # nothing to compare (the reference returns the input as is)
            return [list(c) for c in cands] if return_all else [c[0] for c in cands]
        if pairrm_cmp_type == "full":
            ranks = self.rank(inputs, candidates, instructions=instructions, batch_size=batch_size)
            order = np.argsort(
                -ranks if worst else ranks, axis=1
            )  # the reference's (default) sort, same ties
            chosen = np.array(cands)[np.arange(len(cands))[:, None], order]
            return chosen if return_all else [str(x) for x in chosen[:, 0]]
        # The reference iterates a torch DataLoader, which draws one int64 seed from the global generator
        # before the first batch; draw it too, so that the permutations below are the reference's.
        torch.empty((), dtype=torch.int64).random_()
        gens: list[strategies.StrategyGen] = []
        for start in range(0, len(sources), batch_size):
            permutation = torch.randperm(n).tolist()  # one per chunk of inputs, as the reference
            for _ in range(min(batch_size, len(sources) - start)):
                gen = strategies.bubble(n, permutation)
                gens.append(_negated(gen) if worst else gen)
        results, _ = ranker.run_strategies(
            sources, cands, gens, batch_size=batch_size, show_progress=self._show_progress(),
            desc="Ranking candidates", total=2 * (n - 1) * len(sources),
        )  # fmt: skip
        # bubble's order is (survivor, *eliminated in reverse): the reference lists the losers step by step.
        steps = [(r.order[0], *reversed(r.order[1:])) for r in results]
        if not return_all:
            return [c[s[0]] for c, s in zip(cands, steps, strict=True)]
        return [[c[i] for i in s] for c, s in zip(cands, steps, strict=True)]
