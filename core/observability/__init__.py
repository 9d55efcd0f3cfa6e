"""Observability: OpenTelemetry, found lazily once when it is installed (the ``otel`` extra); without it
nothing is imported and nothing costs. What the engine records in its spans is the engine's own
(:mod:`blender_core.ensemble.spans`); this package only knows OpenTelemetry.

May import: nothing from blender_core.
"""
