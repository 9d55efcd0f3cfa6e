"""blender-llm core: the PairRanker, the fusers and the ensemble logic shared by the adapters.

Example:
    >>> from blender_core import PairRanker
    >>> ranker = PairRanker.from_pretrained("llm-blender/PairRM")  # doctest: +SKIP
    >>> ranker.rank(["2+2?"], [["4", "5"]])[0].best  # doctest: +SKIP
    0

The layers, and the import rule each package's docstring states (checked by tests/core/test_architecture.py):
the application (``blender_core.app``: CLI, demo) -> the adapters (``langchain_blender``,
``llamaindex_blender``) -> the engine (``ensemble``) -> ``ranking`` / ``fusion`` -> ``base``; beside them
``data``, ``training``, ``evaluation``, ``batch``, ``compat`` and ``testing`` (fixtures only).

May import: blender_core.base, blender_core.ranking, blender_core.ranking.pairrm, blender_core.fusion,
blender_core.ensemble.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names below are, for type checkers; at run time each loads on first use
    from blender_core.base.results import RankedCandidate, Ranking
    from blender_core.ensemble import (
        BackendAnswer,
        BlendPipeline,
        BlendResult,
        Ensemble,
        EnsembleConfig,
        EnsembleError,
        EnsembleOutcome,
        FusionError,
    )
    from blender_core.fusion import BaseFuser, GenFuser, LLMFuser, load_fuser
    from blender_core.ranking import (
        DEFAULT_RANKER,
        BaseRanker,
        JudgeRanker,
        PairRanker,
        Ranker,
        RewardModelRanker,
        load_ranker,
    )
    from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
    from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel

# Each public name and the module it comes from. Loaded on first use (PEP 562), so that importing a part
# of the package (the command line above all: `blender-llm --help`) does not import torch and transformers.
_EXPORTS = {
    **dict.fromkeys(("RankedCandidate", "Ranking"), "blender_core.base.results"),
    **dict.fromkeys(
        (
            "BackendAnswer", "BlendPipeline", "BlendResult", "Ensemble", "EnsembleConfig", "EnsembleError",
            "EnsembleOutcome", "FusionError",
        ),
        "blender_core.ensemble",
    ),
    **dict.fromkeys(("BaseFuser", "GenFuser", "LLMFuser", "load_fuser"), "blender_core.fusion"),
    **dict.fromkeys(
        ("DEFAULT_RANKER", "BaseRanker", "JudgeRanker", "PairRanker", "Ranker", "RewardModelRanker", "load_ranker"),
        "blender_core.ranking",
    ),
    "PairRMConfig": "blender_core.ranking.pairrm.configuration_pairrm",
    "PairRMModel": "blender_core.ranking.pairrm.modeling_pairrm",
}

try:
    __version__ = version("blender-llm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then kept as an attribute)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "DEFAULT_RANKER",
    "BackendAnswer",
    "BaseFuser",
    "BaseRanker",
    "BlendPipeline",
    "BlendResult",
    "Ensemble",
    "EnsembleConfig",
    "EnsembleError",
    "EnsembleOutcome",
    "FusionError",
    "GenFuser",
    "JudgeRanker",
    "LLMFuser",
    "PairRMConfig",
    "PairRMModel",
    "PairRanker",
    "RankedCandidate",
    "Ranker",
    "Ranking",
    "RewardModelRanker",
    "__version__",
    "load_fuser",
    "load_ranker",
]
