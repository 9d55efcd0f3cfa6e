"""The ensemble engine: ask several backends concurrently (threads or asyncio) with per-backend timeouts,
keep those that answered (``min_successes``), rank the answers, fuse the top-K (streamed, with a time limit
on the first token and a fallback to the top answer), and account for every candidate, the timings and the
summed usage. ``BlendPipeline`` is the batch form over ready candidate lists. The framework adapters only
translate their messages to and from this engine.

May import: blender_core.base, blender_core.ranking, blender_core.fusion.
"""
