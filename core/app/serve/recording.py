"""Recording the served traffic (``[record]``): the server's :class:`~blender_core.recording.TrafficRecorder`.

Off unless ``[record] path`` names a folder. The recorder is the served ``BlenderLLM``'s sink: every answered
chat completion, whole or streamed, is handed to it after its answer is decided; it writes from a thread of its
own, so the event loop never waits on the disk, and a full disk is logged and counted, never a failed request.
Besides ``drop_matching``, a request holding one of the server's or its upstreams' keys (however written) is
never recorded. The recorder is closed (what is queued written, the file flushed) when the server stops
gracefully; its counts (:meth:`~blender_core.recording.TrafficRecorder.stats`) are the app state's
``served.recorder``.
"""

from __future__ import annotations

from blender_core.app.serve.config import ServeConfig
from blender_core.app.serve.redaction import Redactor
from blender_core.recording import TrafficRecorder


def traffic_recorder(config: ServeConfig, redactor: Redactor) -> TrafficRecorder | None:
    """The recorder ``[record]`` asks for (None when it sets no ``path``)."""
    if config.record.path is None:
        return None
    return TrafficRecorder(settings=config.record, secrets=redactor.secrets)
