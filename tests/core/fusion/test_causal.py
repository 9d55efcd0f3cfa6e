"""LLMFuser on a tiny random Llama-style causal LM with a chat template, built offline."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from blender_core.fusion.auto import load_fuser
from blender_core.fusion.base import FUSION_SYSTEM_PROMPT
from blender_core.fusion.causal import LLMFuser

SHORT = {"max_new_tokens": 10}
INSTRUCTIONS = ["What is 2+2?", "Say yes", "Write a poem"]
CANDIDATES = [
    ["The answer is 4.", "four", "It is 4.", "5"],
    ["yes", "Yes!"],
    ["roses", "world world", "A poem"],
]


@pytest.fixture(scope="module")
def fuser(tiny_causal_lm_dir: Path) -> LLMFuser:
    return LLMFuser.from_pretrained(tiny_causal_lm_dir, device="cpu", local_files_only=True)


def test_prompt_is_the_chat_template_over_the_fusion_messages(fuser: LLMFuser) -> None:
    (prompt,) = fuser.prompts(INSTRUCTIONS[:1], CANDIDATES[:1])
    assert prompt.startswith(f"<|im_start|>system\n{FUSION_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
    assert "Candidate 1:\nThe answer is 4.\n\nCandidate 2:\nfour\n\nCandidate 3:\nIt is 4.\n\n" in prompt
    assert "Candidate 4:\n5\n\n" in prompt  # the fuser fuses all it is given; the pipeline picks the top K
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_candidates_are_cut(fuser: LLMFuser) -> None:
    short = LLMFuser(fuser.model, fuser.tokenizer, device="cpu", candidate_maxlength=2)
    long = "the answer is good because"
    ids = fuser.tokenizer.encode(long, add_special_tokens=False)
    (prompt,) = short.prompts(["q"], [[long, "yes", "", "no"]])
    assert f"Candidate 1:\n{fuser.tokenizer.decode(ids[:2])}...\n" in prompt
    assert "Candidate 3:\nno\n" in prompt  # the empty one is skipped, all others kept


def test_fuse_runs_and_batching_keeps_greedy_outputs(fuser: LLMFuser) -> None:
    batched = fuser.fuse(INSTRUCTIONS, CANDIDATES, batch_size=3, **SHORT)
    single = [fuser.fuse([i], [c], **SHORT)[0] for i, c in zip(INSTRUCTIONS, CANDIDATES, strict=True)]
    assert batched == single  # left padding does not change what each prompt gets
    assert len(set(batched)) > 1
    assert all(batched)


def test_stream_pieces_join_to_the_greedy_answer(fuser: LLMFuser) -> None:
    pieces = list(fuser.stream(INSTRUCTIONS[0], CANDIDATES[0], max_new_tokens=16))
    assert len(pieces) > 1
    assert "".join(pieces) == fuser.fuse(INSTRUCTIONS[:1], CANDIDATES[:1], max_new_tokens=16)[0]


async def test_astream_and_afuse(fuser: LLMFuser) -> None:
    expected = fuser.fuse(INSTRUCTIONS[1:2], CANDIDATES[1:2], **SHORT)
    pieces = [p async for p in fuser.astream(INSTRUCTIONS[1], CANDIDATES[1], **SHORT)]
    assert len(pieces) > 1
    assert "".join(pieces) == expected[0]
    assert await fuser.afuse(INSTRUCTIONS[1:2], CANDIDATES[1:2], **SHORT) == expected


def test_token_usage_is_reported_the_same_by_fuse_and_stream(fuser: LLMFuser) -> None:
    """Prompt tokens as the model read them, generated tokens up to and including the end of sequence."""
    batch, streamed = [], []
    answers = fuser.fuse(INSTRUCTIONS, CANDIDATES, usage_sink=batch, max_new_tokens=12)
    prompts = fuser.prompts(INSTRUCTIONS, CANDIDATES)
    expected_in = [len(fuser.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in prompts]
    assert [u["input_tokens"] for u in batch] == expected_in
    assert all(1 <= u["output_tokens"] <= 12 for u in batch)
    assert all(u["total_tokens"] == u["input_tokens"] + u["output_tokens"] for u in batch)
    for k in range(len(INSTRUCTIONS)):
        assert "".join(fuser.stream(INSTRUCTIONS[k], CANDIDATES[k], usage_sink=streamed, max_new_tokens=12)) == answers[k]
    assert streamed == batch


def test_closing_a_stream_stops_generation(fuser: LLMFuser) -> None:
    stream = fuser.stream(INSTRUCTIONS[0], CANDIDATES[0], max_new_tokens=5000, min_new_tokens=5000)
    assert next(stream)
    start = time.monotonic()
    stream.close()  # must not wait for 5000 tokens
    assert time.monotonic() - start < 5


def test_generation_error_reaches_the_consumer(fuser: LLMFuser) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(fuser.stream(INSTRUCTIONS[0], CANDIDATES[0], max_new_tokens=-1))


def test_inputs_are_not_mutated(fuser: LLMFuser) -> None:
    instructions, candidates = list(INSTRUCTIONS), [list(c) for c in CANDIDATES]
    before = copy.deepcopy((instructions, candidates))
    LLMFuser(fuser.model, fuser.tokenizer, device="cpu", candidate_maxlength=1).fuse(
        instructions, candidates, **SHORT
    )
    assert (instructions, candidates) == before


def test_template_without_system_role(tiny_causal_lm_dir: Path, fuser: LLMFuser) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_causal_lm_dir)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    f = LLMFuser(fuser.model, tok, device="cpu")
    (prompt,) = f.prompts(["q"], [["a"]])
    assert prompt.startswith(f"[user] {FUSION_SYSTEM_PROMPT}\n\nInstruction:\nq\n")
    assert prompt.endswith("[assistant] ")


def test_bad_input_and_setup_errors(tiny_causal_lm_dir: Path, fuser: LLMFuser) -> None:
    with pytest.raises(ValueError, match=r"got 0 candidate\(s\) for prompt 0"):
        fuser.fuse(["a"], [[]])
    with pytest.raises(ValueError, match="all empty"):
        list(fuser.stream("a", ["", ""]))
    with pytest.raises(ValueError, match="num_return_sequences"):
        fuser.fuse(["a"], [["x"]], num_return_sequences=3)
    tok = AutoTokenizer.from_pretrained(tiny_causal_lm_dir)
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        LLMFuser(fuser.model, tok, device="cpu")


def test_load_fuser_picks_the_class(tiny_causal_lm_dir: Path, tiny_gen_fuser_dir: Path, tmp_path: Path) -> None:
    from blender_core.fusion.seq2seq import GenFuser

    assert isinstance(load_fuser(tiny_causal_lm_dir, device="cpu", local_files_only=True), LLMFuser)
    gen = load_fuser(tiny_gen_fuser_dir, device="cpu", local_files_only=True)
    assert isinstance(gen, GenFuser)
    assert gen.model.dtype == torch.float32
    with pytest.raises(OSError, match="could not read a model config"):
        load_fuser(tmp_path / "missing", local_files_only=True)


@pytest.mark.gpu
def test_half_precision_on_gpu_by_default(tiny_causal_lm_dir: Path) -> None:
    f = LLMFuser.from_pretrained(tiny_causal_lm_dir, local_files_only=True)
    assert f.device.type == "cuda"
    assert f.model.dtype in (torch.bfloat16, torch.float16)
    pieces = list(f.stream(INSTRUCTIONS[0], CANDIDATES[0], **SHORT))
    assert "".join(pieces) == f.fuse(INSTRUCTIONS[:1], CANDIDATES[:1], **SHORT)[0]
