"""A damaged config is refused before anything is allocated: each absurd value is a ``ValueError`` naming the
field, the config's value and what the weights say, in well under a second and without a big allocation, from
every checkpoint layout (reference, PairRM-hf, native, ``.bin`` weights, compact exports)."""

from __future__ import annotations

import json
import re
import resource
import shutil
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import BertConfig

from blender_core.ranking.pairrm.compact import DELTA_FILE, FORMAT, META_FILE
from blender_core.ranking.pairrm.config_checks import check_encoder_config
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.testing.pairrm import make_tiny_pairrm
from tests.helpers.training import make_tiny_encoder

EMBEDDINGS = "pretrained_model.embeddings.word_embeddings.weight"


def _refused_fast(load: Callable[[], object], match: str) -> None:
    """``load()`` raises a ValueError matching ``match`` within a second, with no big allocation on the way."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match):
            load()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 64 * 2**20  # Python objects: 1e7 layer modules would take gigabytes
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 256 * 1024  # no big tensor


def _config_path(folder: Path, layout: str) -> Path:
    """The JSON file that holds the encoder's sizes in each layout."""
    return folder.parent / "encoder" / "config.json" if layout == "reference" else folder / "config.json"


def _edit_encoder(folder: Path, layout: str, **changes: Any) -> None:
    path = _config_path(folder, layout)
    raw = json.loads(path.read_text())
    (raw["encoder_config"] if layout == "native" else raw).update(changes)
    path.write_text(json.dumps(raw))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    out = {layout: make_tiny_pairrm(root / layout, layout) for layout in ("reference", "hf", "native")}  # type: ignore[arg-type]
    out["bin"] = make_tiny_pairrm(root / "bin", "reference", weights="bin")
    return out


@pytest.fixture
def copy_of(checkpoints: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """A writable copy of a checkpoint (the reference layout with its encoder folder, renamed in its config)."""

    def copy(layout: str) -> Path:
        src = checkpoints[layout]
        if layout in ("reference", "bin"):
            shutil.copytree(src.parent, tmp_path / layout)
            folder = tmp_path / layout / "ranker"
            raw = json.loads((folder / "config.json").read_text())
            raw["model_name"] = str(tmp_path / layout / "encoder")
            (folder / "config.json").write_text(json.dumps(raw))
            return folder
        return Path(shutil.copytree(src, tmp_path / layout))

    return copy


def _weights_shape(folder: Path, name: str) -> tuple[int, ...]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return tuple(f.get_slice(name).get_shape())


@pytest.mark.parametrize("layout", ["reference", "hf", "native", "bin"])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"hidden_size": 10**9},
            r"hidden_size=1000000000 in the config, but the weights say 32 \(head_layer\.1\.weight has shape \(32, 64\)\)",
        ),
        (
            {"num_hidden_layers": 10**7},
            r"num_hidden_layers=10000000 in the config, but the weights say 2 \(the keys hold encoder layers 0-1\)",
        ),
        ({"num_attention_heads": 0}, r"num_attention_heads must be a positive int, got 0; the config is damaged"),
        # transformers' own dataclass refuses it first (this package's check says "must be an int")
        ({"hidden_size": 1e9}, r"the config is damaged: .*'hidden_size'.* int, got float \(value: 1000000000\.0\)"),
        (
            {"hidden_size": 64},  # plausible, divisible by the heads, and still not these weights'
            r"hidden_size=64 in the config, but the weights say 32 .*: set hidden_size to 32, or use the config that came with the weights",
        ),
        (
            {"intermediate_size": 10**8},
            r"intermediate_size=100000000 in the config, but the weights say 64 \(pretrained_model\.encoder\.layer\.0\.intermediate\.dense\.weight has shape \(64, 32\)\)",
        ),
        (
            {"position_buckets": 10**9},
            r"position_buckets=1000000000 in the config, but the weights say 256 \(pretrained_model\.encoder\.rel_embeddings\.weight has shape \(512, 32\), twice the span\)",
        ),
        (  # no weight records it (relative positions), but DeBERTa allocates position ids of that length
            {"max_position_embeddings": 10**9},
            r"max_position_embeddings=1000000000 is beyond any real encoder's \(at most 1,048,576 here\)",
        ),
        ({"num_attention_heads": 3}, r"hidden_size=32 is not a multiple of num_attention_heads=3"),
    ],
)  # fmt: skip
def test_absurd_encoder_configs_are_refused_before_allocating(
    copy_of: Callable[[str], Path], layout: str, changes: dict[str, Any], message: str
) -> None:
    folder = copy_of(layout)
    PairRanker.from_pretrained(folder, device="cpu")  # the copy loads as it is
    _edit_encoder(folder, "reference" if layout == "bin" else layout, **changes)
    where = str(_config_path(folder, layout)) if layout in ("hf", "native") else f"{folder} (the config of encoder"
    _refused_fast(lambda: PairRanker.from_pretrained(folder, device="cpu"), f"^{re.escape(where)}.*{message}")


