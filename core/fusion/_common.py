"""Helpers shared by the fusers and LocalChat: argument checks, candidate selection and truncation,
``generate`` settings, token usage, streaming."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from blender_core.base.usage import UsageSink, report_usage
from blender_core.base.validation import check_candidate_lists, check_prompts, check_texts_per

logger = logging.getLogger(__name__)

TRUNCATION_MARK = "..."


def check_fuse_args(
    instructions: Any, candidates: Any, fn: str = "fuse", inputs: Any = None
) -> tuple[list[str], list[list[str]], list[str]]:
    """Validated copies of ``instructions``, ``candidates`` and ``inputs`` (default: one "" per instruction)."""
    instr = check_prompts(instructions, fn)
    cands = check_candidate_lists(instr, candidates, fn, min_candidates=1)
    if inputs is None:
        return instr, cands, [""] * len(instr)
    return instr, cands, check_texts_per(inputs, len(instr), "inputs", "instruction", fn)


def select_candidates(candidates: Sequence[str], index: int, fn: str = "fuse") -> list[str]:
    """The non-empty candidates, in their (ranked) order: which and how many to fuse is the caller's choice
    (the pipeline's ``top_k``); empty or whitespace-only ones carry nothing to fuse and are skipped. If
    nothing is left, a ``ValueError`` says so (callers that want a fallback use the top-ranked candidate)."""
    kept = [c for c in candidates if c.strip()]
    if not kept:
        raise ValueError(
            f"{fn}() got {len(candidates)} candidate(s) for instruction {index}, all empty; "
            "pass at least one non-empty candidate"
        )
    if len(kept) < len(candidates):
        logger.debug(
            "%s(): skipped %d empty candidate(s) of instruction %d", fn, len(candidates) - len(kept), index
        )
    return kept


def truncate_candidate(text: str, tokenizer: Any, candidate_maxlength: int | None) -> str:
    """Cut ``text`` to ``candidate_maxlength`` tokens and append "..." when it was cut (the reference's way).

    Tokens are counted with ``tokenizer.encode(text, add_special_tokens=False)`` and the kept ones turned
    back into text with ``tokenizer.decode`` (special tokens kept), exactly as llm-blender 0.0.2 does.
    """
    if candidate_maxlength is None:
        return text
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= candidate_maxlength:
        return text
    return tokenizer.decode(ids[:candidate_maxlength]) + TRUNCATION_MARK


def check_chat_template(tokenizer: Any, who: str) -> None:
    """A ``ValueError`` naming ``who`` unless ``tokenizer`` has a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{who} needs a tokenizer with a chat template (an instruction-tuned model); this one has "
            "none. Set `tokenizer.chat_template` or use a chat/instruct model"
        )


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its end-of-sequence token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set `tokenizer.pad_token`")
    return int(pad)


def merge_generate_kwargs(defaults: dict[str, Any], *overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``defaults`` updated by each override in turn (later wins); ``None`` values remove a default."""
    out = dict(defaults)
    for o in overrides:
        if o:
            out.update(o)
    n_ret = out.get("num_return_sequences", 1)
    if n_ret not in (None, 1):
        raise ValueError(
            f"fuse() returns one answer per instruction; got num_return_sequences={n_ret}, use 1"
        )
    return {k: v for k, v in out.items() if v is not None}


def generated_lengths(new_ids: torch.Tensor, eos_ids: set[int]) -> list[int]:
    """Tokens each row generated: up to and including its first end-of-sequence token, else all of them."""
    out = []
    for row in new_ids.tolist():
        end = next((i for i, t in enumerate(row) if t in eos_ids), None)
        out.append(len(row) if end is None else end + 1)
    return out


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The end-of-sequence ids generation stops at (the model's generation config, else the tokenizer's)."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    return set(ids) if isinstance(ids, (list, tuple)) else ({int(ids)} if ids is not None else set())


def report_batch_usage(
    sink: UsageSink | None, attention_mask: torch.Tensor, new_ids: torch.Tensor, eos: set[int]
) -> None:
    """One usage entry per row of a ``generate`` call: its prompt tokens and the tokens it generated."""
    if sink is None:
        return
    for n_in, n_out in zip(attention_mask.sum(dim=1).tolist(), generated_lengths(new_ids, eos), strict=True):
        report_usage(sink, int(n_in), int(n_out))


def stream_generate(
    model: Any,
    tokenizer: Any,
    inputs: dict[str, torch.Tensor],
    gen_kwargs: dict[str, Any],
    *,
    skip_prompt: bool,
    usage_sink: UsageSink | None = None,
) -> Iterator[str]:
    """Run ``model.generate`` in a thread and yield the decoded text as it comes (``TextIteratorStreamer``).

    An error in the generation thread is re-raised here. When the consumer stops early (closes the
    generator), generation is stopped at the next token instead of running to the end. The tokens read
    and generated go to ``usage_sink`` when the stream ends.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    cancel = threading.Event()
    # the sequence the stopping criteria see: the prompt and the answer (causal), or the decoder's ids
    # after its start token (seq2seq); its last length counts the generated tokens
    start = inputs["input_ids"].shape[1] if skip_prompt else 1
    seen = [start]

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            seen[0] = int(input_ids.shape[1])
            return torch.full(
                (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device
            )

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=skip_prompt, skip_special_tokens=True)
    criteria = StoppingCriteriaList([*(gen_kwargs.pop("stopping_criteria", None) or []), _Cancelled()])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**inputs, **gen_kwargs, streamer=streamer, stopping_criteria=criteria)
        except BaseException as exc:  # handed to the consumer below
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, name="fuser-stream", daemon=True)
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        cancel.set()
        thread.join()
    if errors:
        raise errors[0]
    report_usage(usage_sink, int(inputs["attention_mask"].sum()), seen[0] - start)
