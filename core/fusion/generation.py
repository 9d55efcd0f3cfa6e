"""HFGenerationFuser: what the transformers fusers share (placement, loading, the batch loop, streaming).

:class:`~blender_core.fusion.seq2seq.GenFuser` (a T5 in the ``gen_fuser_3b`` format) and
:class:`~blender_core.fusion.causal.LLMFuser` (a causal LM with a chat template) differ in the text the
model reads, how it is tokenized and padded, and which output ids are the answer; the rest lives here.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from typing_extensions import Self

from blender_core.base.devices import resolve_device, resolve_dtype
from blender_core.base.hub import HubOptions
from blender_core.base.usage import UsageSink
from blender_core.base.validation import check_positive, positive_int
from blender_core.fusion._common import eos_ids, merge_generate_kwargs, report_batch_usage, stream_generate
from blender_core.fusion.base import BaseFuser


class HFGenerationFuser(BaseFuser):
    """A fuser over a transformers model that writes the fused answer with ``model.generate``.

    Subclasses set the class attributes and implement :meth:`_encode` (texts to padded model inputs) and
    :meth:`_answers` (generated ids to the answers' texts and the generated tokens); their ``fuse`` builds
    the texts and calls :meth:`_generate_batches`, their ``stream`` calls :meth:`_stream_text`.
    """

    #: the transformers auto class :meth:`from_pretrained` loads the model with
    auto_model: ClassVar[Any]
    #: ``generate`` settings under the fuser's own and a call's
    default_generate_kwargs: ClassVar[dict[str, Any]]
    #: whether fp16 is the GPU default where bf16 is missing (False for T5, which overflows in fp16)
    allow_fp16: ClassVar[bool] = True
    #: whether the streamer sees the prompt before the answer (causal) or the answer only (seq2seq)
    streams_prompt: ClassVar[bool]
    #: what a failed load could not load, and what to pass instead
    load_what: ClassVar[str]
    load_hint: ClassVar[str]

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device | None,
        dtype: str | torch.dtype | None,
        candidate_maxlength: int | None,
        batch_size: int,
        generate_kwargs: dict[str, Any] | None,
        show_progress: bool,
    ) -> None:
        """Check the settings and put the model on its device, in its dtype, in eval mode."""
        self.candidate_maxlength = check_positive(candidate_maxlength, "candidate_maxlength")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, allow_fp16=self.allow_fp16)
        self.model = cast(Any, model).to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.generate_kwargs = dict(generate_kwargs or {})
        # fail early on bad defaults
        merge_generate_kwargs(self.default_generate_kwargs, self.generate_kwargs)
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
        **kwargs: Any,
    ) -> Self:
        """Load the fuser's model (its ``auto_model``) and ``AutoTokenizer`` from the hub or a folder.

        The hub arguments go to both ``from_pretrained`` calls; remote code is never trusted. The model
        loads in the fuser's dtype (default bf16 on GPU, fp32 on CPU). ``kwargs`` go to the fuser's
        constructor (``candidate_maxlength``, ``batch_size``, ``generate_kwargs``, ``show_progress``, ...).

        Example:
            >>> fuser = GenFuser.from_pretrained("llm-blender/gen_fuser_3b", device="cuda")  # doctest: +SKIP
            >>> fuser = LLMFuser.from_pretrained("Qwen/Qwen2.5-0.5B-Instruct")  # doctest: +SKIP
        """
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev, allow_fp16=cls.allow_fp16)
        hub = HubOptions(
            revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
        )
        model, tokenizer = load_model_and_tokenizer(
            cls.auto_model, name_or_path, torch_dtype, hub, cls.load_what, cls.load_hint
        )
        kwargs = {**cls._loaded_defaults(name_or_path), **kwargs}
        return cls(model, tokenizer, device=dev, dtype=torch_dtype, **kwargs)

    @classmethod
    def _loaded_defaults(cls, name_or_path: str | Path) -> dict[str, Any]:
        """Constructor arguments that :meth:`from_pretrained` derives from where the model came from."""
        return {}

    @abstractmethod
    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of ``texts``, padded to the longest, on the fuser's device."""

    @abstractmethod
    def _answers(
        self, output_ids: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[list[str], torch.Tensor]:
        """The answers' texts in a ``generate`` output, and the ids generated (for the usage)."""

    def _generate_kwargs(self, call_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The ``generate`` settings of a call: the defaults, the fuser's, the call's (later wins)."""
        return merge_generate_kwargs(self.default_generate_kwargs, self.generate_kwargs, call_kwargs)

    @torch.inference_mode()
    def _generate_batches(
        self,
        texts: Sequence[str],
        gen_kwargs: dict[str, Any],
        batch_size: int | None,
        usage_sink: UsageSink | None,
    ) -> list[str]:
        """One answer per text, generated ``batch_size`` texts at a time (default the fuser's)."""
        bs = self.batch_size if batch_size is None else positive_int(batch_size, "batch_size")
        out: list[str] = []
        starts = range(0, len(texts), bs)
        for start in tqdm(starts, desc="Fusing", disable=not self.show_progress or len(starts) < 2):
            batch = self._encode(list(texts[start : start + bs]))
            output_ids = self.model.generate(**batch, **gen_kwargs)  # (batch, [prompt +] new)
            answers, new_ids = self._answers(output_ids, batch)
            out.extend(answers)
            report_batch_usage(
                usage_sink, batch["attention_mask"], new_ids, eos_ids(self.model, self.tokenizer)
            )
        return out

    def _stream_text(
        self, text: str, gen_kwargs: dict[str, Any], usage_sink: UsageSink | None
    ) -> Iterator[str]:
        """The answer to one model input, yielded as it is generated; with ``num_beams`` > 1 (streamers
        do not support beam search) the whole answer at once when it is done."""
        if gen_kwargs.get("num_beams", 1) > 1:
            yield self._generate_batches([text], gen_kwargs, 1, usage_sink)[0]
            return
        yield from stream_generate(
            self.model,
            self.tokenizer,
            self._encode([text]),
            gen_kwargs,
            skip_prompt=self.streams_prompt,
            usage_sink=usage_sink,
        )


def load_model_and_tokenizer(
    auto_model: Any,
    name_or_path: str | Path,
    dtype: torch.dtype,
    hub: HubOptions,
    what: str,
    hint: str,
) -> tuple[Any, Any]:
    """``auto_model.from_pretrained`` and ``AutoTokenizer.from_pretrained`` with the same hub arguments and
    no remote code; a failure says what could not be loaded (``what``) and what to pass (``hint``)."""
    from transformers import AutoTokenizer

    try:
        kwargs = hub.as_kwargs()
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False, **kwargs)
        model = auto_model.from_pretrained(str(name_or_path), dtype=dtype, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        raise type(exc)(
            f"could not load {what} from {str(name_or_path)!r} ({exc}). {hint}; check the network and, for a "
            "gated repo, your token (`token=` or $HF_TOKEN); offline, `local_files_only=True` or HF_HUB_OFFLINE=1"
        ) from exc
    return model, tokenizer
