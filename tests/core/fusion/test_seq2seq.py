"""GenFuser on a tiny random T5 in the published gen_fuser_3b layout, built offline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from blender_core.fusion.seq2seq import DEFAULT_GENERATE_KWARGS, GenFuser, build_fuser_input

SHORT = {"max_new_tokens": 8}
LONG_TEXT = " ".join(["the answer is good because the data value of the first example is 42"] * 4)
INSTRUCTIONS = [
    "What is 2+2?",
    "Say yes",
    "Write a poem about the world",
    "Explain python code",
    "Hello there",
]
CANDIDATES = [
    ["The answer is 4.", "four", "It is 4 because 2 and 2.", "extra fourth"],
    ["yes", "Yes!"],
    ["A poem: the world is good", LONG_TEXT, "roses"],
    ["Python code is text", "It runs", "print(1)"],
    ["Hi", "Hello!", "hello to you"],
]


@pytest.fixture(scope="module")
def fuser(tiny_gen_fuser_dir: Path) -> GenFuser:
    return GenFuser.from_pretrained(tiny_gen_fuser_dir, device="cpu", local_files_only=True)


# ------------------------------------------------------------------------------------ input text
def test_exact_input_text(fuser: GenFuser) -> None:
    text = build_fuser_input("Say hi.", "to Bob", ["Hi!", "Hello, Bob."], fuser.tokenizer, 128)
    assert text == (
        "Instruction: Say hi.</s>Input: to Bob</s>"
        "Candidate 0: <extra_id_0>:Hi!</s>Candidate 1: <extra_id_1>:Hello, Bob."
        "</s>Summarize candidates into a better one for the given instruction:"
    )


def test_fuse_puts_instruction_and_input_like_the_reference(fuser: GenFuser) -> None:
    # the reference's fuse(inputs, candidates) without instructions: an empty "Instruction: " field
    (text,) = fuser.build_inputs([""], [["a", "b"]], inputs=["What is 2+2?"])
    assert text.startswith("Instruction: </s>Input: What is 2+2?</s>Candidate 0: <extra_id_0>:a</s>")
    (text,) = fuser.build_inputs(["What is 2+2?"], [["a"]])
    assert text.startswith("Instruction: What is 2+2?</s>Input: </s>Candidate 0: <extra_id_0>:a</s>Summarize")


def test_candidate_cut_with_dots(fuser: GenFuser) -> None:
    tok = fuser.tokenizer
    ids = tok.encode(LONG_TEXT, add_special_tokens=False)
    assert len(ids) > 20
    exact = tok.decode(tok.encode("hello world", add_special_tokens=False))
    n_exact = len(tok.encode("hello world", add_special_tokens=False))
    text = build_fuser_input("q", "", [LONG_TEXT, "hello world"], tok, candidate_maxlength=n_exact)
    cut = tok.decode(ids[:n_exact]) + "..."
    assert f"<extra_id_0>:{cut}</s>" in text
    assert f"<extra_id_1>:{exact}</s>" in text
    assert "hello world..." not in text
    assert build_fuser_input("q", "", [LONG_TEXT], tok, candidate_maxlength=None).count(LONG_TEXT) == 1


def test_published_candidate_limit_is_128_tokens(fuser: GenFuser) -> None:
    long = " ".join(["first second third"] * 60)  # 180 tokens
    (text,) = fuser.build_inputs(["q"], [[long]])
    ids = fuser.tokenizer.encode(long, add_special_tokens=False)
    assert fuser.candidate_maxlength == 128
    assert fuser.tokenizer.decode(ids[:128]) + "...</s>Summarize" in text


def test_total_cap_truncates_right(fuser: GenFuser) -> None:
    instruction = " ".join(["first second third example number"] * 250)
    (text,) = fuser.build_inputs([instruction], [["a", "b"]])
    full = fuser.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(full) > 1024
    batch = fuser._encode([text, "Instruction: short"])
    assert batch["input_ids"].shape == (2, 1024)
    assert batch["input_ids"][0].tolist() == full[:1024]  # kept from the left, no </s> added
    assert int(batch["attention_mask"][1].sum()) == len(
        fuser.tokenizer("Instruction: short", add_special_tokens=False)["input_ids"]
    )


def test_token_usage_of_fuse_and_stream(fuser: GenFuser) -> None:
    greedy = {"num_beams": 1, "max_new_tokens": 10}
    batch, streamed = [], []
    instructions, candidates = ["q one", "q two"], [["alpha", "beta"], ["gamma"]]
    answers = fuser.fuse(instructions, candidates, usage_sink=batch, **greedy)
    texts = fuser.build_inputs(instructions, candidates)
    assert [u["input_tokens"] for u in batch] == [len(fuser.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert all(1 <= u["output_tokens"] <= 10 for u in batch)
    for k in range(2):
        assert "".join(fuser.stream(instructions[k], candidates[k], usage_sink=streamed, **greedy)) == answers[k]
    assert streamed == batch
    beams: list[dict[str, int]] = []
    fuser.fuse(instructions[:1], candidates[:1], usage_sink=beams, max_new_tokens=10)  # beam search counts too
    assert beams[0]["input_tokens"] == batch[0]["input_tokens"]


def test_the_fuser_fuses_every_candidate_it_is_given(fuser: GenFuser) -> None:
    """Choosing the top K is the pipeline's job (tests/core/ensemble/test_pipeline.py): all five go in."""
    five = ["c0", "c1", "c2", "c3", "c4"]
    (text,) = fuser.build_inputs(["q"], [five])
    assert "Candidate 2: <extra_id_2>:c2" in text
    assert "Candidate 4: <extra_id_4>:c4</s>Summarize" in text


