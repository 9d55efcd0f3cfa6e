"""Tiny random PairRM checkpoints, built offline, in the published layouts (for tests and benchmarks).

Nothing here is downloaded: a sentencepiece unigram model is trained on generated lines, a DeBERTa-v2
tokenizer is built from it, and a small random DeBERTa-v2 encoder gets the PairRM head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import DebertaV2Config, DebertaV2Tokenizer

from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.pairrm.encoding import add_pairrm_tokens
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel
from blender_core.testing._common import random_lines, train_unigram

_WORDS = (
    "the a an of to and in is it that for on with as was be by this are or from at which but not have "
    "answer question model better worse good bad write list explain python code story poem summary reason "
    "first second third because however therefore example number time people world data value result "
    "source candidate instruction input output response user assistant hello thanks please sure yes no"
).split()

Layout = Literal["reference", "hf", "native"]


def train_tiny_sentencepiece(vocab_size: int = 150, seed: int = 0) -> bytes:
    """Train a unigram sentencepiece model with ``[PAD] [CLS] [SEP] [UNK]`` at ids 0-3 and ``[MASK]`` at 4."""
    return train_unigram(
        random_lines(_WORDS, 600, seed, [".", "?", "!", ",", ":"]),
        vocab_size,
        pad_id=0,
        pad_piece="[PAD]",
        bos_id=1,
        bos_piece="[CLS]",
        eos_id=2,
        eos_piece="[SEP]",
        unk_id=3,
        unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"],
    )


def build_tiny_tokenizer(vocab_size: int = 150, seed: int = 0) -> DebertaV2Tokenizer:
    """A DeBERTa-v2 tokenizer over a freshly trained tiny sentencepiece model."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(train_tiny_sentencepiece(vocab_size, seed))
    vocab = [(p.piece, float(p.score)) for p in proto.pieces]
    return DebertaV2Tokenizer(vocab=vocab, unk_id=3)


def tiny_encoder_config(vocab_size: int, **overrides: Any) -> DebertaV2Config:
    """A DeBERTa-v2 config with hidden 32 / 2 layers / relative attention, like DeBERTa-v3 in miniature."""
    kwargs: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "relative_attention": True,
        "position_buckets": 256,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "type_vocab_size": 0,
        "pad_token_id": 0,
    }
    kwargs.update(overrides)
    return DebertaV2Config(**kwargs)


def make_tiny_pairrm(
    path: str | Path,
    layout: Layout = "reference",
    *,
    seed: int = 0,
    source_maxlength: int = 128,
    candidate_maxlength: int = 128,
    weights: Literal["safetensors", "bin"] = "safetensors",
    **encoder_overrides: Any,
) -> Path:
    """Write a random PairRM checkpoint and return the folder to pass to ``PairRanker.from_pretrained``.

    - ``reference``: ``path/ranker`` (ranker ``config.json`` whose ``model_name`` is ``path/encoder``,
      weights, ``added_tokens.json``) and ``path/encoder`` (encoder config + tokenizer), as
      ``llm-blender/PairRM`` / ``pair-ranker`` are laid out;
    - ``hf``: one folder with a ``DebertaV2Config`` carrying the PairRM fields, as ``llm-blender/PairRM-hf``;
    - ``native``: this package's ``save_pretrained`` layout.
    """
    root = Path(path)
    tokenizer = build_tiny_tokenizer(seed=seed)
    base_len = len(tokenizer)
    ids = add_pairrm_tokens(tokenizer)
    enc_cfg = tiny_encoder_config(len(tokenizer), **encoder_overrides)
    cfg = PairRMConfig(
        encoder_config=enc_cfg.to_dict(),
        source_maxlength=source_maxlength,
        candidate_maxlength=candidate_maxlength,
        source_prefix_id=ids[0],
        cand1_prefix_id=ids[1],
        cand2_prefix_id=ids[2],
        cand_prefix_id=ids[3],
    )
    torch.manual_seed(seed)
    model = PairRMModel(cfg).eval()
    with torch.no_grad():  # wider than the 0.02 init, so that random rankers give clearly different scores
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.3)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}

    if layout == "native":
        from blender_core.ranking.pairrm.pair_ranker import PairRanker

        PairRanker(model, tokenizer).save_pretrained(root)
        return root

    if layout == "reference":
        enc_dir, out = root / "encoder", root / "ranker"
        enc_dir.mkdir(parents=True, exist_ok=True)
        base_tok = build_tiny_tokenizer(seed=seed)  # the encoder's own tokenizer: no PairRM tokens yet
        assert len(base_tok) == base_len
        base_tok.save_pretrained(enc_dir)
        # The reference builds the encoder with from_pretrained before loading the ranker's weights over it,
        # so the encoder folder needs (any) weights of its own.
        from transformers import DebertaV2Model

        DebertaV2Model(tiny_encoder_config(base_len, **encoder_overrides)).save_pretrained(enc_dir)
        out.mkdir(parents=True, exist_ok=True)
        ranker_cfg = {
            "ranker_type": "pairranker",
            "model_type": "deberta",
            "model_name": str(enc_dir.resolve()),
            "cache_dir": None,
            "load_checkpoint": None,
            "source_maxlength": source_maxlength,
            "candidate_maxlength": candidate_maxlength,
            "n_tasks": 1,
            "num_pos": 5,
            "num_neg": 5,
            "sub_sampling_mode": "all_pair",
            "sub_sampling_ratio": 0.4,
            "loss_type": "instructgpt",
            "reduce_type": "linear",
            "inference_mode": "bubble",
            "drop_out": 0.05,
            "fp16": True,
            "device": None,
        }
        (out / "config.json").write_text(json.dumps(ranker_cfg, indent=2))
        added = dict(
            zip(("<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>"), ids, strict=True)
        )
        (out / "added_tokens.json").write_text(json.dumps(added, indent=2))
    else:  # hf
        out = root
        out.mkdir(parents=True, exist_ok=True)
        hf_cfg = enc_cfg.to_dict()
        hf_cfg.update(
            architectures=["DebertaV2PairRM"],
            n_tasks=1,
            drop_out=0.05,
            source_prefix_id=ids[0],
            cand1_prefix_id=ids[1],
            cand2_prefix_id=ids[2],
            cand_prefix_id=ids[3],
            sep_token_id=tokenizer.sep_token_id,
        )
        (out / "config.json").write_text(json.dumps(hf_cfg, indent=2, default=str))
        tokenizer.save_pretrained(out)

    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out / "model.safetensors"))
    else:
        torch.save(state, out / "pytorch_model.bin")
    return out
