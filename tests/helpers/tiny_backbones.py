"""Tiny non-DeBERTa PairRMs (BERT, RoBERTa, ELECTRA encoders) over a BERT WordPiece tokenizer, built offline."""

from __future__ import annotations

from typing import Any

from transformers import BertConfig, BertTokenizer, ElectraConfig, PreTrainedConfig, RobertaConfig

from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.pairrm.encoding import add_pairrm_tokens
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel

WORDS = "the a an answer question good bad yes no hello world write poem python code sea is it of".split()
BACKBONES: dict[str, type[PreTrainedConfig]] = {
    "bert": BertConfig,
    "roberta": RobertaConfig,
    "electra": ElectraConfig,
}


def tiny_bert_tokenizer() -> BertTokenizer:
    """An uncased WordPiece tokenizer: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, then WORDS and letters."""
    pieces = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *"abcdefghijklmnopqrstuvwxyz0123456789.,?!<>|",
    ]
    pieces += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    return BertTokenizer(vocab={p: i for i, p in enumerate(dict.fromkeys(pieces))})


def tiny_pairrm(backbone: str, tokenizer: BertTokenizer, *, seed: int = 0, **ranker: Any) -> PairRMModel:
    """A random PairRM on a 1-layer ``backbone`` encoder; ``tokenizer`` gets the four prefix tokens."""
    import torch

    ids = add_pairrm_tokens(tokenizer)
    enc_kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 128,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if backbone == "electra":
        enc_kwargs["embedding_size"] = 8  # ELECTRA projects smaller embeddings up to the hidden size
    enc = BACKBONES[backbone](**enc_kwargs)
    cfg = PairRMConfig(
        encoder_config=enc.to_dict(),
        source_maxlength=ranker.pop("source_maxlength", 32),
        candidate_maxlength=ranker.pop("candidate_maxlength", 32),
        source_prefix_id=ids[0],
        cand1_prefix_id=ids[1],
        cand2_prefix_id=ids[2],
        cand_prefix_id=ids[3],
        **ranker,
    )
    torch.manual_seed(seed)
    model = PairRMModel(cfg).eval()
    with torch.no_grad():  # wider than the default init, so that candidates get clearly different scores
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.3)
    return model
