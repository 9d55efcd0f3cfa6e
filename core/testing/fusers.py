"""Tiny random fuser checkpoints, built offline (for tests and benchmarks).

- :func:`make_tiny_gen_fuser`: a T5 encoder-decoder in the published ``llm-blender/gen_fuser_3b`` layout
  (``config.json``, ``model.safetensors``, ``spiece.model``, ``tokenizer.json``, ``tokenizer_config.json``,
  ``special_tokens_map.json``), loadable by transformers 5 and 4.x alike, with a T5-style vocabulary:
  ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, sentencepiece pieces, then ``<extra_id_*>`` in reverse order.
- :func:`make_tiny_causal_lm`: a Llama-style causal LM with a small chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from blender_core.testing._common import TINY_LLAMA, random_lines, train_unigram, widen_init

_WORDS = (
    "the a an of to and in is it that for on with as was be by this are or from at which but not have "
    "answer question model better worse good bad write list explain python code story poem summary reason "
    "first second third because however therefore example number time people world data value result "
    "source candidate instruction input output response user assistant hello thanks please sure yes no "
    "Instruction Input Candidate Summarize candidates into one given The A It This Yes No Paris France "
    "system"
).split()

# A small chat template in the ChatML style (system / user / assistant turns).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus(n_lines: int, seed: int) -> list[str]:
    """Generated lines that cover letters of both cases, digits and punctuation."""
    lines = random_lines(_WORDS, n_lines, seed, [".", "?", "!", ",", ":", ";", ")"], numbers=True)
    lines.append(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 .,:;!?()[]{}'\"-+=*/<>_#%&@"
    )
    return lines


def train_t5_sentencepiece(vocab_size: int = 200, seed: int = 0) -> bytes:
    """A unigram sentencepiece model with T5's special ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no BOS."""
    return train_unigram(
        _corpus(800, seed),
        vocab_size,
        character_coverage=1.0,
        pad_id=0,
        pad_piece="<pad>",
        eos_id=1,
        eos_piece="</s>",
        unk_id=2,
        unk_piece="<unk>",
        bos_id=-1,
    )


def build_tiny_t5_tokenizer(extra_ids: int = 10, vocab_size: int = 200, seed: int = 0) -> tuple[Any, bytes]:
    """A transformers ``T5Tokenizer`` over a freshly trained sentencepiece model, and that model's bytes.

    The sentinels ``<extra_id_0..n-1>`` follow the pieces in reverse order, as in T5's vocabulary
    (``<extra_id_0>`` has the highest id). Works with transformers 5 (``vocab=``) and 4.x (``vocab_file=``).
    """
    import transformers
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2
    from transformers import T5Tokenizer

    sp_bytes = train_t5_sentencepiece(vocab_size, seed)
    if int(transformers.__version__.split(".")[0]) < 5:  # pragma: no cover - exercised by the reference venv
        import tempfile

        folder = Path(tempfile.mkdtemp())
        (folder / "spiece.model").write_bytes(sp_bytes)
        return T5Tokenizer(
            vocab_file=str(folder / "spiece.model"), extra_ids=extra_ids, legacy=True
        ), sp_bytes
    proto = sp_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(sp_bytes)
    vocab = [(p.piece, float(p.score)) for p in proto.pieces]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(extra_ids))]
    tokenizer = T5Tokenizer(
        vocab=vocab, extra_ids=extra_ids, _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap
    )
    return tokenizer, sp_bytes


def make_tiny_gen_fuser(
    path: str | Path, *, seed: int = 0, extra_ids: int = 10, **config_overrides: Any
) -> Path:
    """Write a random T5 fuser in the published ``gen_fuser_3b`` layout and return its folder.

    A T5 with d_model 32, 2 encoder and 2 decoder layers (Flan-T5 style: gated-gelu, untied head).
    """
    from safetensors.torch import save_file
    from transformers import T5Config, T5ForConditionalGeneration

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer, sp_bytes = build_tiny_t5_tokenizer(extra_ids=extra_ids, seed=seed)
    cfg_kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "architectures": ["T5ForConditionalGeneration"],
    }
    cfg_kwargs.update(config_overrides)
    config = T5Config(**cfg_kwargs)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # a wider init than T5's, so that greedy outputs vary with the input
        for name, param in model.named_parameters():
            if "layer_norm" not in name:
                param.normal_(0.0, 1.0 if "embed" in name or "shared" in name or "lm_head" in name else 0.4)
    # Weights: the keys of the published checkpoint (shared + both embed_tokens aliases + lm_head).
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
    config_dict = config.to_dict()
    for key in ("transformers_version", "dtype", "torch_dtype"):
        config_dict.pop(key, None)
    (root / "config.json").write_text(json.dumps(config_dict, indent=2))

    # Tokenizer files: the fast tokenizer.json, the sentencepiece model, and a T5 tokenizer config as the
    # published checkpoint has them (readable by transformers 4.x, which does not know the 5.x fields).
    tokenizer.save_pretrained(root)
    (root / "spiece.model").write_bytes(sp_bytes)
    sentinels = [f"<extra_id_{i}>" for i in range(extra_ids)]
    specials = {
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "additional_special_tokens": sentinels,
    }
    (root / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    tok_cfg = {**specials, "extra_ids": extra_ids, "model_max_length": 512, "tokenizer_class": "T5Tokenizer"}
    (root / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    return root


def build_tiny_chat_tokenizer(vocab_size: int = 200, seed: int = 0) -> Any:
    """A Llama-style tokenizer (sentencepiece unigram) with ChatML turn markers and a chat template."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    proto = sp_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(train_t5_sentencepiece(vocab_size, seed))
    backend = Tokenizer(
        Unigram([(p.piece, float(p.score)) for p in proto.pieces], unk_id=2, byte_fallback=False)
    )
    backend.normalizer = normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<|im_end|>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def make_tiny_causal_lm(path: str | Path, *, seed: int = 0, **config_overrides: Any) -> Path:
    """Write a random Llama-style causal LM (hidden 32, 2 layers) with a chat tokenizer; return its folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_chat_tokenizer(seed=seed)
    cfg_kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        **TINY_LLAMA,
        "max_position_embeddings": 2048,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": True,
    }
    cfg_kwargs.update(config_overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg_kwargs)).eval()
    widen_init(model)  # so that greedy outputs vary with the prompt
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root
