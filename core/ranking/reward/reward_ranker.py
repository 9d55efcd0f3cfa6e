"""RewardModelRanker: rank candidates with a reward model, one forward pass per candidate.

Any transformers ``AutoModelForSequenceClassification`` with one output and a chat template is a reward
model here (e.g. Skywork-Reward, the Qwen2.5 reward models): each candidate is written as the assistant
turn after its prompt with the model's chat template and scored once, so n candidates cost n passes, where
a pairwise ranker needs n(n-1) for ``full``. ``load_ranker("reward:<hub id or folder>")`` loads one.

The rules it follows:

- **Order.** Rewards are a total order: every strategy (``full``, ``bubble``, ``knockout``, ``sort``) is
  accepted and gives the same reward order; ``Ranking.scores`` are the rewards, ``n_forward`` is n and
  there is no comparison matrix. A single candidate is the trivial ranking (score 0, no pass), as for
  every :class:`~blender_core.ranking.interface.Ranker`.
- **Padding.** Rows are padded on the right with the model config's ``pad_token_id``, else the tokenizer's
  pad token, else its eos token (then written to ``model.config.pad_token_id``). transformers' classifiers
  read a row's reward at its last token that is not the pad id, so a text that ends in that token is read
  just before it, exactly as a plain transformers forward pass reads it; a warning says when this happens.
- **Length.** A text longer than the model's positions (or ``max_length``) keeps its last tokens, so that
  the scored turn survives and the start of the conversation is dropped; a warning and the ``Ranking``'s
  ``issues`` say which candidates were cut.
- **Code.** Remote code is never run: a model that needs it is refused with a :class:`RemoteCodeError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from blender_core.base.devices import resolve_device, resolve_dtype
from blender_core.base.hub import HubOptions
from blender_core.base.results import Ranking
from blender_core.base.validation import (
    check_candidate_lists,
    check_choice,
    check_prompts,
    check_same_length,
    check_texts,
    positive_int,
)
from blender_core.ranking.aggregation import order_from_scores, ranks_from_scores
from blender_core.ranking.batches import check_batch_size, length_batches, pad_batch
from blender_core.ranking.interface import BaseRanker
from blender_core.ranking.reward.inputs import (
    check_conversation,
    keep_end,
    position_limit,
    prompt_conversation,
    render,
    tokenize,
)
from blender_core.ranking.reward.loading import (
    RemoteCodeError,
    check_reward_model,
    load_reward_model,
    resolve_pad_id,
)
from blender_core.ranking.strategies import STRATEGIES

__all__ = ["RemoteCodeError", "RewardModelRanker"]

logger = logging.getLogger(__name__)


class RewardModelRanker(BaseRanker):
    """A ranker that scores each candidate alone with a reward model (higher reward = better).

    Every text of a call is scored together: identical ones once, the rest in batches sorted by length and
    padded per batch only (with an attention mask), under ``torch.inference_mode``. See the module for the
    padding, truncation and strategy rules.

    Example:
        >>> ranker = RewardModelRanker.from_pretrained("Skywork/Skywork-Reward-V2-Qwen3-0.6B")  # doctest: +SKIP
        >>> r = ranker.rank(["What is 2+2?"], [["5", "4", "It is 4."]])[0]  # doctest: +SKIP
        >>> r.order, r.n_forward  # doctest: +SKIP
        ((2, 1, 0), 3)
    """

    # a reward is a score on one answer: a threshold on it means the same for every prompt
    absolute_scores = True

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        name: str | None = None,
    ) -> None:
        """Wrap a loaded reward model (one output) and its tokenizer (with a chat template).

        Args:
            device: where to run; default CUDA when available, else CPU.
            dtype: default bf16 on GPU (fp16 where it has no bf16), fp32 on CPU.
            batch_size: texts per forward pass.
            max_length: the most tokens a text keeps (its last ones); default the model's positions.
            name: shown in metadata and logs (default: where the model was loaded from; ``from_pretrained``
                gives ``"reward:<hub id or folder>"``, the spec ``load_ranker`` takes).
        """
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "RewardModelRanker")
        check_reward_model(model.config, tokenizer, self.name)
        self.batch_size = positive_int(batch_size, "batch_size (texts per forward pass)")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)  # bf16 on GPU; fp32 on CPU (half is slow there)
        self.pad_id = resolve_pad_id(model, tokenizer, self.name)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()  # type: ignore[call-arg]
        self.tokenizer = tokenizer
        limit = None if max_length is None else positive_int(max_length, "max_length (tokens per text)")
        self.max_length = position_limit(model.config, tokenizer, limit)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
    ) -> RewardModelRanker:
        """Load a reward model from a hub id or a local folder; every hub argument goes through to HF.

        Weights load strictly (a missing, unexpected or mis-shaped key is an error) and remote code never
        runs: a config or tokenizer config with an ``auto_map``, or a class transformers does not know,
        raises :class:`RemoteCodeError`. So do, as ``ValueError``, a model with more than one output label
        and a tokenizer without a chat template.
        """
        resolved = resolve_dtype(dtype, resolve_device(device))
        hub = HubOptions(
            revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
        )
        model, tokenizer = load_reward_model(name_or_path, hub, resolved)
        return cls(
            model,
            tokenizer,
            device=device,
            dtype=resolved,
            batch_size=batch_size,
            max_length=max_length,
            name=f"reward:{name_or_path}",
        )

    def save_pretrained(self, path: str | Path) -> None:
        """Write model, config and tokenizer; ``from_pretrained(path)`` reads them back."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    # ---------------------------------------------------------------- engine
    @torch.inference_mode()
    def _forward(self, seqs: list[list[int]], batch_size: int, progress: tqdm) -> np.ndarray:
        """Rewards of token sequences, (len(seqs),) float64, in length-sorted right-padded batches."""
        values = np.zeros(len(seqs), dtype=np.float64)
        for idx in length_batches([len(s) for s in seqs], batch_size, exact=False):
            ids, mask = pad_batch([seqs[i] for i in idx], self.pad_id)  # (batch, longest)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            values[idx] = logits[:, 0].float().cpu().numpy()  # (batch, 1) -> (batch,)
            progress.update(len(idx))
        return values

    def reward_texts(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress: bool = False
    ) -> tuple[np.ndarray, list[bool]]:
        """Rewards of already rendered texts (chat template applied), and whether each was cut to its end.

        The building block of every verb: identical texts run once; each text longer than
        :attr:`max_length` tokens keeps its last ones.
        """
        size = check_batch_size(batch_size, "reward_texts")
        texts = check_texts(texts, "reward_texts(): texts")
        uniq = list(dict.fromkeys(texts))
        seqs, cut = [], []
        for ids in tokenize(self.tokenizer, uniq):
            kept, was_cut = keep_end(ids, self.max_length)
            seqs.append(kept)
            cut.append(was_cut)
        if any(cut):
            logger.warning(
                "%s: %d text(s) longer than %s tokens kept their last %s (the scored turn; the start of the "
                "conversation was dropped)", self.name, sum(cut), self.max_length, self.max_length,
            )  # fmt: skip
        ends_in_pad = sum(1 for s in seqs if s and s[-1] == self.pad_id)
        if ends_in_pad:
            logger.warning(
                "%s: %d text(s) end in the pad token (id %d); their reward is read at the last other token, "
                "as transformers reads it", self.name, ends_in_pad, self.pad_id,
            )  # fmt: skip
        with tqdm(total=len(seqs), desc="reward", disable=not show_progress, unit="text") as bar:
            values = self._forward(seqs, self.batch_size if size is None else size, bar)
        where = {text: k for k, text in enumerate(uniq)}
        return values[[where[t] for t in texts]], [cut[where[t]] for t in texts]

    def _reward_conversations(
        self, conversations: list[list[dict[str, str]]], batch_size: int | None, show_progress: bool = False
    ) -> tuple[np.ndarray, list[bool]]:
        return self.reward_texts(
            render(self.tokenizer, conversations), batch_size=batch_size, show_progress=show_progress
        )

    # ---------------------------------------------------------------- API
    def score(
        self, prompts: Sequence[str], candidates: Sequence[str], *, batch_size: int | None = None
    ) -> list[float]:
        """The reward of ``candidates[k]`` as the answer to ``prompts[k]``, for each k.

        Example:
            >>> ranker.score(["2+2?", "2+2?"], ["4", "5"])  # doctest: +SKIP
            [1.93, -0.42]
        """
        check_batch_size(batch_size, "score")
        p = check_prompts(prompts, "score")
        c = check_texts(candidates, "score(): candidates")
        check_same_length("score", prompts=p, candidates=c)
        convs = [prompt_conversation(s, x) for s, x in zip(p, c, strict=True)]
        return self._reward_conversations(convs, batch_size)[0].tolist()

    def score_conversations(
        self, conversations: Sequence[Sequence[dict[str, Any]]], *, batch_size: int | None = None
    ) -> list[float]:
        """The reward of each conversation's last turn, an assistant turn, in the context of the turns before.

        Turns are OpenAI-style ``{"role": "system"|"user"|"assistant"|"tool", "content": str}`` dicts (roles
        in any case); the caller's dicts are not changed.
        """
        check_batch_size(batch_size, "score_conversations")
        if isinstance(conversations, (str, dict)) or not isinstance(conversations, Sequence):
            raise TypeError(
                f"score_conversations() takes a list of conversations, got {type(conversations).__name__}"
            )
        convs = [check_conversation(c, f"conversations[{k}]") for k, c in enumerate(conversations)]
        return self._reward_conversations(convs, batch_size)[0].tolist()

    def compare(
        self,
        prompts: Sequence[str],
        candidates_a: Sequence[str],
        candidates_b: Sequence[str],
        *,
        batch_size: int | None = None,
    ) -> list[float]:
        """reward(a) - reward(b) for each prompt; > 0 means a is better. Position plays no part."""
        check_batch_size(batch_size, "compare")
        p = check_prompts(prompts, "compare")
        a = check_texts(candidates_a, "compare(): candidates_a")
        b = check_texts(candidates_b, "compare(): candidates_b")
        check_same_length("compare", prompts=p, candidates_a=a, candidates_b=b)
        convs = [prompt_conversation(s, x) for s, x in zip(p + p, a + b, strict=True)]
        values = self._reward_conversations(convs, batch_size)[0]
        return (values[: len(p)] - values[len(p) :]).tolist()

    def compare_conversations(
        self,
        conversations_a: Sequence[Sequence[dict[str, Any]]],
        conversations_b: Sequence[Sequence[dict[str, Any]]],
        *,
        batch_size: int | None = None,
    ) -> list[float]:
        """reward(a) - reward(b) of the last assistant turns of two conversations; > 0 means a is better."""
        check_batch_size(batch_size, "compare_conversations")
        for what, convs in (("conversations_a", conversations_a), ("conversations_b", conversations_b)):
            if isinstance(convs, (str, dict)) or not isinstance(convs, Sequence):
                raise TypeError(
                    f"compare_conversations() takes a list of conversations for {what}, got {type(convs).__name__}"
                )
        check_same_length(
            "compare_conversations", conversations_a=conversations_a, conversations_b=conversations_b
        )
        a = [check_conversation(c, f"conversations_a[{k}]") for k, c in enumerate(conversations_a)]
        b = [check_conversation(c, f"conversations_b[{k}]") for k, c in enumerate(conversations_b)]
        values = self._reward_conversations(a + b, batch_size)[0]
        return (values[: len(a)] - values[len(a) :]).tolist()

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> list[Ranking]:
        """Rank each prompt's candidates by reward (their number may differ per prompt).

        Args:
            strategy: ``full``, ``bubble``, ``knockout`` or ``sort``: all give the reward order, since rewards
                are a total order; the name is kept in ``Ranking.strategy``.
            batch_size: texts per forward pass (default: the ranker's).
            show_progress: a progress bar over the texts.

        Returns:
            one :class:`Ranking` per prompt: scores = rewards, ``n_forward`` = n (0 for a single candidate,
            the trivial ranking), no matrix; ``issues`` names the candidates cut to their end.
        """
        check_batch_size(batch_size, "rank")
        p = check_prompts(prompts, "rank")
        cands = check_candidate_lists(p, candidates, "rank", 1)
        check_choice(strategy, STRATEGIES, "strategy")
        # every candidate of every prompt in one call; a single candidate needs no pass
        convs = [prompt_conversation(q, x) for q, c in zip(p, cands, strict=True) if len(c) > 1 for x in c]
        values, cut = self._reward_conversations(convs, batch_size, show_progress)
        out, pos = [], 0
        for c in cands:
            n = len(c) if len(c) > 1 else 0
            s, cut_k = (values[pos : pos + n], cut[pos : pos + n]) if n else (np.zeros(1), [])
            pos += n
            order = order_from_scores(s)
            issues = tuple(
                f"candidate {i} was longer than {self.max_length} tokens; its reward is of its last "
                f"{self.max_length} (the start of the conversation was dropped)"
                for i, was_cut in enumerate(cut_k)
                if was_cut
            )
            out.append(
                Ranking(
                    scores=s,
                    ranks=ranks_from_scores(s),
                    order=order,
                    best=order[0],
                    strategy=strategy,
                    n_forward=n,
                    issues=issues,
                )
            )
        return out
