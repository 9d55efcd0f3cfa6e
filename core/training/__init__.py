"""Training of rankers (``training.ranker``) and fusers (``training.fuser``) on one shared base: the frozen
config fields both use (``training.config``), AdamW and its progress-driven schedule (``training.optim``),
the run's counters, clock and log (``training.run``), and the accelerate set-up and training loop
(``training.base``). Inference never imports this package.

May import: blender_core.base, blender_core.data, blender_core.ranking, blender_core.ranking.pairrm, blender_core.fusion,
blender_core.local_models.
"""
