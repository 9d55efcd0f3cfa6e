"""Write a compact export of a fine-tuned PairRanker: only what differs from the encoder it was built on.

The format (``ranker.json`` and ``ranker_delta.safetensors``) and its loading are
:mod:`blender_core.ranking.pairrm.compact`; writing one is training's job, here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from blender_core.ranking.pairrm.compact import DELTA_FILE, FORMAT, META_FILE
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel

logger = logging.getLogger(__name__)



def export_compact(
    model: PairRMModel,
    base_state: dict[str, torch.Tensor],
    folder: str | Path,
    *,
    encoder: str,
    rank: int,
    dtype: torch.dtype = torch.float16,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write what ``model`` changed relative to ``base`` (built on ``encoder``); returns size statistics.

    Args:
        model: the trained ranker (adapters merged).
        base_state: the state dict of ``build_pairrm_from_encoder(encoder, …)`` with the same limits,
            i.e. the starting point of training.
        encoder: the name :func:`~blender_core.ranking.pairrm.build.build_pairrm_from_encoder` rebuilds it from.
        rank: rank kept for changed 2-D weights (the LoRA rank: exact; lower: an approximation).
        dtype: storage dtype of the tensors (fp16 halves the size; the error is far below the model's).
    """
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    emb_name = next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight)
    worst = 0.0
    for name, param in model.state_dict().items():
        ref = base_state[name]
        if name.startswith("head_layer."):
            out[name] = param.detach().to(dtype).contiguous()
            continue
        delta = (param.detach().float() - ref.float())
        if not bool(delta.any()):
            continue
        if name == emb_name:
            rows = torch.nonzero(delta.abs().sum(dim=1) > 0).flatten()
            out[f"{name}.rows_index"] = rows.to(torch.int64)
            out[f"{name}.rows"] = param.detach()[rows].to(dtype).contiguous()
        elif param.ndim == 2:
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            k = min(rank, s.shape[0])
            up, down = u[:, :k] * s[:k], vh[:k]
            err = float((delta - up @ down).norm() / delta.norm().clamp_min(1e-12))
            worst = max(worst, err)
            out[f"{name}.lora_up"] = up.to(dtype).contiguous()
            out[f"{name}.lora_down"] = down.to(dtype).contiguous()
        else:
            out[name] = param.detach().to(dtype).contiguous()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(out, str(folder / DELTA_FILE))
    cfg = model.config
    meta = {
        "format": FORMAT,
        "version": 1,
        "encoder": encoder,
        "source_maxlength": cfg.source_maxlength,
        "candidate_maxlength": cfg.candidate_maxlength,
        "n_tasks": cfg.n_tasks,
        "drop_out": cfg.drop_out,
        "rank": rank,
        **(extra or {}),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if worst > 1e-3:
        logger.warning("the rank-%d export approximates a changed weight with relative error %.3g", rank, worst)
    size = (folder / DELTA_FILE).stat().st_size
    return {"bytes": size, "tensors": len(out), "max_relative_error": worst}
