"""The application layer: the ``blender-llm`` command line (``commands``), the offline demo, the
OpenAI-compatible server (the package ``serve``, which states no rule of its own: this one holds) and the
local chat backends demo and server share (``local_chat``). It sits above the framework adapters (demo and
server run ``langchain_blender.BlenderLLM``); nothing in the library imports it.

May import: blender_core.base, blender_core.data, blender_core.local_models, blender_core.ranking,
blender_core.ranking.pairrm, blender_core.ranking.judge, blender_core.fusion, blender_core.ensemble,
blender_core.training, blender_core.evaluation, blender_core.evaluation.calibrate, blender_core.batch,
blender_core.recording, langchain_blender, llamaindex_blender.
"""
