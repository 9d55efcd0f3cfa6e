"""Token usage: sums, and the one mapping to the OpenAI API's keys (the server and LlamaIndex use it)."""

from __future__ import annotations

from blender_core.base.usage import openai_usage, sum_usage


def test_sums_fill_in_a_missing_total() -> None:
    assert sum_usage([{"input_tokens": 3, "output_tokens": 1}, None, {"input_tokens": 2, "total_tokens": 9}]) == {
        "input_tokens": 5,
        "output_tokens": 1,
        "total_tokens": 13,
    }


def test_openai_usage_maps_the_keys_and_fills_in_the_total() -> None:
    usage = {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}
    assert openai_usage(usage) == {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    assert openai_usage({"input_tokens": 3, "output_tokens": 1}) == {
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
    }
    assert openai_usage(None) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
