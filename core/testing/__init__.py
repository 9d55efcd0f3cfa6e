"""Test fixtures only: tiny random PairRM checkpoints, seq2seq and causal fusers built offline. Tests,
benchmarks and scripts use them; production code never imports this package.

May import: blender_core.base, blender_core.ranking, blender_core.ranking.pairrm, blender_core.fusion.
"""
