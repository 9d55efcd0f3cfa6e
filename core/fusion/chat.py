"""LocalChat: a local transformers causal LM with a chat template as a plain chat call: messages in, the
reply's text and its token usage out. It is what a local LLM judge runs on: the application wraps
:meth:`LocalChat.complete` into the ranking layer's ``CallableChat`` (``JudgeRanker(CallableChat(...))``).

One conversation per call, greedy: a judge's verdict should be reproducible, and a judge asks its
comparisons one by one (``JudgeRanker``'s ``max_concurrency`` runs several calls at once in threads).

Example:
    >>> from blender_core.local_models import load_smollm2
    >>> chat = LocalChat(*load_smollm2(), name="smollm2")  # doctest: +SKIP
    >>> chat.complete([{"role": "user", "content": "Reply with [[A]]."}])  # doctest: +SKIP
    ('[[A]]', {'input_tokens': 31, 'output_tokens': 4, 'total_tokens': 35})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from blender_core.base.usage import UsageSink
from blender_core.base.validation import positive_int
from blender_core.fusion._common import (
    check_chat_template,
    eos_ids,
    merge_generate_kwargs,
    pad_token_id,
    report_batch_usage,
)
from blender_core.fusion.causal import chat_prompt

# A verdict-only judge reply: "[[A]]" is 3 SmolLM2 tokens and the end of turn a 4th, which leaves room
# for a few words before the tag ("My verdict: [[A]]" is 6). MT-Bench's explain-first prompt needs ~256.
DEFAULT_MAX_NEW_TOKENS = 16


class LocalChat:
    """A local causal LM with a chat template, answering one conversation per :meth:`complete` call.

    Args:
        model: a loaded causal LM, used where it is (its device and dtype); put in eval mode here.
        tokenizer: its tokenizer, with a chat template (a system turn is merged into the user turn for
            templates that reject one).
        max_new_tokens: the reply's length limit (default 16: a verdict with a few words before it).
        generate_kwargs: further ``generate`` settings over greedy decoding (e.g. ``max_time``, which
            stops a generation that outlives its caller's timeout); a call's kwargs override them.
        name: shown in the judge's name (default: the model's name or path).

    Example:
        >>> chat = LocalChat(model, tokenizer, max_new_tokens=8)  # doctest: +SKIP
        >>> text, usage = chat.complete([{"role": "user", "content": "2+2?"}])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        generate_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        check_chat_template(tokenizer, "LocalChat")
        self._pad_id = pad_token_id(tokenizer)
        self.model = cast(Any, model).eval()
        self.tokenizer = tokenizer
        # greedy: the same conversation gets the same reply
        defaults = {"do_sample": False, "max_new_tokens": positive_int(max_new_tokens, "max_new_tokens")}
        self.generate_kwargs = merge_generate_kwargs(defaults, generate_kwargs)
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "local-chat")
        self._eos = eos_ids(self.model, tokenizer)

    @torch.inference_mode()
    def complete(
        self, messages: Sequence[dict[str, str]], **generate_kwargs: Any
    ) -> tuple[str, dict[str, int]]:
        """The model's reply to ``messages`` (``{"role", "content"}`` dicts) and its token usage.

        Args:
            messages: the conversation, at least one message; the assistant turn is opened after it.
            generate_kwargs: ``generate`` settings for this call, over the chat's own.

        Returns:
            ``(text, usage)``: the generated text without special tokens, and ``{"input_tokens": prompt
            tokens, "output_tokens": generated tokens up to and including the end of turn, "total_tokens"}``.
        """
        if isinstance(messages, (str, dict)) or not messages:
            raise ValueError(
                f"complete() takes a non-empty list of {{'role', 'content'}} messages, got {messages!r:.80}"
            )
        text = chat_prompt(self.tokenizer, [dict(m) for m in messages])
        encoded = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")  # the template has them
        device = self.model.device
        inputs = {k: encoded[k].to(device) for k in ("input_ids", "attention_mask")}  # (1, prompt)
        kwargs = merge_generate_kwargs(self.generate_kwargs, generate_kwargs)
        kwargs.setdefault("pad_token_id", self._pad_id)
        output_ids = self.model.generate(**inputs, **kwargs)  # (1, prompt + new)
        new_ids = output_ids[:, inputs["input_ids"].shape[1] :]  # (1, new)
        usage: UsageSink = []
        report_batch_usage(usage, inputs["attention_mask"], new_ids, self._eos)
        return str(self.tokenizer.decode(new_ids[0], skip_special_tokens=True)), usage[0]