def test_a_legacy_bin_that_cannot_be_mapped_is_checked_too(copy_of: Callable[[str], Path]) -> None:
    folder = copy_of("bin")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError, match="mmap"):  # what the shapes are read around
        torch.load(folder / "pytorch_model.bin", weights_only=True, mmap=True)
    PairRanker.from_pretrained(folder, device="cpu")
    _edit_encoder(folder, "reference", hidden_size=10**9)
    _refused_fast(
        lambda: PairRanker.from_pretrained(folder, device="cpu"),
        r"hidden_size=1000000000 in the config, but the weights say 32",
    )


@pytest.mark.parametrize("layout", ["hf", "native"])
def test_a_vocabulary_that_is_not_the_weights_is_named(copy_of: Callable[[str], Path], layout: str) -> None:
    folder = copy_of(layout)
    rows, width = _weights_shape(folder, EMBEDDINGS)
    _edit_encoder(folder, layout, vocab_size=50)
    _refused_fast(
        lambda: PairRanker.from_pretrained(folder, device="cpu"),
        rf"vocab_size=50 in the config, but the weights say {rows} \({EMBEDDINGS} has shape \({rows}, {width}\)\)",
    )


def test_the_reference_vocabulary_comes_from_the_tokenizer(copy_of: Callable[[str], Path]) -> None:
    folder = copy_of("reference")
    rows, _ = _weights_shape(folder, EMBEDDINGS)
    # two more tokens in the encoder's tokenizer: two more rows than the ranker's weights have
    tok_file = folder.parent / "encoder" / "tokenizer_config.json"
    tok = json.loads(tok_file.read_text())
    tok["additional_special_tokens"] = [*tok.get("additional_special_tokens", []), "<x1>", "<x2>"]
    tok_file.write_text(json.dumps(tok))
    _refused_fast(
        lambda: PairRanker.from_pretrained(folder, device="cpu"),
        rf"vocab_size counted from its tokenizer\): vocab_size={rows + 2} in the config, but the weights say {rows}",
    )


def test_a_ranker_head_of_another_size_is_named(copy_of: Callable[[str], Path]) -> None:
    folder = copy_of("native")
    raw = json.loads((folder / "config.json").read_text())
    raw["n_tasks"] = 10**7
    (folder / "config.json").write_text(json.dumps(raw))
    _refused_fast(
        lambda: PairRanker.from_pretrained(folder, device="cpu"),
        r"config\.json: n_tasks must be an int from 1 to 1024 \(1 in every published checkpoint\), got 10000000",
    )


# ---------------------------------------------------------------------------- compact exports


@pytest.fixture
def compact(tmp_path: Path) -> Path:
    """A compact export on a tiny local BERT encoder: ranker.json + a delta holding only the head."""
    encoder = make_tiny_encoder(tmp_path / "encoder")
    folder = tmp_path / "compact"
    folder.mkdir()
    meta = {"format": FORMAT, "version": 1, "encoder": str(encoder), "source_maxlength": 16,
            "candidate_maxlength": 24, "n_tasks": 1, "drop_out": 0.05}  # fmt: skip
    (folder / META_FILE).write_text(json.dumps(meta))
    torch.manual_seed(0)
    head = {"head_layer.1.weight": torch.randn(32, 64), "head_layer.1.bias": torch.randn(32),
            "head_layer.4.weight": torch.randn(1, 32), "head_layer.4.bias": torch.randn(1)}  # fmt: skip
    save_file(head, str(folder / DELTA_FILE))
    return folder


