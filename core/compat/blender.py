"""A drop-in for ``llm_blender.Blender`` (llm-blender 0.0.2), ranker methods, built on :class:`PairRanker`.

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
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from blender_core.base.devices import resolve_device
from blender_core.base.validation import check_candidate_lists, check_choice, check_prompts, check_text
from blender_core.ranking import strategies
from blender_core.ranking.configuration_pairrm import PairRMConfig
from blender_core.ranking.conversations import conversations_to_pairs
from blender_core.ranking.encoding import PairEncoder
from blender_core.ranking.pair_ranker import PairRanker

logger = logging.getLogger(__name__)

COMPARE_MODES: tuple[str, ...] = ("[A,B]", "[B,A]", "[A,B]+[B,A]")
REF_MODES: tuple[str, ...] = ("longest", "shortest", "median_length", "first", "last")
CMP_TYPES: tuple[str, ...] = ("bubble", "full")
_LIMIT_KWARGS = ("source_max_length", "candidate_max_length")


@dataclass(frozen=True)
class BlenderConfig:
    """The reference's ``BlenderConfig``: where to run and whether to show progress bars."""

    # None picks CUDA when available, else CPU (the reference defaults to "cuda" and fails without a GPU).
    device: str | None = None
    # Progress bars on long calls, as the reference; a call's ``disable_tqdm`` silences its own bar.
    use_tqdm: bool = True

    def __post_init__(self) -> None:
        if self.device is not None and not isinstance(self.device, str):
            raise TypeError(
                f"BlenderConfig.device must be a str such as 'cpu' or 'cuda', got {self.device!r}"
            )


@dataclass(frozen=True)
class RankerConfig:
    """The reference's ``RankerConfig`` fields, so that its configs and ``loadranker`` kwargs carry over.

    Used here: ``load_checkpoint``, ``cache_dir``, ``source_maxlength``, ``candidate_maxlength``, ``fp16`` and
    ``device``. The training fields are accepted and kept, with no effect on inference.
    """

    # Only PairRM ("pairranker") is supported; None means "whatever the checkpoint is" (checked on load).
    ranker_type: str | None = None
    # The backbone family and name: informational, the checkpoint's own files decide.
    model_type: str | None = None
    model_name: str | None = None
    # Passed to the hub download.
    cache_dir: str | Path | None = None
    # The ranker that ``Blender(ranker_config=...)`` loads.
    load_checkpoint: str | Path | None = None
    # None keeps the checkpoint's limits (PairRM: 1224 / 412 tokens).
    source_maxlength: int | None = None
    candidate_maxlength: int | None = None
    # Training-only settings of the reference, kept so that its configs convert; no effect here.
    n_tasks: int = 1
    num_pos: int = 1
    num_neg: int = 1
    sub_sampling_mode: str = "all_pair"
    sub_sampling_ratio: float = 0.5
    loss_type: str = "instructgpt"
    reduce_type: str = "linear"
    inference_mode: str = "bubble"
    drop_out: float = 0.05
    # Half precision on CUDA / MPS, as the reference does with PairRM's config; fp32 on CPU.
    fp16: bool = True
    # None: the ``loadranker`` argument, else the BlenderConfig's device.
    device: str | None = None

    def __post_init__(self) -> None:
        if self.ranker_type not in (None, "pairranker"):
            raise ValueError(
                f"ranker_type {self.ranker_type!r} is not supported; blender_core.compat loads PairRM "
                "('pairranker') checkpoints only"
            )
        for name in ("source_maxlength", "candidate_maxlength"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 4):
                raise ValueError(
                    f"RankerConfig.{name} must be an int >= 4 (special tokens take 3), got {value!r}"
                )


@dataclass(frozen=True)
class GenFuserConfig:
    """The reference's fuser settings (``llm_blender.GenFuserConfig``), as a frozen dataclass."""

    # The published fuser (Flan-T5-XL fine-tuned on MixInstruct).
    model_name: str = "llm-blender/gen_fuser_3b"
    cache_dir: str | None = None
    # Cap on the whole fuser input, in tokens (published: 1024).
    max_length: int = 1024
    # Tokens kept per candidate; also the default max_new_tokens (published: 128).
    candidate_maxlength: int = 128
    # bfloat16 as the reference, also on CPU, so that outputs match it.
    torch_dtype: str = "bfloat16"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        check_choice(self.torch_dtype, ("float32", "float16", "bfloat16"), "torch_dtype")
        if self.max_length < 1 or self.candidate_maxlength < 1:
            raise ValueError(
                f"max_length and candidate_maxlength must be >= 1, got {self.max_length}, {self.candidate_maxlength}"
            )


