"""Token usage: the keys every layer reports it in, where a call reports it, and sums."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")

#: Where a model call appends the token usage it reports (one dict per call, keys among ``USAGE_KEYS``).
UsageSink = list[dict[str, int]]


def report_usage(sink: UsageSink | None, input_tokens: int, output_tokens: int) -> None:
    """Append one call's usage to ``sink`` (nothing without a sink)."""
    if sink is not None:
        sink.append(
            {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            }
        )


def sum_usage(usages: Sequence[Mapping[str, int] | None]) -> dict[str, int]:
    """Add token usages key by key (missing keys count 0); total = input + output when not given."""
    total = dict.fromkeys(USAGE_KEYS, 0)
    for u in usages:
        if not u:
            continue
        for key in USAGE_KEYS:
            total[key] += int(u.get(key, 0) or 0)
        if not u.get("total_tokens"):
            total["total_tokens"] += int(u.get("input_tokens", 0) or 0) + int(u.get("output_tokens", 0) or 0)
    return total


def openai_usage(usage: Mapping[str, int] | None) -> dict[str, int]:
    """Token usage in the OpenAI API's keys (``prompt_tokens``, ``completion_tokens``, ``total_tokens``),
    as OpenAI-compatible clients and LlamaIndex's token counting read it; total = prompt + completion when
    not given."""
    usage = usage or {}
    prompt, completion = int(usage.get("input_tokens", 0) or 0), int(usage.get("output_tokens", 0) or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }
