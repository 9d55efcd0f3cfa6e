"""LocalChat on a tiny random Llama-style causal LM: the reply is the greedy continuation of the chat
template, and the usage counts the prompt's tokens and the generated ones up to the end of turn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from blender_core.fusion.causal import chat_prompt
from blender_core.fusion.chat import DEFAULT_MAX_NEW_TOKENS, LocalChat
from tests.helpers.core_fakes import forcing_reply

MESSAGES = [
    {"role": "system", "content": "You are a judge."},
    {"role": "user", "content": "Which answer is better, A or B?"},
]


@pytest.fixture(scope="module")
def chat(tiny_causal_lm_dir: Path) -> LocalChat:
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_dir, local_files_only=True)
    return LocalChat(model, AutoTokenizer.from_pretrained(tiny_causal_lm_dir, local_files_only=True), name="tiny")


def test_reply_is_the_greedy_continuation_and_usage_counts_both_sides(chat: LocalChat) -> None:
    text, usage = chat.complete(MESSAGES)
    prompt_ids = chat.tokenizer(chat_prompt(chat.tokenizer, MESSAGES), add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = chat.model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=DEFAULT_MAX_NEW_TOKENS, do_sample=False,
            pad_token_id=chat.tokenizer.pad_token_id,
        )  # fmt: skip
    new = out[0, len(prompt_ids) :].tolist()
    assert text == chat.tokenizer.decode(new, skip_special_tokens=True)
    eos = chat.tokenizer.eos_token_id
    generated = new.index(eos) + 1 if eos in new else len(new)
    assert usage == {
        "input_tokens": len(prompt_ids),
        "output_tokens": generated,
        "total_tokens": len(prompt_ids) + generated,
    }
    assert chat.complete(MESSAGES) == (text, usage)  # greedy: the same conversation, the same reply


def test_max_new_tokens_bounds_the_reply_and_a_call_overrides_it(chat: LocalChat) -> None:
    short = LocalChat(chat.model, chat.tokenizer, max_new_tokens=3)
    assert short.complete(MESSAGES)[1]["output_tokens"] <= 3
    assert short.complete(MESSAGES, max_new_tokens=1)[1]["output_tokens"] == 1


def test_generate_kwargs_reach_generate_and_the_end_of_turn_is_counted(chat: LocalChat) -> None:
    text, usage = chat.complete(MESSAGES, prefix_allowed_tokens_fn=forcing_reply(chat.tokenizer, "[[B]]"))
    assert text == "[[B]]"
    n_tag = len(chat.tokenizer.encode("[[B]]", add_special_tokens=False))
    assert usage["output_tokens"] == n_tag + 1  # the tag and the end of turn
    assert usage["total_tokens"] == usage["input_tokens"] + n_tag + 1


def test_bad_input_is_refused_with_what_to_pass(chat: LocalChat) -> None:
    with pytest.raises(ValueError, match=r"complete\(\) takes a non-empty list of \{'role', 'content'\} messages"):
        chat.complete([])
    with pytest.raises(ValueError, match="non-empty list"):
        chat.complete("Which is better?")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, got 0"):
        LocalChat(chat.model, chat.tokenizer, max_new_tokens=0)
    bare = AutoTokenizer.from_pretrained(chat.tokenizer.name_or_path, local_files_only=True)
    bare.chat_template = None
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        LocalChat(chat.model, bare)


def test_name_defaults_to_the_model_path(tiny_causal_lm_dir: Path, chat: LocalChat) -> None:
    assert chat.name == "tiny"
    assert LocalChat(chat.model, chat.tokenizer).name == str(tiny_causal_lm_dir)