_C = TypeVar("_C", BlenderConfig, RankerConfig, GenFuserConfig)


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _coerce_config(value: Any, cls: type[_C], what: str) -> _C:
    """Accept this module's config, a mapping, or the reference's config object (anything with ``to_dict``)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        raw = dict(value)
    elif hasattr(value, "to_dict"):  # the reference's dataclass_json configs
        raw = dict(value.to_dict())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        raw = dataclasses.asdict(value)
    else:
        raise TypeError(
            f"{what} must be a {cls.__name__}, a dict or llm_blender's config, got {type(value).__name__}"
        )
    unknown = sorted(set(raw) - set(_field_names(cls)))
    if unknown:
        raise TypeError(
            f"{what} has unknown fields {unknown}; {cls.__name__} takes {', '.join(_field_names(cls))}"
        )
    return cls(**raw)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """(N, C) ranks from scores, int32 as the reference: 1 = best, tied scores share the better rank."""
    return (1 + (scores[:, None, :] > scores[:, :, None]).sum(axis=-1)).astype(np.int32)


def _pairrm_config(ranker: PairRanker) -> PairRMConfig:
    config = ranker.model.config
    if not isinstance(config, PairRMConfig):
        raise TypeError(f"the ranker's model has a {type(config).__name__}, not a PairRMConfig")
    return config


def _check_batch_size(batch_size: Any, fn: str) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{fn}() got batch_size={batch_size!r}; pass a positive int")
    return batch_size


def _negated(gen: strategies.StrategyGen) -> strategies.StrategyGen:
    """Run a strategy on negated logits: the reference's "worst" bubble pass keeps the worse candidate."""
    pairs = next(gen)
    while True:
        answer = yield pairs
        try:
            pairs = gen.send({p: -v for p, v in answer.items()})
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


