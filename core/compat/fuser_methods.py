"""The fuser half of the llm-blender drop-in: ``loadfuser``, ``fuse`` and ``n_generate``, with the reference's
names, arguments and return types, on this package's seq2seq :class:`~blender_core.fusion.seq2seq.GenFuser`
(the ``gen_fuser_3b`` format). :class:`~blender_core.compat.blender.Blender` gets them from
:class:`FuserMethods`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from blender_core.base.validation import check_candidate_lists, check_prompts
from blender_core.compat.configs import BlenderConfig, GenFuserConfig, check_config_kwargs
from blender_core.compat.inputs import check_batch_size, per_input_texts


class FuserMethods:
    """llm-blender's fuser methods, on a GenFuser loaded by :meth:`loadfuser`."""

    blender_config: BlenderConfig
    fuser: Any
    fuser_config: Any

    def loadfuser(
        self, fuser_path: str | Path, device: str | torch.device | None = None, **kwargs: Any
    ) -> None:
        """Load a seq2seq fuser in the ``gen_fuser_3b`` format (hub id or folder); kwargs are
        :class:`GenFuserConfig` fields (``torch_dtype`` defaults to bfloat16, as the reference)."""
        # imported on first use: ranker-only callers never load the fuser's code
        from blender_core.fusion.seq2seq import GenFuser

        check_config_kwargs(kwargs, GenFuserConfig, "loadfuser")
        config = dataclasses.replace(GenFuserConfig(model_name=str(fuser_path)), **kwargs)
        if config.load_in_4bit or config.load_in_8bit:
            raise ValueError(
                "4-bit / 8-bit fuser loading is not supported here; load in bfloat16 (the default)"
            )
        device = device or config.device or self.blender_config.device
        self.fuser = GenFuser.from_pretrained(
            config.model_name,
            device=device,
            dtype=config.torch_dtype,
            cache_dir=config.cache_dir,
            candidate_maxlength=config.candidate_maxlength,
            max_length=config.max_length,
            show_progress=self.blender_config.use_tqdm,
        )
        self.fuser_tokenizer = self.fuser.tokenizer
        self.fuser_config = dataclasses.replace(config, device=str(self.fuser.device))

    def fuse(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        batch_size: int = 4,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Fuse each input's candidates (normally its top-ranked ones) into one output.

        As the reference: "Instruction: " + instruction, "Input: " + input, each candidate cut to
        ``candidate_max_length`` tokens (a generate kwarg, default 128), beam search with 4 beams and
        ``max_new_tokens`` = that length unless given. The caller's lists are not modified.
        """
        if self.fuser is None:
            raise RuntimeError("fuse() needs a fuser: call loadfuser(path) first")
        ins = check_prompts(inputs, "fuse")
        cands = check_candidate_lists(ins, candidates, "fuse", 1)
        instr = (
            [""] * len(ins)
            if instructions is None
            else per_input_texts(instructions, len(ins), "instructions", "fuse")
        )
        kwargs = dict(generate_kwargs)
        fuser = self.fuser
        cut = kwargs.pop("candidate_max_length", None)
        if cut is not None:
            fuser = copy.copy(fuser)
            fuser.candidate_maxlength = int(cut)
        return fuser.fuse(instr, cands, inputs=ins, batch_size=check_batch_size(batch_size, "fuse"), **kwargs)

    def n_generate(
        self,
        model: Any,
        model_tokenizer: Any,
        inputs: Sequence[str],
        instructions: Sequence[str] | None = None,
        n: int = 5,
        sampling_mode: str | None = "top_p_sampling",
        batch_size: int = 4,
        **generate_kwargs: Any,
    ) -> list[list[str]]:
        """Sample ``n`` generations per input with a transformers model (the reference's ``n_generate``;
        vLLM models are not supported here)."""
        if instructions is not None and len(instructions) != len(inputs):
            raise ValueError(f"n_generate() got {len(inputs)} inputs but {len(instructions)} instructions")
        kwargs = dict(generate_kwargs)
        if sampling_mode == "top_k_sampling":
            kwargs.update(
                do_sample=True, top_k=kwargs.get("top_k", 50), temperature=kwargs.get("temperature", 0.7)
            )
        elif sampling_mode == "top_p_sampling":
            kwargs.update(
                do_sample=True, top_p=kwargs.get("top_p", 1.0), temperature=kwargs.get("temperature", 0.7)
            )
        elif sampling_mode is not None:
            raise ValueError(
                f"unknown sampling_mode {sampling_mode!r}; choose top_k_sampling, top_p_sampling or None"
            )
        if "max_new_tokens" not in kwargs:
            kwargs["max_length"] = kwargs.get("max_length", model_tokenizer.model_max_length)
        kwargs["num_return_sequences"] = n
        prompts = (
            [f"{x}\n{y}" for x, y in zip(instructions, inputs, strict=True)] if instructions else list(inputs)
        )
        out: list[list[str]] = []
        for start in range(0, len(prompts), batch_size):
            enc = model_tokenizer(
                prompts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True
            )
            enc = {k: v.to(model.device) for k, v in enc.items()}
            ids = model.generate(**enc, **kwargs)
            if not getattr(model.config, "is_encoder_decoder", False):
                ids = ids[:, enc["input_ids"].shape[1] :]  # decoder-only: drop the prompt
            texts = model_tokenizer.batch_decode(ids, skip_special_tokens=True)
            out.extend(texts[i : i + n] for i in range(0, len(texts), n))
        return out
