"""Helpers shared by the fusers: argument checks, top-K selection, per-candidate truncation, devices."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..validation import check_candidate_lists, check_prompts, check_text

logger = logging.getLogger(__name__)

TRUNCATION_MARK = "..."


def check_fuse_args(
    instructions: Any, candidates: Any, fn: str = "fuse", inputs: Any = None
) -> tuple[list[str], list[list[str]], list[str]]:
    """Validated copies of ``instructions``, ``candidates`` and ``inputs`` (default: one "" per instruction)."""
    instr = check_prompts(instructions, fn)
    cands = check_candidate_lists(instr, candidates, fn, min_candidates=1)
    if inputs is None:
        ins = [""] * len(instr)
    else:
        if isinstance(inputs, str) or not isinstance(inputs, Sequence):
            raise TypeError(
                f"{fn}() takes inputs as a list of str (one per instruction), got {type(inputs).__name__}"
            )
        if len(inputs) != len(instr):
            raise ValueError(
                f"{fn}() got {len(instr)} instructions but {len(inputs)} inputs; pass one input per instruction"
            )
        ins = [check_text(x, f"{fn}(): input {k}") for k, x in enumerate(inputs)]
    return instr, cands, ins


def select_candidates(
    candidates: Sequence[str], top_k: int | None, index: int, fn: str = "fuse"
) -> list[str]:
    """The first ``top_k`` non-empty candidates (they come ranked, best first); all of them when fewer.

    Empty or whitespace-only candidates carry nothing to fuse and are skipped; if nothing is left, a
    ``ValueError`` says so (callers that want a fallback use the top-ranked candidate themselves).
    """
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
    return kept if top_k is None else kept[:top_k]


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


def check_top_k(top_k: int | None) -> int | None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None (all candidates), got {top_k!r}")
    return top_k


def check_positive(value: int | None, what: str) -> int | None:
    """``value`` if it is None or a positive int, else a ``ValueError`` naming ``what``."""
    return None if value is None else positive_int(value, what, " or None")


def positive_int(value: int, what: str, _alt: str = "") -> int:
    """``value`` if it is a positive int, else a ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int{_alt}, got {value!r}")
    return value


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The given device, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device, *, allow_fp16: bool = True
) -> torch.dtype:
    """The given dtype (a torch dtype or its name); default bf16 on GPUs that have it, fp32 on CPU.

    ``allow_fp16=False`` for T5: it overflows in fp16, so GPUs without bf16 run it in fp32.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype != "auto":
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
        return resolved
    if dtype is not None and dtype != "auto":
        raise TypeError(f"dtype must be a torch.dtype, its name or None, got {type(dtype).__name__}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if allow_fp16 else torch.float32
    return torch.float32


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


def stream_generate(
    model: Any,
    tokenizer: Any,
    inputs: dict[str, torch.Tensor],
    gen_kwargs: dict[str, Any],
    *,
    skip_prompt: bool,
) -> Iterator[str]:
    """Run ``model.generate`` in a thread and yield the decoded text as it comes (``TextIteratorStreamer``).

    An error in the generation thread is re-raised here. When the consumer stops early (closes the
    generator), generation is stopped at the next token instead of running to the end.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    cancel = threading.Event()

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
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
