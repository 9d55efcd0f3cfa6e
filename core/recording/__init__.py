"""Recording served traffic as training data: every answered request's prompt, its candidates ranked and the
choice, as JSON lines that ``blender-llm rank`` and ``blender-llm label-pairs`` read as they are.

- :mod:`~blender_core.recording.settings`: :class:`RecordSettings`, every setting declared once (the server's
  ``[record]`` section is it).
- :mod:`~blender_core.recording.lines`: one answered request as one record line (the format).
- :mod:`~blender_core.recording.filters`: which requests are dropped (patterns, secrets).
- :mod:`~blender_core.recording.files`: the rotated files, written a whole line at a time, and the repair of a
  line a crash cut short.
- :mod:`~blender_core.recording.recorder`: :class:`TrafficRecorder`, the engine sink: sampling, a bounded queue,
  a writer thread, and its counts (:class:`RecorderStats`).

Example:
    >>> from blender_core.ensemble import Ensemble
    >>> from blender_core.recording import TrafficRecorder
    >>> recorder = TrafficRecorder("traffic/", sample=0.1)  # doctest: +SKIP
    >>> engine = Ensemble("builtin:pairrm-minilm-l6", sinks=[recorder])  # doctest: +SKIP
    >>> recorder.stats().written  # doctest: +SKIP
    0

May import: blender_core.base, blender_core.ensemble.
"""

from __future__ import annotations

from blender_core.recording.lines import encode_line, traffic_record
from blender_core.recording.recorder import RecorderStats, TrafficRecorder
from blender_core.recording.settings import RecordSettings

__all__ = ["RecordSettings", "RecorderStats", "TrafficRecorder", "encode_line", "traffic_record"]
