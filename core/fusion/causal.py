"""LLMFuser: fuse candidates with any causal LM from transformers through its chat template."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from blender_core.base.usage import UsageSink
from blender_core.fusion._common import (
    check_chat_template,
    check_fuse_args,
    pad_token_id,
    select_candidates,
    truncate_candidate,
)
from blender_core.fusion.base import fusion_messages
from blender_core.fusion.generation import HFGenerationFuser

logger = logging.getLogger(__name__)

# Greedy by default: a fused answer should be reproducible; 256 new tokens fit a typical answer.
DEFAULT_GENERATE_KWARGS: dict[str, Any] = {
    "do_sample": False,
    "max_new_tokens": 256,
    "num_return_sequences": 1,
}


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """The chat template applied with the assistant turn opened; a system turn is merged into the user
    turn for templates that reject the system role."""
    tok = cast(Any, tokenizer)
    try:
        return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    except Exception as exc:  # jinja raises TemplateError (e.g. "System role not supported")
        if messages[0]["role"] != "system":
            raise
        logger.debug("chat template rejected the system turn (%s); merging it into the user turn", exc)
        merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
        return str(tok.apply_chat_template(merged + messages[2:], tokenize=False, add_generation_prompt=True))


def fusion_prompt(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    candidates: Sequence[str],
    *,
    candidate_maxlength: int | None = 256,
    index: int = 0,
) -> str:
    """The LLM fuser's prompt text: the non-empty candidates, each cut, in the chat template."""
    chosen = select_candidates(candidates, index)
    cut = [truncate_candidate(c, tokenizer, candidate_maxlength) for c in chosen]
    return chat_prompt(tokenizer, fusion_messages(instruction, cut))


class LLMFuser(HFGenerationFuser):
    """A fuser over any causal LM with a chat template: it is asked, in a fusion prompt, to merge the
    top-K candidates into one better answer (:func:`~blender_core.fusion.base.fusion_messages`).

    ``fuse`` generates for batches of instructions (left padding); ``stream`` yields the answer as it is
    generated. Candidates come ranked (best first) and already chosen (the pipeline's ``top_k``); the
    non-empty ones are used, each cut
    to ``candidate_maxlength`` tokens ("..." marks a cut).

    Example:
        >>> fuser = LLMFuser.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> fuser.fuse(["What is 2+2?"], [["4", "It is 4.", "5"]], max_new_tokens=32)  # doctest: +SKIP
        ['2 + 2 = 4.']
        >>> "".join(fuser.stream("What is 2+2?", ["4", "It is 4.", "5"]))  # doctest: +SKIP
        '2 + 2 = 4.'
    """

    name = "llm_fuser"

    auto_model = AutoModelForCausalLM
    default_generate_kwargs = DEFAULT_GENERATE_KWARGS
    streams_prompt = True  # the generated sequence starts with the prompt
    load_what = "a causal LM fuser"
    load_hint = "Pass a local folder or a hub id of a chat model"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        candidate_maxlength: int | None = 256,
        batch_size: int = 4,
        generate_kwargs: dict[str, Any] | None = None,
        show_progress: bool = False,
        name: str | None = None,
    ) -> None:
        """Wrap a loaded causal LM and its tokenizer, which must have a chat template (:meth:`from_pretrained`
        loads both and names the fuser after the hub id or folder).

        Args:
            device: default CUDA when available, else CPU.
            dtype: default bf16 (fp16 where bf16 is missing) on GPU, fp32 on CPU.
            candidate_maxlength: tokens kept per candidate, so that the prompt stays short; None: no cut.
            batch_size: instructions per ``generate`` call.
            generate_kwargs: defaults for ``generate`` over greedy decoding with 256 new tokens; the
                kwargs of a ``fuse`` / ``stream`` call override both.
            show_progress: a progress bar over batches.
            name: recorded in results (default the model's name or path).
        """
        check_chat_template(tokenizer, "LLMFuser")
        super().__init__(
            model,
            tokenizer,
            device=device,
            dtype=dtype,
            candidate_maxlength=candidate_maxlength,
            batch_size=batch_size,
            generate_kwargs=generate_kwargs,
            show_progress=show_progress,
        )
        self.name = name or str(getattr(model.config, "_name_or_path", "") or self.name)
        self._pad_id = pad_token_id(tokenizer)

    @classmethod
    def _loaded_defaults(cls, name_or_path: str | Path) -> dict[str, Any]:
        return {"name": str(name_or_path)}  # results name the hub id or folder the fuser came from

    def prompts(self, instructions: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[str]:
        """The prompt texts (chat template applied), one per instruction; nothing is mutated."""
        instr, cands, _ = check_fuse_args(instructions, candidates, "fuse")
        return [
            fusion_prompt(
                self.tokenizer,
                instr[k],
                cands[k],
                candidate_maxlength=self.candidate_maxlength,
                index=k,
            )
            for k in range(len(instr))
        ]

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids of the prompts (the template carries the special tokens), left-padded to the longest."""
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self._pad_id, dtype=torch.long)  # (batch, seq)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            if x:
                input_ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
                attention_mask[row, width - len(x) :] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}

    def _answers(
        self, output_ids: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[list[str], torch.Tensor]:
        """The generated tokens only (``output_ids``: (batch, prompt + new)), decoded."""
        new_ids = output_ids[:, batch["input_ids"].shape[1] :]  # (batch, new)
        return self.tokenizer.batch_decode(new_ids, skip_special_tokens=True), new_ids

    def _generate_kwargs(self, call_kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = super()._generate_kwargs(call_kwargs)
        kwargs.setdefault("pad_token_id", self._pad_id)
        return kwargs

    def fuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        batch_size: int | None = None,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Fuse the candidates of each instruction into one answer.

        Args:
            instructions: the full instruction text of each example.
            candidates: per instruction, its candidates ranked best first (at least one non-empty).
            batch_size: overrides the fuser's batch size for this call.
            usage_sink: gets one usage entry per instruction (prompt tokens, generated tokens).
            generate_kwargs: passed to ``model.generate`` over the defaults (greedy, 256 new tokens).

        Returns:
            One answer per instruction: the generated tokens only, decoded without special tokens.

        Raises:
            ValueError: on an empty candidate list, only empty candidates, or mismatched lengths.
        """
        texts = self.prompts(instructions, candidates)
        return self._generate_batches(texts, self._generate_kwargs(generate_kwargs), batch_size, usage_sink)

    def stream(
        self,
        instruction: str,
        candidates: Sequence[str],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> Iterator[str]:
        """Yield the fused answer in pieces as the model generates it (their concatenation is what
        :meth:`fuse` returns for the same arguments); with ``num_beams`` > 1 the whole answer at once."""
        text = self.prompts([instruction], [candidates])[0]
        yield from self._stream_text(text, self._generate_kwargs(generate_kwargs), usage_sink)
