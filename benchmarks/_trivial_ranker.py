"""The benchmarks' trivial ranker (the tests' ``LengthRanker``: the longer answer wins, next to no cost,
nothing recorded), and how a benchmark's server process serves it under the spec ``"trivial"``: what
isolates the engine's or the server's own cost from the ranker's (``engine_overhead.py --ranker trivial``,
``serve_load.py --ranker trivial``, ``soak.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fakes

from blender_core.ranking import registry
from tests.helpers.core_fakes import LengthRanker

SPEC = "trivial"


def trivial_ranker() -> LengthRanker:
    """The longer answer wins; calls are not recorded, so a long run's memory stays the engine's."""
    return LengthRanker(record=False)


def serve_as_spec() -> None:
    """Make ``load_ranker("trivial")`` answer :func:`trivial_ranker` in this process (a server's config
    then names ``ranker = "trivial"``). Benchmarks only: it fills the registry's cache, as a load would."""
    with registry._guard:
        registry._cache[(SPEC,)] = trivial_ranker()
