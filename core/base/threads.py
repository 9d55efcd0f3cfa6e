"""Blocking calls (backends, judges) in threads that can never hold the process or their caller hostage.

A thread cannot be killed, so a call past its timeout is *abandoned*: the caller stops waiting for it,
and its thread, a daemon, finishes (or hangs) on its own without blocking the interpreter's exit. Each
name (a backend, a judge) is bounded: while it holds ``max_stuck`` abandoned calls that are still running
it is skipped at once with a clear error instead of piling up another thread; and once one of its calls is
stuck, its stuck and in-flight calls together stay within ``max_stuck`` (a call that would pass it is
skipped too), so the calls of one ranking or request that time out one after another never add up past
the bound. Only calls already in flight when a name first hangs (at most one per concurrent caller) can
add to it. When a stuck call ends (late), its slot frees and the name is called again.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any


class Job:
    """One call running in a daemon thread: its outcome, its clock, whether it was abandoned."""

    def __init__(self, name: str, fn: Callable[[], Any], on_end: Callable[[bool], None]) -> None:
        self.name = name
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        self.ended: float | None = None
        self._on_end = on_end
        self._abandoned = False
        self._lock = threading.Lock()
        self._fn = fn
        self._callbacks: list[Callable[[Job], None]] = []

    def add_done_callback(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` from the job's thread when it ends (at once if it has ended)."""
        with self._lock:
            if not self.done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def _run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:  # handed to whoever waits for the job
            self.error = exc
        finally:
            self.ended = time.perf_counter()
            with self._lock:
                self.done.set()
                late, callbacks = self._abandoned, list(self._callbacks)
            for callback in callbacks:
                with contextlib.suppress(Exception):  # e.g. a waiter's event loop closed meanwhile
                    callback(self)
            self._on_end(late)

    def abandon(self) -> bool:
        """Stop waiting for the job; True when it is still running (it is now a stuck call)."""
        with self._lock:
            if self.done.is_set():
                return False
            self._abandoned = True
            return True


class BackendThreads:
    """Runs blocking backend calls in daemon threads and bounds each backend's stuck calls.

    Args:
        max_stuck: abandoned-but-running calls a backend may hold before it is skipped at once; once one
            is stuck, its stuck and in-flight calls together.
        thread_prefix: the threads' name prefix (what they are, in a thread dump).
    """

    def __init__(self, max_stuck: int, thread_prefix: str = "blender-backend") -> None:
        self.max_stuck = max_stuck
        self.thread_prefix = thread_prefix
        self._stuck: dict[str, int] = {}
        self._running: dict[str, int] = {}
        # calls no one waits for any more but still within their timeout (cancelled by a quorum or the
        # caller): they count as running until they end, and as stuck once their deadline passes
        self._detached: dict[Job, float] = {}
        self._lock = threading.Lock()

    def stuck(self, name: str) -> int:
        """How many of ``name``'s calls are still running past their timeout."""
        with self._lock:
            self._sweep()
            return self._stuck.get(name, 0)

    def _sweep(self) -> None:
        """Detached calls past their deadline become stuck (under the lock)."""
        now = time.perf_counter()
        for job, deadline in list(self._detached.items()):
            if job.done.is_set():
                del self._detached[job]
            elif now >= deadline:
                del self._detached[job]
                if job.abandon():
                    _add(self._running, job.name, -1)
                    _add(self._stuck, job.name, 1)

    def _refusal(self, name: str) -> str | None:
        self._sweep()
        stuck, running = self._stuck.get(name, 0), self._running.get(name, 0)
        if stuck >= self.max_stuck:
            return (
                f"BackendStuck: skipped without calling it: {stuck} earlier call(s) are still running past "
                f"their timeout (at most {self.max_stuck}, max_stuck_calls); it is called again once one of "
                "them ends"
            )
        if stuck and stuck + running >= self.max_stuck:
            return (
                f"BackendStuck: skipped without calling it: {stuck} earlier call(s) are still running past "
                f"their timeout and {running} more are in flight (at most {self.max_stuck} at once while one "
                "is stuck, max_stuck_calls); it is called again once one of them ends"
            )
        return None

    def refuses(self, name: str) -> str | None:
        """Why ``name`` would be skipped now, or None when it may be called."""
        with self._lock:
            return self._refusal(name)

    def try_start(self, name: str, fn: Callable[[], Any]) -> Job | str:
        """Run ``fn`` in a new daemon thread within a copy of the caller's context, or say why ``name`` is
        skipped (checked and counted at once, so that concurrent callers cannot pass the bound together)."""
        with self._lock:
            refusal = self._refusal(name)
            if refusal is not None:
                return refusal
            _add(self._running, name, 1)
        return self._spawn(name, fn)

    def start(self, name: str, fn: Callable[[], Any]) -> Job:
        """Run ``fn`` in a new daemon thread, whatever ``name`` holds (see :meth:`try_start`)."""
        with self._lock:
            _add(self._running, name, 1)
        return self._spawn(name, fn)

    def _spawn(self, name: str, fn: Callable[[], Any]) -> Job:
        job = Job(name, fn, lambda late: self._ended(name, late))
        ctx = contextvars.copy_context()
        thread = threading.Thread(
            target=ctx.run, args=(job._run,), name=f"{self.thread_prefix}:{name}", daemon=True
        )
        thread.start()
        return job

    def abandon(self, job: Job) -> None:
        """Stop waiting for ``job``; if it is still running it counts as one of its backend's stuck calls."""
        with self._lock:  # counted before the job can end and release it
            if job.abandon():
                _add(self._running, job.name, -1)
                _add(self._stuck, job.name, 1)

    def detach(self, job: Job, deadline: float | None) -> None:
        """Stop waiting for ``job`` before its timeout (a quorum was reached, the caller went away): it
        counts as running until it ends, and as stuck if it is still running at ``deadline`` (a
        ``time.perf_counter()`` value; None: never)."""
        with self._lock:
            if job.done.is_set():
                return
            if deadline is None:
                return
            self._detached[job] = deadline

    def _ended(self, name: str, late: bool) -> None:
        with self._lock:
            _add(self._stuck if late else self._running, name, -1)


def _add(counts: dict[str, int], name: str, delta: int) -> None:
    left = counts.get(name, 0) + delta
    if left > 0:
        counts[name] = left
    else:
        counts.pop(name, None)
