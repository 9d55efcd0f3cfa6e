"""The traffic recorder: an engine sink that writes each answered request as a JSON line, off the request's path.

Calling the recorder (the engine does, once per answered request) only draws the sample and puts the request in
a bounded queue: it never waits and never raises. A writer thread takes it from there: it builds the line
(:mod:`~blender_core.recording.lines`), drops the requests that match ``drop_matching`` or hold a secret, and
appends the line to the current traffic file (:mod:`~blender_core.recording.files`). What could not be recorded
is counted, never raised: a full queue drops the request (``queue_full``), a failed write (a full disk, a folder
gone) drops it (``failed``) and is logged once per burst, and the answer has long gone out either way.

:meth:`TrafficRecorder.stats` reads the counts at any time (:class:`RecorderStats`); :meth:`TrafficRecorder.close`
(also run at interpreter exit) writes what is queued, then closes the file.

Example:
    >>> recorder = TrafficRecorder("traffic/", sample=0.5)  # doctest: +SKIP
    >>> llm = BlenderLLM(backends=..., sinks=[recorder])  # doctest: +SKIP
    >>> recorder.stats().as_dict()  # doctest: +SKIP
    {'written': 3, 'failed': 0, 'sampled_out': 2, 'redacted': 0, 'queue_full': 0, 'too_few': 0, ...}
"""

from __future__ import annotations

import atexit
import logging
import queue
import random
import threading
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from blender_core.ensemble.sinks import Answered
from blender_core.recording.files import Opener, TrafficFiles
from blender_core.recording.filters import DropMatching
from blender_core.recording.lines import encode_line, traffic_record
from blender_core.recording.settings import RecordSettings

logger = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True)
class RecorderStats:
    """The recorder's counts since it was made (every answered request handed to it lands in exactly one of
    ``written``, ``failed``, ``sampled_out``, ``redacted``, ``queue_full``, ``too_few``, ``closed``, or is
    still ``pending``).

    Attributes:
        written: requests written as a line.
        failed: requests whose line could not be written (a disk error) or built.
        sampled_out: requests left out by ``sample``.
        redacted: requests dropped because a text matched ``drop_matching`` or held a secret.
        queue_full: requests dropped because the writer was ``queue_size`` requests behind.
        too_few: requests with fewer than two ranked answers (nothing to rank or pair).
        closed: requests handed over after :meth:`TrafficRecorder.close`.
        pending: requests queued, not yet written.
        bytes_written: bytes of the lines written.
        files: traffic files opened.
        current_file: the file being written, if any.
    """

    written: int = 0
    failed: int = 0
    sampled_out: int = 0
    redacted: int = 0
    queue_full: int = 0
    too_few: int = 0
    closed: int = 0
    pending: int = 0
    bytes_written: int = 0
    files: int = 0
    current_file: str | None = None

    @property
    def dropped(self) -> int:
        """Requests not recorded on purpose or for lack of room: sampled out, redacted, queue full."""
        return self.sampled_out + self.redacted + self.queue_full

    def as_dict(self) -> dict[str, Any]:
        """The counts by name (``dropped`` included), e.g. for metrics."""
        return {**asdict(self), "dropped": self.dropped}


