"""GenFuser: the paper's seq2seq fuser (``llm-blender/gen_fuser_3b``, a Flan-T5) in its published format."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, PreTrainedModel, PreTrainedTokenizerBase

from blender_core.base.usage import UsageSink
from blender_core.base.validation import positive_int
from blender_core.fusion._common import (
    check_fuse_args,
    merge_generate_kwargs,
    select_candidates,
    truncate_candidate,
)
from blender_core.fusion.generation import HFGenerationFuser

logger = logging.getLogger(__name__)

FUSE_SUFFIX = "</s>Summarize candidates into a better one for the given instruction:"
# Generation as published: beam search with 4 beams, answers up to 128 new tokens (the reference sets
# max_new_tokens to the candidate length limit, 128).
DEFAULT_GENERATE_KWARGS: dict[str, Any] = {"num_beams": 4, "max_new_tokens": 128, "num_return_sequences": 1}


def build_fuser_input(
    instruction: str,
    input: str,
    candidates: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    candidate_maxlength: int | None = 128,
) -> str:
    """The text the published GenFuser reads, exactly as llm-blender 0.0.2 builds it.

    Each candidate is cut to ``candidate_maxlength`` tokens ("..." appended when cut), then::

        "Instruction: " + instruction + "</s>" + "Input: " + input + "</s>"
        + "</s>".join("Candidate {i}: <extra_id_{i}>:" + candidate_i for i = 0, 1, …)
        + "</s>Summarize candidates into a better one for the given instruction:"

    The total length cap (1024 tokens) is applied when this text is tokenized, not here. The
    ``candidates`` are used as given (no top-K, no skipping): :meth:`GenFuser.fuse` selects them.

    Example:
        >>> build_fuser_input("Say hi.", "", ["Hi!", "Hello."], tokenizer)  # doctest: +SKIP
        'Instruction: Say hi.</s>Input: </s>Candidate 0: <extra_id_0>:Hi!</s>Candidate 1: <extra_id_1>:Hello.</s>Summarize candidates into a better one for the given instruction:'
    """
    cut = [truncate_candidate(c, tokenizer, candidate_maxlength) for c in candidates]
    body = "</s>".join(f"Candidate {i}: <extra_id_{i}>:" + c for i, c in enumerate(cut))
    return "</s>".join(["Instruction: " + instruction, "Input: " + input, body]) + FUSE_SUFFIX


class GenFuser(HFGenerationFuser):
    """A seq2seq fuser in the published ``gen_fuser_3b`` format (a T5-family model and its tokenizer).

    ``fuse(instructions, candidates, inputs=None)`` puts ``instructions[k]`` after "Instruction: " and
    ``inputs[k]`` (default "") after "Input: ". The reference's ``fuse(inputs, candidates, instructions=None)``
    is ``fuse(instructions or [""] * n, candidates, inputs=inputs)``. Candidates come ranked (best first)
    and already chosen (the pipeline's ``top_k``, the paper's 3); empty ones are skipped.

    Example:
        >>> fuser = GenFuser.from_pretrained("llm-blender/gen_fuser_3b")  # doctest: +SKIP
        >>> fuser.fuse(["What is 2+2?"], [["4", "It is 4.", "2+2 equals 4."]])  # doctest: +SKIP
        ['2+2 equals 4.']
    """

    name = "gen_fuser"

    auto_model = AutoModelForSeq2SeqLM
    default_generate_kwargs = DEFAULT_GENERATE_KWARGS
    allow_fp16 = False  # T5 overflows in fp16: GPUs without bf16 run it in fp32
    streams_prompt = False  # the decoder's ids are the answer's only
    load_what = "a seq2seq fuser"
    load_hint = (
        "Pass a local folder with a T5-family model and its tokenizer (like llm-blender/gen_fuser_3b), or a hub id"
    )

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        candidate_maxlength: int | None = 128,
        max_length: int = 1024,
        batch_size: int = 4,
        generate_kwargs: dict[str, Any] | None = None,
        show_progress: bool = False,
    ) -> None:
        """Wrap a loaded seq2seq model and its tokenizer (:meth:`from_pretrained` loads both).

        Args:
            device: default CUDA when available, else CPU.
            dtype: default bf16 on GPU (fp32 where bf16 is missing: T5 overflows in fp16), fp32 on CPU.
            candidate_maxlength: tokens kept per candidate ("..." marks a cut); None: no cut. Published: 128.
            max_length: cap on the whole input, in tokens (cut on the right). Published: 1024.
            batch_size: instructions per ``generate`` call (padded to the longest of the batch).
            generate_kwargs: defaults for ``generate`` over the published ones (num_beams 4,
                max_new_tokens = candidate_maxlength, i.e. 128, as the reference); the kwargs of a
                ``fuse`` call override both.
            show_progress: a progress bar over batches.
        """
        self.max_length = positive_int(max_length, "max_length")
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

    def build_inputs(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        inputs: Sequence[str] | None = None,
    ) -> list[str]:
        """The fuser input texts (empty candidates skipped, the others cut), one per instruction; nothing is
        mutated."""
        instr, cands, ins = check_fuse_args(instructions, candidates, "fuse", inputs)
        return [
            build_fuser_input(
                instr[k],
                ins[k],
                select_candidates(cands[k], k),
                self.tokenizer,
                self.candidate_maxlength,
            )
            for k in range(len(instr))
        ]

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize without special tokens, cap at ``max_length`` (cut right), pad to the longest."""
        enc = self.tokenizer(
            texts,
            max_length=self.max_length,
            truncation=True,
            padding="longest",
            add_special_tokens=False,
            return_tensors="pt",
        )
        return {
            "input_ids": enc["input_ids"].to(self.device),
            "attention_mask": enc["attention_mask"].to(self.device),
        }

    def _answers(
        self, output_ids: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[list[str], torch.Tensor]:
        """The decoded outputs (``output_ids``: (batch, new_len)); the first decoder id is the start
        token, not generated."""
        return self.tokenizer.batch_decode(output_ids, skip_special_tokens=True), output_ids[:, 1:]

    def _generate_kwargs(self, call_kwargs: dict[str, Any]) -> dict[str, Any]:
        # As the reference: the answer may be as long as one candidate (max_new_tokens = candidate_maxlength).
        defaults = {**DEFAULT_GENERATE_KWARGS, "max_new_tokens": self.candidate_maxlength or 128}
        return merge_generate_kwargs(defaults, self.generate_kwargs, call_kwargs)

    def fuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        inputs: Sequence[str] | None = None,
        batch_size: int | None = None,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Fuse the candidates of each instruction into one answer.

        Args:
            instructions: one instruction per example (may be "" when everything is in ``inputs``).
            candidates: per instruction, its candidates ranked best first (at least one non-empty).
            inputs: the optional "Input: " text per instruction (the reference's ``inputs``); default "".
            batch_size: overrides the fuser's batch size for this call.
            usage_sink: gets one usage entry per instruction (input tokens, generated tokens).
            generate_kwargs: passed to ``model.generate`` over the defaults (num_beams 4, max_new_tokens 128).

        Returns:
            One fused answer per instruction, decoded without special tokens.

        Raises:
            ValueError: on an empty candidate list, only empty candidates, or mismatched lengths.
        """
        texts = self.build_inputs(instructions, candidates, inputs)
        return self._generate_batches(texts, self._generate_kwargs(generate_kwargs), batch_size, usage_sink)

    def stream(
        self,
        instruction: str,
        candidates: Sequence[str],
        *,
        input: str = "",
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> Iterator[str]:
        """Yield the fused answer in pieces as it is generated.

        Streaming needs one beam: with ``num_beams`` > 1 (the published default) the whole answer is
        yielded at once when done. Pass ``num_beams=1`` to stream token by token (greedy).
        """
        text = self.build_inputs([instruction], [candidates], [input])[0]
        yield from self._stream_text(text, self._generate_kwargs(generate_kwargs), usage_sink)
