"""Recording the served traffic (``[record]``): the server's :class:`~blender_core.recording.TrafficRecorder`.

Off unless ``[record] path`` names a folder. The recorder is the served ``BlenderLLM``'s sink: every answered
chat completion, whole or streamed, is handed to it after its answer is decided; it writes from a thread of its
own, so the event loop never waits on the disk, and a full disk is logged and counted, never a failed request.
Besides ``drop_matching``, a request holding one of the server's or its upstreams' keys (however written) is
never recorded. The recorder is closed (what is queued written, the file flushed) when the server stops
gracefully; its counts (:meth:`~blender_core.recording.TrafficRecorder.stats`) are the app state's
``served.recorder``, and ``/metrics`` shows them (:class:`RecorderCollector`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from blender_core.app.serve.config import ServeConfig
from blender_core.app.serve.redaction import Redactor
from blender_core.recording import TrafficRecorder


def traffic_recorder(config: ServeConfig, redactor: Redactor) -> TrafficRecorder | None:
    """The recorder ``[record]`` asks for (None when it sets no ``path``)."""
    if config.record.path is None:
        return None
    return TrafficRecorder(settings=config.record, secrets=redactor.secrets)


#: where a request handed to the recorder ends (each lands in exactly one; see ``RecorderStats``)
RESULTS = ("written", "failed", "sampled_out", "redacted", "queue_full", "too_few", "closed")


class RecorderCollector:
    """The recorder's counts as Prometheus series, read from :meth:`TrafficRecorder.stats` at each scrape
    (nothing is counted twice, and the recorder's thread never touches the registry):
    ``blender_record_requests_total{result}`` (``failed``: a disk error, a full disk among them),
    ``blender_record_pending``, ``blender_record_bytes_total`` and ``blender_sink_errors_total`` (exceptions the
    engine caught from its sinks; the requests were answered)."""

    def __init__(self, recorder: TrafficRecorder, sink_errors: Callable[[], int]) -> None:
        self.recorder = recorder
        self.sink_errors = sink_errors

    def collect(self) -> Iterator[Metric]:
        stats = self.recorder.stats()
        requests = CounterMetricFamily(
            "blender_record_requests",
            "Answered requests handed to the traffic recorder, by where they ended: written, failed (a disk "
            "error, e.g. a full disk), sampled_out, redacted, queue_full, too_few, closed.",
            labels=["result"],
        )
        for result in RESULTS:
            requests.add_metric([result], getattr(stats, result))
        yield requests
        yield GaugeMetricFamily("blender_record_pending", "Requests queued for the writer.", value=stats.pending)
        yield CounterMetricFamily("blender_record_bytes", "Bytes of traffic lines written.", value=stats.bytes_written)
        yield CounterMetricFamily(
            "blender_sink_errors", "Exceptions the engine caught from its sinks (the requests were answered).",
            value=self.sink_errors(),
        )
