"""The fusers are public beside the rankers: ``from blender_core import load_fuser, GenFuser, ...``."""

from __future__ import annotations

import blender_core
import blender_core.fusion
from blender_core.fusion.auto import load_fuser
from blender_core.fusion.base import BaseFuser
from blender_core.fusion.causal import LLMFuser
from blender_core.fusion.seq2seq import GenFuser

PUBLIC = {"BaseFuser": BaseFuser, "GenFuser": GenFuser, "LLMFuser": LLMFuser, "load_fuser": load_fuser}


def test_fuser_names_import_from_blender_core_and_its_fusion_package() -> None:
    for package in (blender_core, blender_core.fusion):
        for name, obj in PUBLIC.items():
            assert name in package.__all__, f"{package.__name__}.__all__ lacks {name}"
            assert getattr(package, name) is obj
    assert "load_ranker" in blender_core.__all__


def test_every_listed_name_exists() -> None:
    for package in (blender_core, blender_core.fusion):
        missing = [name for name in package.__all__ if not hasattr(package, name)]
        assert missing == [], f"{package.__name__}.__all__ lists names it does not define: {missing}"


def test_both_hf_fusers_share_the_generation_base() -> None:
    from blender_core.fusion import HFGenerationFuser

    assert issubclass(GenFuser, HFGenerationFuser)
    assert issubclass(LLMFuser, HFGenerationFuser)
    assert issubclass(HFGenerationFuser, BaseFuser)
