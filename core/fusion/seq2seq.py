"""GenFuser: the paper's seq2seq fuser (``llm-blender/gen_fuser_3b``, a Flan-T5) in its published format."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM, PreTrainedModel, PreTrainedTokenizerBase

from blender_core.base.devices import resolve_device, resolve_dtype
from blender_core.base.usage import UsageSink
from blender_core.base.validation import check_positive, positive_int
from blender_core.fusion._common import (
    check_fuse_args,
    eos_ids,
    load_model_and_tokenizer,
    merge_generate_kwargs,
    report_batch_usage,
    select_candidates,
    stream_generate,
    truncate_candidate,
)
from blender_core.fusion.base import BaseFuser

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


class GenFuser(BaseFuser):
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
        """Wrap a loaded seq2seq model and its tokenizer.

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
        self.candidate_maxlength = check_positive(candidate_maxlength, "candidate_maxlength")
        self.max_length = positive_int(max_length, "max_length")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, allow_fp16=False)
        self.model = cast(Any, model).to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.generate_kwargs = dict(generate_kwargs or {})
        merge_generate_kwargs(DEFAULT_GENERATE_KWARGS, self.generate_kwargs)  # fail early on bad defaults
        self.show_progress = show_progress

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        candidate_maxlength: int | None = 128,
        max_length: int = 1024,
        **kwargs: Any,
    ) -> GenFuser:
        """Load a seq2seq fuser (``AutoModelForSeq2SeqLM`` + ``AutoTokenizer``) from the hub or a folder.

        The hub arguments go to both ``from_pretrained`` calls; remote code is never trusted.
        ``kwargs`` go to :class:`GenFuser` (``batch_size``, ``generate_kwargs``, ``show_progress``).

        Example:
            >>> fuser = GenFuser.from_pretrained("llm-blender/gen_fuser_3b", device="cuda")  # doctest: +SKIP
        """
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev, allow_fp16=False)
        hub = {
            "revision": revision,
            "cache_dir": cache_dir,
            "local_files_only": local_files_only,
            "token": token,
        }
        model, tokenizer = load_model_and_tokenizer(
            AutoModelForSeq2SeqLM,
            name_or_path,
            torch_dtype,
            hub,
            "a seq2seq fuser",
            "Pass a local folder with a T5-family model and its tokenizer (like llm-blender/gen_fuser_3b), or a hub id",
        )
        return cls(
            model,
            tokenizer,
            device=dev,
            dtype=torch_dtype,
            candidate_maxlength=candidate_maxlength,
            max_length=max_length,
            **kwargs,
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

    def _generate_kwargs(self, call_kwargs: dict[str, Any]) -> dict[str, Any]:
        # As the reference: the answer may be as long as one candidate (max_new_tokens = candidate_maxlength).
        defaults = {**DEFAULT_GENERATE_KWARGS, "max_new_tokens": self.candidate_maxlength or 128}
        return merge_generate_kwargs(defaults, self.generate_kwargs, call_kwargs)

    @torch.inference_mode()
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
        gen_kwargs = self._generate_kwargs(generate_kwargs)
        bs = self.batch_size if batch_size is None else positive_int(batch_size, "batch_size")
        out: list[str] = []
        starts = range(0, len(texts), bs)
        for start in tqdm(starts, desc="Fusing", disable=not self.show_progress or len(starts) < 2):
            batch = self._encode(texts[start : start + bs])
            output_ids = self.model.generate(**batch, **gen_kwargs)  # (batch, new_len)
            out.extend(self.tokenizer.batch_decode(output_ids, skip_special_tokens=True))
            # the first decoder id is the start token, not generated
            report_batch_usage(
                usage_sink, batch["attention_mask"], output_ids[:, 1:], eos_ids(self.model, self.tokenizer)
            )
        return out

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
        gen_kwargs = self._generate_kwargs(generate_kwargs)
        if gen_kwargs.get("num_beams", 1) > 1:
            yield from super().stream(
                instruction, candidates, inputs=[input], usage_sink=usage_sink, **generate_kwargs
            )
            return
        text = self.build_inputs([instruction], [candidates], [input])[0]
        yield from stream_generate(
            self.model,
            self.tokenizer,
            self._encode([text]),
            gen_kwargs,
            skip_prompt=False,
            usage_sink=usage_sink,
        )