def test_a_compact_export_checks_its_encoder_against_the_encoders_weights(compact: Path) -> None:
    PairRanker.from_pretrained(compact, device="cpu")  # the export loads as it is
    enc_config = Path(json.loads((compact / META_FILE).read_text())["encoder"]) / "config.json"
    raw = json.loads(enc_config.read_text())
    for field, value, message in [
        ("hidden_size", 10**9, r"hidden_size=1000000000 in the config, but the weights say 32 \(encoder\.layer\.0\.attention\.output\.dense\.weight has shape \(32, 32\)\)"),
        ("num_hidden_layers", 10**7, r"num_hidden_layers=10000000 in the config, but the weights say 2"),
        ("num_attention_heads", 0, r"num_attention_heads must be a positive int, got 0"),
        ("vocab_size", 7, r"vocab_size=7 in the config, but the weights say \d+ \(embeddings\.word_embeddings\.weight has shape"),
    ]:  # fmt: skip
        enc_config.write_text(json.dumps({**raw, field: value}))
        _refused_fast(
            lambda: PairRanker.from_pretrained(compact, device="cpu"),
            rf"^the config of encoder '{re.escape(str(enc_config.parent))}': {message}",
        )


def test_a_compact_export_checks_n_tasks_against_its_head(compact: Path) -> None:
    meta = json.loads((compact / META_FILE).read_text())
    for n_tasks, message in [
        (10**7, r"n_tasks must be an int from 1 to 1024 \(1 in every published checkpoint\), got 10000000"),
        (2, r"n_tasks=2 in the config, but the weights say 1 \(head_layer\.4\.weight has shape \(1, 32\)\)"),
    ]:
        (compact / META_FILE).write_text(json.dumps({**meta, "n_tasks": n_tasks}))
        _refused_fast(lambda: PairRanker.from_pretrained(compact, device="cpu"), rf"^{re.escape(str(compact / META_FILE))}: {message}")


# ---------------------------------------------------------------------------- the checks on their own


def test_checks_read_any_base_model_prefix_and_embedding_width() -> None:
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    shapes = {
        "bert.embeddings.word_embeddings.weight": (100, 32),
        "bert.embeddings.position_embeddings.weight": (512, 32),
        "bert.embeddings.token_type_embeddings.weight": (2, 32),
        "bert.encoder.layer.0.attention.output.dense.weight": (32, 32),
        "bert.encoder.layer.0.intermediate.dense.weight": (64, 32),
        "bert.encoder.layer.1.intermediate.dense.weight": (64, 32),
    }
    check_encoder_config(cfg, shapes, "demo")  # all agree
    check_encoder_config(cfg, None, "demo")  # no weights: sizes only
    with pytest.raises(ValueError, match=r"^demo: max_position_embeddings=512 in the config, but the weights say 128"):
        check_encoder_config(cfg, {**shapes, "bert.embeddings.position_embeddings.weight": (128, 32)}, "demo")
    with pytest.raises(ValueError, match=r"^demo: type_vocab_size=2 in the config, but the weights say 1 "):
        check_encoder_config(cfg, {**shapes, "bert.embeddings.token_type_embeddings.weight": (1, 32)}, "demo")
    with pytest.raises(ValueError, match=r"^demo: num_hidden_layers=2 in the config, but the weights say 3 "):
        check_encoder_config(cfg, {**shapes, "bert.encoder.layer.2.output.dense.weight": (32, 64)}, "demo")
    # a factorised embedding (ALBERT / ELECTRA style) is checked against embedding_size, not hidden_size
    cfg.embedding_size = 16
    with pytest.raises(ValueError, match=r"^demo: embedding_size=16 in the config, but the weights say 32 "):
        check_encoder_config(cfg, shapes, "demo")
    with pytest.raises(ValueError, match=r"^demo: hidden_size must be an int, got 32\.0; the config is damaged"):
        check_encoder_config({"hidden_size": 32.0}, None, "demo")
    with pytest.raises(ValueError, match=r"^demo: vocab_size must be a positive int, got -1"):
        check_encoder_config({"vocab_size": -1, "hidden_size": 8}, None, "demo")
    with pytest.raises(ValueError, match=r"^demo: num_hidden_layers=5000 is beyond any real encoder's \(at most 1,024 here\)"):
        check_encoder_config({"num_hidden_layers": 5000}, None, "demo")  # no weights to compare with: the bound