def test_empty_candidates_are_skipped(fuser: GenFuser) -> None:
    (text,) = fuser.build_inputs(["q"], [["", "alpha", "  ", "beta", "gamma", "delta"]])
    assert (
        "Candidate 0: <extra_id_0>:alpha</s>Candidate 1: <extra_id_1>:beta</s>Candidate 2: <extra_id_2>:gamma</s>"
        in text
    )
    assert "Candidate 3: <extra_id_3>:delta</s>Summarize" in text  # all non-empty ones; K is the pipeline's


# ------------------------------------------------------------------------------------ generation
def test_generation_defaults_as_published(fuser: GenFuser) -> None:
    assert DEFAULT_GENERATE_KWARGS["num_beams"] == 4
    assert DEFAULT_GENERATE_KWARGS["max_new_tokens"] == 128
    assert fuser._generate_kwargs({}) == {"num_beams": 4, "max_new_tokens": 128, "num_return_sequences": 1}
    assert fuser._generate_kwargs({"num_beams": 1})["num_beams"] == 1
    short = GenFuser(fuser.model, fuser.tokenizer, device="cpu", candidate_maxlength=32)
    assert short._generate_kwargs({})["max_new_tokens"] == 32  # the reference ties it to the candidate limit
    assert fuser.dtype == torch.float32
    assert fuser.model.dtype == torch.float32


def test_fuse_runs_beam_and_greedy(fuser: GenFuser) -> None:
    beam = fuser.fuse(INSTRUCTIONS[:2], CANDIDATES[:2], **SHORT)
    greedy = fuser.fuse(INSTRUCTIONS[:2], CANDIDATES[:2], num_beams=1, **SHORT)
    assert len(beam) == len(greedy) == 2
    assert all(isinstance(x, str) for x in beam + greedy)
    assert (
        len(set(fuser.fuse(INSTRUCTIONS, CANDIDATES, num_beams=1, **SHORT))) > 1
    )  # outputs depend on the input


def test_batching_does_not_change_greedy_outputs(fuser: GenFuser) -> None:
    one = fuser.fuse(INSTRUCTIONS, CANDIDATES, num_beams=1, batch_size=1, **SHORT)
    four = fuser.fuse(INSTRUCTIONS, CANDIDATES, num_beams=1, batch_size=4, **SHORT)
    assert one == four


