"""PairRanker: the PairRM pairwise ranker (compare, score_matrix, rank, rank_one, best_of_n, …)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from blender_core.base.devices import resolve_device, resolve_dtype
from blender_core.base.hub import HubOptions
from blender_core.base.results import Ranking
from blender_core.base.validation import (
    check_candidate_lists,
    check_choice,
    check_prompts,
    check_same_length,
    check_text,
    check_texts,
)
from blender_core.ranking import strategies
from blender_core.ranking.aggregation import AGGREGATIONS, order_from_scores, ranks_from_scores
from blender_core.ranking.batches import check_batch_size
from blender_core.ranking.gathering import Gatherer, Gathering
from blender_core.ranking.interface import BaseRanker
from blender_core.ranking.pairrm.batching import LogitCache, drive_strategies, pair_logits
from blender_core.ranking.pairrm.builtin import is_builtin, load_builtin
from blender_core.ranking.pairrm.compact import is_compact_folder, load_compact
from blender_core.ranking.pairrm.conversations import conversations_to_pairs
from blender_core.ranking.pairrm.encoding import PairEncoder
from blender_core.ranking.pairrm.loading import load_pairrm
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel

logger = logging.getLogger(__name__)

REF_MODES = ("longest", "shortest", "median_length", "first", "last")
_PICK_REFERENCE: dict[str, Callable[[Sequence[str]], str]] = {
    "longest": lambda c: max(c, key=len),
    "shortest": lambda c: min(c, key=len),
    "median_length": lambda c: sorted(c, key=len)[len(c) // 2],
    "first": lambda c: c[0],
    "last": lambda c: c[-1],
}


def reference_answer(candidates: Sequence[str], ref_mode: str) -> str:
    """The candidate that ``ref_mode`` (one of :data:`REF_MODES`) makes the reference of ``rank_with_ref``.

    Lengths are in characters; ties go to the first; the median is the upper one for an even number.

    Example:
        >>> reference_answer(["a good poem", "bad", "the answer is yes"], "median_length")
        'a good poem'
    """
    return _PICK_REFERENCE[check_choice(ref_mode, REF_MODES, "ref_mode")](candidates)


class PairRanker(BaseRanker):
    """A pairwise ranker (PairRM): compares two candidate answers to one instruction at once.

    Every comparison of a call, across prompts and pairs, is batched together, sorted by length and
    padded per batch only; inference runs under ``torch.inference_mode``. Concurrent ``rank`` calls given a
    :class:`~blender_core.ranking.gathering.Gathering` are batched together too, each getting exactly the
    scores it gets alone (see :mod:`blender_core.ranking.gathering`).

    Example:
        >>> ranker = PairRanker.from_pretrained("llm-blender/PairRM")  # doctest: +SKIP
        >>> r = ranker.rank(["What is 2+2?"], [["4", "5", "It is 4."]])[0]  # doctest: +SKIP
        >>> r.order, r.best  # doctest: +SKIP
        ((2, 0, 1), 2)
    """

    gathers = True

    def __init__(
        self,
        model: PairRMModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 32,
        cache_size: int = 0,
        exact_batches: bool | None = None,
        name: str | None = None,
    ) -> None:
        """Wrap a loaded model and its tokenizer (with the four prefix tokens).

        Args:
            device: where to run; default CUDA when available, else CPU.
            dtype: default bf16/fp16 on GPU, fp32 on CPU.
            batch_size: comparisons (sequences) per forward pass.
            cache_size: how many comparison logits to remember, keyed by a hash of the texts (0 = off).
            exact_batches: batch only comparisons of equal length, so nothing is padded (default: on CPU,
                where it is faster and makes each logit independent of the rest of the call); else
                length-sorted batches padded to their longest row (default on GPU).
            name: shown in metadata and logs (default: where the model was loaded from).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)  # bf16/fp16 on GPU; fp32 on CPU (half is slow and lossy there)
        self.model: PairRMModel = model.to(device=self.device, dtype=self.dtype).eval()  # type: ignore[call-arg]
        self.tokenizer = tokenizer
        self.encoder = PairEncoder(tokenizer, model.config)  # type: ignore[arg-type]  # a PairRMConfig
        self.batch_size = batch_size
        self.exact_batches = self.device.type == "cpu" if exact_batches is None else exact_batches
        self._cache = LogitCache(cache_size)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "PairRanker")
        self.gatherer: Gatherer[tuple[str, str, str]] = Gatherer(self._logits_now)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        batch_size: int = 32,
        cache_size: int = 0,
    ) -> PairRanker:
        """Load a ranker from a hub id or a local folder.

        Accepts the reference layout (``llm-blender/PairRM``, ``llm-blender/pair-ranker``), the HF layout
        (``llm-blender/PairRM-hf``), this package's ``save_pretrained`` layout, a compact export of
        ``train-ranker --lora`` (``OUT/best/compact``: its encoder is rebuilt by name) and the built-in
        names (``"default"``). Keys are checked strictly; remote code is never executed; ``.bin`` weights load with ``weights_only=True``.
        """
        if is_builtin(name_or_path):
            model, tokenizer = load_builtin(str(name_or_path))
        elif is_compact_folder(name_or_path):  # what train-ranker --lora writes to OUT/best/compact
            model, tokenizer = load_compact(
                name_or_path, cache_dir=cache_dir, local_files_only=local_files_only, token=token
            )
        else:
            hub = HubOptions(
                revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
            )
            model, tokenizer, _ = load_pairrm(name_or_path, hub)
        return cls(
            model,
            tokenizer,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            cache_size=cache_size,
            name=str(name_or_path),
        )

    def save_pretrained(self, path: str | Path) -> None:
        """Write model (safetensors), config and tokenizer; ``from_pretrained(path)`` reads them back."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    # ---------------------------------------------------------------- engine
    @property
    def cache_size(self) -> int:
        """How many comparison logits the ranker remembers across calls (0 = off)."""
        return self._cache.size

    def logits(
        self,
        requests: Sequence[tuple[str, str, str]],
        *,
        batch_size: int | None = None,
        progress: tqdm | None = None,
        gathering: Gathering | None = None,
    ) -> np.ndarray:
        """Logits of (source, candidate 1, candidate 2) comparisons: > 0 means candidate 1 is better.

        Every comparison of the call is batched together (see :mod:`blender_core.ranking.pairrm.batching`);
        ``batch_size`` overrides the ranker's for this call; ``progress`` advances by one per comparison.
        With ``gathering`` (and neither of those), the call is batched with concurrent ones.
        """
        size = check_batch_size(batch_size, "logits")
        if gathering is not None and size is None and progress is None:
            return self.gatherer(requests, gathering)
        return self._logits_now(requests, size, progress)

    def _logits_now(
        self, requests: Sequence[tuple[str, str, str]], size: int | None = None, progress: tqdm | None = None
    ) -> np.ndarray:
        """:meth:`logits` of this call alone."""
        return pair_logits(
            self.model,
            self.encoder,
            requests,
            batch_size=self.batch_size if size is None else size,
            exact=self.exact_batches,
            pad_id=self.pad_id,
            device=self.device,
            cache=self._cache,
            progress=progress,
        )

    def run_strategies(
        self,
        prompts: list[str],
        candidates: list[list[str]],
        gens: list[strategies.StrategyGen],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        desc: str = "",
        total: int | None = None,
        gathering: Gathering | None = None,
    ) -> tuple[list[strategies.StrategyResult], list[int]]:
        """Drive one strategy generator per prompt (see :mod:`blender_core.ranking.strategies`), batching each
        round's comparisons across prompts; each prompt's result and its number of comparisons.

        The building block of :meth:`rank` and :meth:`score_matrix`, public for callers that drive a
        strategy of their own (the llm-blender drop-in's seeded bubble pass). ``gathering``: see :meth:`logits`.
        """
        check_batch_size(batch_size, "run_strategies")
        if not show_progress:  # no bar to build or advance
            return drive_strategies(
                lambda reqs: self.logits(reqs, batch_size=batch_size, gathering=gathering),
                prompts,
                candidates,
                gens,
            )
        with tqdm(total=total, desc=desc, unit="cmp") as bar:
            return drive_strategies(
                lambda reqs: self.logits(reqs, batch_size=batch_size, progress=bar), prompts, candidates, gens
            )

    # ---------------------------------------------------------------- API
    def compare(
        self,
        prompts: Sequence[str],
        candidates_a: Sequence[str],
        candidates_b: Sequence[str],
        *,
        both_orders: bool = True,
        batch_size: int | None = None,
    ) -> list[float]:
        """Compare ``candidates_a[k]`` with ``candidates_b[k]`` for each prompt; > 0 means a is better.

        With ``both_orders`` (default, the reference's "[A,B]+[B,A]") the value is M[a, b] - M[b, a],
        which cancels the position bias; otherwise M[a, b] alone.
        """
        check_batch_size(batch_size, "compare")
        p = check_prompts(prompts, "compare")
        a = check_texts(candidates_a, "compare(): candidates_a")
        b = check_texts(candidates_b, "compare(): candidates_b")
        check_same_length("compare", prompts=p, candidates_a=a, candidates_b=b)
        reqs = list(zip(p, a, b, strict=True))
        if not both_orders:
            return self.logits(reqs, batch_size=batch_size).tolist()
        values = self.logits(reqs + [(s, y, x) for s, x, y in reqs], batch_size=batch_size)
        return (values[: len(reqs)] - values[len(reqs) :]).tolist()

    def score_matrix(
        self, prompt: str, candidates: Sequence[str], *, batch_size: int | None = None
    ) -> np.ndarray:
        """The (n, n) matrix M: M[i, j] = logit of candidate i in slot 1 vs j in slot 2; diagonal 0."""
        check_batch_size(batch_size, "score_matrix")
        cands = check_candidate_lists(
            [check_text(prompt, "score_matrix(): prompt")], [candidates], "score_matrix", 1
        )[0]
        (result,), _ = self.run_strategies(
            [prompt],
            [cands],
            [strategies.full(len(cands))],
            batch_size=batch_size,
            show_progress=False,
            desc="",
            total=None,
        )
        assert result.matrix is not None
        return result.matrix

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        aggregation: str = "max_logits",
        batch_size: int | None = None,
        show_progress: bool = False,
        seed: int | None = None,
        gathering: Gathering | None = None,
    ) -> list[Ranking]:
        """Rank each prompt's candidates (their number may differ per prompt; one is a trivial ranking).

        Args:
            strategy: ``full`` (n(n-1) passes, the reference's ``rank``), ``bubble`` (2(n-1), reference
                best-of-n, random order), ``knockout`` (2(n-1), tournament, for top-1), ``sort``
                (merge sort, about 2 n log2 n, a full order). See :mod:`blender_core.ranking.strategies`.
            aggregation: ``max_logits`` or ``max_wins``; used by ``full``.
            batch_size: comparisons per forward pass (default: the ranker's).
            seed: the ``bubble`` order's random seed.
            gathering: batch this call's comparisons with those of concurrent calls (each call's scores
                are those it gets alone); None runs it on its own.

        Returns:
            one :class:`Ranking` per prompt.
        """
        check_batch_size(batch_size, "rank")
        p = check_prompts(prompts, "rank")
        cands = check_candidate_lists(p, candidates, "rank", 1)
        check_choice(strategy, strategies.STRATEGIES, "strategy")
        check_choice(aggregation, AGGREGATIONS, "aggregation")
        sizes = [len(c) for c in cands]
        rng = random.Random(seed)
        make: dict[str, Callable[[int], strategies.StrategyGen]] = {
            "full": lambda n: strategies.full(n, aggregation),
            "bubble": lambda n: strategies.bubble(n, rng.sample(range(n), n)),
            "knockout": strategies.knockout,
            "sort": strategies.merge_sort,
        }
        total = (
            sum(n * (n - 1) if strategy == "full" else 2 * (n - 1) for n in sizes)
            if strategy != "sort"
            else None
        )
        results, n_forward = self.run_strategies(
            p,
            cands,
            [make[strategy](n) for n in sizes],
            batch_size=batch_size,
            show_progress=show_progress,
            desc=f"rank ({strategy})",
            total=total,
            gathering=gathering,
        )
        return [
            Ranking(
                scores=r.scores,
                ranks=r.ranks,
                order=r.order,
                best=r.order[0],
                strategy=strategy,
                aggregation=aggregation if strategy == "full" else None,
                n_forward=f,
                matrix=r.matrix,
                scores_order=r.scores_order,
            )
            for r, f in zip(results, n_forward, strict=True)
        ]

    def rank_with_ref(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        ref_mode: str = "longest",
        ref_candidates: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> list[Ranking]:
        """Score each candidate against one reference answer: reward = M[c, ref] - M[ref, c].

        The reference is ``ref_candidates[k]`` when given, else chosen by ``ref_mode`` among the
        candidates: longest / shortest / median_length (in characters) / first / last. Costs 2 passes per
        candidate, so it scales linearly: the usual choice for reward labelling at scale.
        """
        check_batch_size(batch_size, "rank_with_ref")
        p = check_prompts(prompts, "rank_with_ref")
        cands = check_candidate_lists(p, candidates, "rank_with_ref", 1)
        if ref_candidates is None:
            check_choice(ref_mode, REF_MODES, "ref_mode")
            refs = [reference_answer(c, ref_mode) for c in cands]
        else:
            refs = check_texts(ref_candidates, "rank_with_ref(): ref_candidates")
            check_same_length("rank_with_ref", prompts=p, ref_candidates=refs)
        flat_p = [s for s, c in zip(p, cands, strict=True) for _ in c]
        flat_r = [r for r, c in zip(refs, cands, strict=True) for _ in c]
        flat_c = [x for c in cands for x in c]
        rewards = -np.asarray(self.compare(flat_p, flat_r, flat_c, batch_size=batch_size))
        out, pos = [], 0
        for c in cands:
            s = rewards[pos : pos + len(c)]
            pos += len(c)
            order = order_from_scores(s)
            out.append(
                Ranking(
                    scores=s,
                    ranks=ranks_from_scores(s),
                    order=order,
                    best=order[0],
                    strategy="ref",
                    n_forward=2 * len(c),
                )
            )
        return out

    def compare_conversations(
        self,
        conversations_a: Sequence[Sequence[dict[str, Any]]],
        conversations_b: Sequence[Sequence[dict[str, Any]]],
        *,
        both_orders: bool = True,
        batch_size: int | None = None,
    ) -> list[float]:
        """Compare two conversations with the same user turns; > 0 means conversation a is better.

        Turns are ``{"role": "USER"|"ASSISTANT", "content": str}`` alternating, user first (roles are
        case-insensitive; "user"/"assistant" as in OpenAI messages work too).
        """
        check_batch_size(batch_size, "compare_conversations")
        sources, texts_a, texts_b = conversations_to_pairs(conversations_a, conversations_b)
        return self.compare(sources, texts_a, texts_b, both_orders=both_orders, batch_size=batch_size)