class TrafficRecorder:
    """Records answered requests as JSON lines in rotated files (an engine sink: pass it in ``sinks``).

    Args:
        path: the folder (else ``settings.path``).
        settings: a :class:`RecordSettings`; or give its fields as keywords (``sample=0.1``, ...).
        secrets: texts never to record (a request holding one is dropped like a ``drop_matching`` match): the
            server passes its own and its upstreams' keys.
        rng: the random source of ``sample`` (default: a fresh ``random.Random()``).
        opener: opens each new traffic file (default: exclusive creation; a test may open ``/dev/full``).

    Raises:
        ValueError: no folder given, or a bad setting (pydantic's error names it).
        TypeError: both ``settings`` and keywords.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        settings: RecordSettings | None = None,
        *,
        secrets: Iterable[str] = (),
        rng: random.Random | None = None,
        opener: Opener | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise TypeError(f"TrafficRecorder() got both settings and {sorted(options)}; pass one of them")
        if settings is None:
            settings = RecordSettings(**options)
        folder = path if path is not None else settings.path
        if folder is None or not str(folder).strip():
            raise ValueError(
                "TrafficRecorder needs a folder to write to: TrafficRecorder('traffic/') or settings.path"
            )
        self.settings = settings
        self.folder = Path(folder)
        self.files = TrafficFiles(
            self.folder,
            rotate_bytes=settings.rotate_bytes,
            rotate_seconds=settings.rotate_seconds,
            opener=opener,
        )
        self.drop = DropMatching(settings.drop_matching, secrets=secrets)
        self._rng = rng or random.Random()
        self._queue: queue.Queue[Any] = queue.Queue(settings.queue_size)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("written", "failed", "sampled_out", "redacted", "queue_full", "too_few", "closed", "bytes_written"), 0
        )
        self._failing = 0  # failed writes in the current burst
        self._full = False  # in a burst of a full queue
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"traffic-recorder:{self.folder}", daemon=True)
        self._thread.start()
        # written out at interpreter exit (a graceful stop); a weak reference, so it never keeps a recorder alive
        self._atexit = _closer(weakref.ref(self))
        atexit.register(self._atexit)

    # ------------------------------------------------------------------ the request's side
    def __call__(self, answered: Answered) -> None:
        """Take one answered request: sample it and queue it for the writer; never waits, never raises."""
        if self._closed:
            self._count("closed")
            return
        if self.settings.sample < 1.0 and self._rng.random() >= self.settings.sample:
            self._count("sampled_out")
            return
        try:
            self._queue.put_nowait(answered)
        except queue.Full:
            self._count("queue_full")
            if not self._full:  # once per burst
                self._full = True
                logger.warning(
                    "traffic recorder %s: %d requests queued, dropping the next ones (counted as queue_full) "
                    "until the writer catches up; raise queue_size if this recurs",
                    self.folder,
                    self.settings.queue_size,
                )
        else:
            self._full = False

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def stats(self) -> RecorderStats:
        """The counts so far (see :class:`RecorderStats`)."""
        with self._lock:
            counts = dict(self._counts)
        current = self.files.current
        return RecorderStats(
            **counts,
            pending=self._queue.qsize(),
            files=self.files.files,
            current_file=str(current) if current is not None else None,
        )

    # ------------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if isinstance(item, threading.Event):  # a flush marker: everything before it is handled
                    item.set()
                    continue
                self._write(item)
            finally:
                self._queue.task_done()

    def _write(self, answered: Answered) -> None:
        try:
            record = traffic_record(answered)
            if record is None:
                self._count("too_few")
                return
            if self.drop.matches(record):
                self._count("redacted")
                return
            line = encode_line(record)
            self.files.write(line)
        except Exception as exc:  # a disk error, or a record that could not be built: counted, never raised
            self._count("failed")
            self._failing += 1
            if self._failing == 1:
                logger.error(
                    "traffic recorder %s: could not record a request: %s: %s; the answers still go out, and "
                    "records are dropped (counted as failed) until writing works again",
                    self.folder,
                    type(exc).__name__,
                    exc,
                )
            return
        with self._lock:
            self._counts["written"] += 1
            self._counts["bytes_written"] += len(line)
        if self._failing:
            logger.warning(
                "traffic recorder %s: writing works again after %d failed records", self.folder, self._failing
            )
            self._failing = 0

    # ------------------------------------------------------------------ flushing and closing
    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every request queued so far is written (or dropped); False when ``timeout`` passed first."""
        if self._closed or not self._thread.is_alive():
            return self._queue.qsize() == 0
        marker = threading.Event()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds), stop the writer, close the file. Later
        requests are counted as ``closed``. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            logger.warning("traffic recorder %s: closing with %d requests unwritten", self.folder, self._queue.qsize())
        else:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.files.close()

    def __enter__(self) -> TrafficRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _closer(ref: weakref.ReferenceType[TrafficRecorder]) -> Any:
    """Close the recorder at interpreter exit, if it still exists."""

    def close() -> None:
        recorder = ref()
        if recorder is not None:
            recorder.close()

    return close