class Blender:
    """llm-blender's ``Blender``, ranker part, on this package's :class:`PairRanker`.

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
        self.blender_config: BlenderConfig = _coerce_config(blender_config, BlenderConfig, "blender_config")
        self.ranker: PairRanker | None = None
        self.ranker_config: RankerConfig | None = None
        self._views: dict[tuple[int, int], PairRanker] = {}
        self.fuser: Any = None
        self.fuser_config: Any = fuser_config
        if ranker_config is not None:
            config = _coerce_config(ranker_config, RankerConfig, "ranker_config")
            if config.load_checkpoint is None:
                raise ValueError(
                    "ranker_config.load_checkpoint is None; set it to the ranker's hub id or folder"
                )
            fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "load_checkpoint"}
            self.loadranker(config.load_checkpoint, **fields)
        if fuser_config is not None:
            self._init_fuser(fuser_config)

    def _init_fuser(self, fuser_config: Any) -> None:
        config = _coerce_config(fuser_config, GenFuserConfig, "fuser_config")
        fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "model_name"}
        self.loadfuser(config.model_name, **fields)

    # ---------------------------------------------------------------- ranker
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
        unknown = sorted(set(kwargs) - set(_field_names(RankerConfig)))
        if unknown:
            raise TypeError(
                f"loadranker() got unknown arguments {unknown}; it takes RankerConfig fields: "
                f"{', '.join(_field_names(RankerConfig))}"
            )
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
        for name, value in zip(_LIMIT_KWARGS, limits, strict=True):
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

    @staticmethod
    def _limits(rank_kwargs: dict[str, Any], fn: str, extra: tuple[str, ...] = ()) -> tuple[Any, Any]:
        unknown = sorted(set(rank_kwargs) - {*_LIMIT_KWARGS, *extra})
        if unknown:
            raise TypeError(
                f"{fn}() got unknown arguments {unknown}; it takes {', '.join((*_LIMIT_KWARGS, *extra))}"
            )
        return rank_kwargs.get("source_max_length"), rank_kwargs.get("candidate_max_length")

    @staticmethod
    def _sources(inputs: Any, instructions: Any, fn: str) -> list[str]:
        """instruction + input, with no separator, as the reference."""
        texts = check_prompts(inputs, fn)
        if instructions is None:
            return texts
        if isinstance(instructions, str) or not isinstance(instructions, Sequence):
            raise TypeError(
                f"{fn}() takes instructions as a list of str (one per input) or None, got {type(instructions).__name__}"
            )
        if len(instructions) != len(texts):
            raise ValueError(
                f"{fn}() got {len(texts)} inputs but {len(instructions)} instructions; pass one per input"
            )
        return [
            check_text(i, f"{fn}(): instruction {k}") + t
            for k, (i, t) in enumerate(zip(instructions, texts, strict=True))
        ]

    @staticmethod
    def _candidate_table(sources: list[str], candidates: Any, fn: str) -> tuple[list[list[str]], int]:
        """Candidate lists, all of one length (the reference returns (N, C) arrays); returns them and C."""
        cands = check_candidate_lists(sources, candidates, fn, 1)
        sizes = sorted({len(c) for c in cands})
        if len(sizes) > 1:
            raise ValueError(
                f"{fn}() got inputs with {sizes} candidates; every input needs the same number of candidates "
                "(use blender_core.ranking.PairRanker for ragged lists)"
            )
        return cands, (sizes[0] if sizes else 0)

    @staticmethod
    def _compare_logits(
        ranker: PairRanker, sources: list[str], a: Sequence[str], b: Sequence[str], mode: str, batch_size: int
    ) -> np.ndarray:
        check_choice(mode, COMPARE_MODES, "mode")
        if mode == "[B,A]":
            values = ranker.compare(sources, b, a, both_orders=False, batch_size=batch_size)
        else:
            values = ranker.compare(sources, a, b, both_orders=mode == "[A,B]+[B,A]", batch_size=batch_size)
        return np.asarray(values, dtype=np.float32)

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
        limits = self._limits(rank_kwargs, "rank")
        ranker = self._ranker_for("rank", *limits)
        batch_size = _check_batch_size(batch_size, "rank")
        sources = self._sources(inputs, instructions, "rank")
        cands, n = self._candidate_table(sources, candidates, "rank")
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
        batch_size = _check_batch_size(batch_size, "compare")
        sources = self._sources(inputs, instructions, "compare")
        logits = self._compare_logits(ranker, sources, candidates_A, candidates_B, mode, batch_size)
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
        limits = self._limits(rank_kwargs, "rank_with_ref", extra=("mode",))
        mode = rank_kwargs.get("mode", "[A,B]+[B,A]")
        if mode not in COMPARE_MODES:
            raise ValueError(
                f"rank_with_ref() got mode={mode!r}; mode is a compare mode ({', '.join(COMPARE_MODES)}). "
                f"To choose the reference answer, pass ref_mode= ({', '.join(REF_MODES)})"
            )
        ranker = self._ranker_for("rank_with_ref", *limits)
        batch_size = _check_batch_size(batch_size, "rank_with_ref")
        sources = self._sources(inputs, instructions, "rank_with_ref")
        cands, n = self._candidate_table(sources, candidates, "rank_with_ref")
        if ref_candidates is None:
            check_choice(ref_mode, REF_MODES, "ref_mode")
            pick = {
                "longest": lambda c: max(c, key=len),
                "shortest": lambda c: min(c, key=len),
                "median_length": lambda c: sorted(c, key=len)[len(c) // 2],
                "first": lambda c: c[0],
                "last": lambda c: c[-1],
            }[ref_mode]
            refs = [pick(c) for c in cands]
        else:
            if isinstance(ref_candidates, str) or not isinstance(ref_candidates, Sequence):
                raise TypeError(
                    f"rank_with_ref() takes ref_candidates as a list of str, got {type(ref_candidates).__name__}"
                )
            if len(ref_candidates) != len(sources):
                raise ValueError(
                    f"rank_with_ref() got {len(sources)} inputs but {len(ref_candidates)} ref_candidates; pass one per input"
                )
            refs = [
                check_text(r, f"rank_with_ref(): ref_candidates[{k}]") for k, r in enumerate(ref_candidates)
            ]
        flat_sources = [s for s in sources for _ in range(n)]
        flat_refs = [r for r in refs for _ in range(n)]
        flat_cands = [x for c in cands for x in c]
        logits = self._compare_logits(ranker, flat_sources, flat_refs, flat_cands, mode, batch_size)
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
        batch_size = _check_batch_size(batch_size, "compare_conversations")
        sources, texts_a, texts_b = conversations_to_pairs(conversations_a, conversations_b)
        logits = self._compare_logits(ranker, sources, texts_a, texts_b, mode, batch_size)
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
        batch_size = _check_batch_size(batch_size, fn)
        sources = self._sources(inputs, instructions, fn)
        cands, n = self._candidate_table(sources, candidates, fn)
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
        results, _ = ranker._run(
            sources, cands, gens, batch_size=batch_size, show_progress=self._show_progress(),
            desc="Ranking candidates", total=2 * (n - 1) * len(sources),
        )  # fmt: skip
        # bubble's order is (survivor, *eliminated in reverse): the reference lists the losers step by step.
        steps = [(r.order[0], *reversed(r.order[1:])) for r in results]
        if not return_all:
            return [c[s[0]] for c, s in zip(cands, steps, strict=True)]
        return [[c[i] for i in s] for c, s in zip(cands, steps, strict=True)]

    # ---------------------------------------------------------------- fuser
    def loadfuser(
        self, fuser_path: str | Path, device: str | torch.device | None = None, **kwargs: Any
    ) -> None:
        """Load a seq2seq fuser in the ``gen_fuser_3b`` format (hub id or folder); kwargs are
        :class:`GenFuserConfig` fields (``torch_dtype`` defaults to bfloat16, as the reference)."""
        from blender_core.fusion.seq2seq import GenFuser

        unknown = sorted(set(kwargs) - set(_field_names(GenFuserConfig)))
        if unknown:
            raise TypeError(
                f"loadfuser() got unknown arguments {unknown}; known: {list(_field_names(GenFuserConfig))}"
            )
        config = dataclasses.replace(GenFuserConfig(model_name=str(fuser_path)), **kwargs)
        if config.load_in_4bit or config.load_in_8bit:
            raise ValueError(
                "4-bit / 8-bit fuser loading is not supported here; load in bfloat16 (the default)"
            )
        device = device or config.device or self.blender_config.device
        self.fuser = GenFuser.from_pretrained(
            config.model_name,
            device=device,
            dtype=config.torch_dtype,
            cache_dir=config.cache_dir,
            candidate_maxlength=config.candidate_maxlength,
            max_length=config.max_length,
            show_progress=self.blender_config.use_tqdm,
        )
        self.fuser_tokenizer = self.fuser.tokenizer
        self.fuser_config = dataclasses.replace(config, device=str(self.fuser.device))

    def fuse(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        batch_size: int = 4,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Fuse each input's candidates (normally its top-ranked ones) into one output.

        As the reference: "Instruction: " + instruction, "Input: " + input, each candidate cut to
        ``candidate_max_length`` tokens (a generate kwarg, default 128), beam search with 4 beams and
        ``max_new_tokens`` = that length unless given. The caller's lists are not modified.
        """
        if self.fuser is None:
            raise RuntimeError("fuse() needs a fuser: call loadfuser(path) first")
        ins = check_prompts(inputs, "fuse")
        cands = check_candidate_lists(ins, candidates, "fuse", 1)
        instr = [""] * len(ins) if instructions is None else check_prompts(instructions, "fuse")
        if len(instr) != len(ins):
            raise ValueError(f"fuse() got {len(ins)} inputs but {len(instr)} instructions")
        kwargs = dict(generate_kwargs)
        fuser = self.fuser
        cut = kwargs.pop("candidate_max_length", None)
        if cut is not None:
            fuser = copy.copy(fuser)
            fuser.candidate_maxlength = int(cut)
        return fuser.fuse(
            instr, cands, inputs=ins, batch_size=_check_batch_size(batch_size, "fuse"), **kwargs
        )

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

    def n_generate(
        self,
        model: Any,
        model_tokenizer: Any,
        inputs: Sequence[str],
        instructions: Sequence[str] | None = None,
        n: int = 5,
        sampling_mode: str | None = "top_p_sampling",
        batch_size: int = 4,
        **generate_kwargs: Any,
    ) -> list[list[str]]:
        """Sample ``n`` generations per input with a transformers model (the reference's ``n_generate``;
        vLLM models are not supported here)."""
        if instructions is not None and len(instructions) != len(inputs):
            raise ValueError(f"n_generate() got {len(inputs)} inputs but {len(instructions)} instructions")
        kwargs = dict(generate_kwargs)
        if sampling_mode == "top_k_sampling":
            kwargs.update(
                do_sample=True, top_k=kwargs.get("top_k", 50), temperature=kwargs.get("temperature", 0.7)
            )
        elif sampling_mode == "top_p_sampling":
            kwargs.update(
                do_sample=True, top_p=kwargs.get("top_p", 1.0), temperature=kwargs.get("temperature", 0.7)
            )
        elif sampling_mode is not None:
            raise ValueError(
                f"unknown sampling_mode {sampling_mode!r}; choose top_k_sampling, top_p_sampling or None"
            )
        if "max_new_tokens" not in kwargs:
            kwargs["max_length"] = kwargs.get("max_length", model_tokenizer.model_max_length)
        kwargs["num_return_sequences"] = n
        prompts = (
            [f"{x}\n{y}" for x, y in zip(instructions, inputs, strict=True)] if instructions else list(inputs)
        )
        out: list[list[str]] = []
        for start in range(0, len(prompts), batch_size):
            enc = model_tokenizer(
                prompts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True
            )
            enc = {k: v.to(model.device) for k, v in enc.items()}
            ids = model.generate(**enc, **kwargs)
            if not getattr(model.config, "is_encoder_decoder", False):
                ids = ids[:, enc["input_ids"].shape[1] :]  # decoder-only: drop the prompt
            texts = model_tokenizer.batch_decode(ids, skip_special_tokens=True)
            out.extend(texts[i : i + n] for i in range(0, len(texts), n))
        return out

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