def test_inputs_are_not_mutated(fuser: GenFuser) -> None:
    instructions = list(INSTRUCTIONS)
    candidates = [list(c) for c in CANDIDATES]
    before = copy.deepcopy((instructions, candidates))
    small = GenFuser(
        fuser.model, fuser.tokenizer, device="cpu", candidate_maxlength=4
    )  # every candidate gets cut
    small.fuse(instructions, candidates, num_beams=1, **SHORT)
    assert (instructions, candidates) == before
    assert small.fuse(
        tuple(instructions[:1]), (tuple(candidates[0]),), num_beams=1, **SHORT
    )  # tuples work too


def test_stream_greedy_pieces_join_to_fuse(fuser: GenFuser) -> None:
    pieces = list(fuser.stream(INSTRUCTIONS[0], CANDIDATES[0], num_beams=1, max_new_tokens=12))
    assert len(pieces) > 1
    assert "".join(pieces) == fuser.fuse(INSTRUCTIONS[:1], CANDIDATES[:1], num_beams=1, max_new_tokens=12)[0]
    beam = list(fuser.stream(INSTRUCTIONS[0], CANDIDATES[0], **SHORT))  # beam search: one piece
    assert beam == fuser.fuse(INSTRUCTIONS[:1], CANDIDATES[:1], **SHORT)


async def test_afuse_and_astream(fuser: GenFuser) -> None:
    assert await fuser.afuse(INSTRUCTIONS[:1], CANDIDATES[:1], num_beams=1, **SHORT) == fuser.fuse(
        INSTRUCTIONS[:1], CANDIDATES[:1], num_beams=1, **SHORT
    )
    pieces = [p async for p in fuser.astream(INSTRUCTIONS[1], CANDIDATES[1], num_beams=1, **SHORT)]
    assert "".join(pieces) == fuser.fuse(INSTRUCTIONS[1:2], CANDIDATES[1:2], num_beams=1, **SHORT)[0]


# ------------------------------------------------------------------------------------- bad input
def test_bad_input_messages(fuser: GenFuser) -> None:
    with pytest.raises(ValueError, match=r"got 0 candidate\(s\) for prompt 1"):
        fuser.fuse(["a", "b"], [["x"], []])
    with pytest.raises(ValueError, match="all empty"):
        fuser.fuse(["a"], [["", "   "]])
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        fuser.fuse(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="1 instructions but 2 inputs"):
        fuser.fuse(["a"], [["x"]], inputs=["i", "j"])
    with pytest.raises(TypeError, match="single str"):
        fuser.fuse("a", [["x"]])
    with pytest.raises(TypeError, match=r"\[\[cand_1, cand_2, ...\]\]"):
        fuser.fuse(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="num_return_sequences=2"):
        fuser.fuse(["a"], [["x"]], num_return_sequences=2)
    with pytest.raises(ValueError, match="candidate_maxlength must be a positive int or None"):
        GenFuser(fuser.model, fuser.tokenizer, device="cpu", candidate_maxlength=0)


def test_from_pretrained_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="could not load a seq2seq fuser"):
        GenFuser.from_pretrained(tmp_path / "nope", local_files_only=True)


def test_dtype_by_name(tiny_gen_fuser_dir: Path) -> None:
    f = GenFuser.from_pretrained(tiny_gen_fuser_dir, device="cpu", dtype="bfloat16", local_files_only=True)
    assert f.model.dtype == torch.bfloat16
    assert isinstance(f.fuse(["q"], [["a"]], num_beams=1, max_new_tokens=3)[0], str)


@pytest.mark.gpu
def test_bf16_on_gpu_by_default(tiny_gen_fuser_dir: Path) -> None:
    f = GenFuser.from_pretrained(tiny_gen_fuser_dir, local_files_only=True)
    assert f.device.type == "cuda"
    assert f.model.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    assert len(f.fuse(INSTRUCTIONS, CANDIDATES, **SHORT)) == len(INSTRUCTIONS)
