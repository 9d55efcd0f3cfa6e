"""The local Ray a batch command starts for itself, and what is left of one whose driver was killed.

A run of the Ray engine without a cluster to join starts a new Ray on this machine (:func:`start_local_ray`): with
no dashboard, and in a temporary folder of its own (``/tmp/blender-llm-ray-XXXXXXXX``, not Ray's shared
``/tmp/ray``), so that it never attaches to, or shares a session with, another Ray of this machine. The folder
goes when the process ends (after Ray's own shutdown).

That Ray is quiet: its actors' output stays in its log files (``log_to_driver=False``: no ``(MapWorker pid=…)``
lines with ANSI colours, no weight-loading bars), and so do Ray's own notes: its ``INFO`` lines (the ``ray`` and
``ray.data`` loggers at ``WARNING``), the notice that token authentication is on (Ray's default for a new local
cluster), the tracebacks of retried tasks (printed behind a coloured ``(raylet)``) and Ray Data's stack trace of an
exception it passes on, and the log lines of its C++ core (``core_worker.cc … E``: ``RAY_BACKEND_LOG_LEVEL=fatal``
unless set, and what the core prints while it starts goes to ``driver-start.err`` in its folder, shown only if
starting fails). What fails a job still reaches the user: a shard that fails for good is an exception the driver
reports with its cause (``error: the Ray job failed: ValueError: …``), and Ray's warnings stay on.

When the driver is killed (``kill -9``, the OOM killer), Ray's processes it started outlive it: its dashboard and
runtime-env agents for 8-60 s, its actors while they finish the shard in hand (and write its part). So the run
notes its local Ray in the output's part folder (``OUT.parts/ray.json``: machine, driver process and its start
time, the Ray folder; :func:`note_local_ray`), and the next run on that output, once it holds the output's lock,
reaps what is left (:func:`reap_orphans`): on the same machine, when the noted driver is gone, every process that
has a file open in that Ray folder is killed (only that Ray's processes can: the folder is the run's own), then
the folder is deleted. Without ``/proc`` (not Linux) nothing is reaped; the orphans end by themselves, and the
rerun, on a Ray of its own, does not need them gone (a part an orphan writes is never merged:
:mod:`blender_core.batch.parts`).

Example:
    >>> reap_orphans(Path("ranked.jsonl.parts"))  # doctest: +SKIP
    [48213, 48215]
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: the note of a run's local Ray, in the output's part folder
NOTE = "ray.json"
_PREFIX = "blender-llm-ray-"
_started: Path | None = None  # the Ray folder of the local Ray this process started, if it did


def _root() -> str:
    """Where the Ray folder goes: where Ray puts its own (``RAY_TMPDIR``, else ``/tmp`` on POSIX, whose short path
    keeps Ray's socket paths under the OS limit of 107 bytes)."""
    return os.environ.get("RAY_TMPDIR") or ("/tmp" if os.name == "posix" else tempfile.gettempdir())


def start_local_ray(ray: Any) -> None:
    """Start a new Ray on this machine for this process: no dashboard, a Ray folder of its own, quiet (module
    docstring)."""
    global _started
    folder = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=_root()))
    atexit.register(_stop, ray, folder)
    # Ray's notice that it turned token authentication on, as it does for every new local cluster
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    with _quiet_core(folder / "driver-start.err"):
        ray.init(
            address="local",
            include_dashboard=False,
            _temp_dir=str(folder),
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console":
            handler.setLevel(logging.WARNING)  # its INFO lines: datasets started and finished
            handler.addFilter(_not_reraised)
    # Ray prints the errors its tasks report (a retried task's traceback, behind a coloured "(raylet)") even without
    # log_to_driver; a shard that fails for good is an exception of the job, which says what failed
    with contextlib.suppress(AttributeError):
        ray._private.worker._worker_logs_enabled = False
    _started = folder


def _not_reraised(record: logging.LogRecord) -> bool:
    """Not a note of Ray Data on an exception it passes on (with a full stack trace): the job reports the exception."""
    return record.name != "ray.data.exceptions"


@contextlib.contextmanager
def _quiet_core(log: Path) -> Iterator[None]:
    """Keep the log lines of Ray's C++ core off this process's stderr: at ``fatal`` level (unless the user set
    ``RAY_BACKEND_LOG_LEVEL``) for the Ray started in the block, and, while it starts, stderr (the file descriptor)
    sent to ``log``, whose text is shown if starting fails."""
    level = os.environ.get("RAY_BACKEND_LOG_LEVEL")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with log.open("wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    except BaseException:
        os.dup2(saved, 2)
        with contextlib.suppress(OSError):
            sys.stderr.write(log.read_text(errors="replace"))
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if level is None:
            os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)


def _stop(ray: Any, folder: Path) -> None:
    """At exit: stop the local Ray (Ray's own exit hook, registered when it was imported, would run after this one and
    find it stopped), then delete its folder."""
    with contextlib.suppress(Exception, KeyboardInterrupt):  # a Ctrl-C while the process ends stops nothing more
        ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None when it is gone (or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return None if fields[0] == "Z" else fields[19]  # a zombie is gone but for its exit status


def note_local_ray(folder: Path) -> None:
    """Note in ``folder`` (the output's part folder) the local Ray this process started, if it did."""
    if _started is None:
        return
    note = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()), "ray": str(_started)}
    (folder / NOTE).write_text(json.dumps(note))


def _holding(folder: Path) -> list[int]:
    """The processes (of this user) with a file open in ``folder``, or in it as their working folder."""
    inside = str(folder) + os.sep
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()] + [os.readlink(entry / "cwd")]
        except OSError:  # gone meanwhile, or another user's
            continue
        if any(link.startswith(inside) for link in links):
            found.append(int(entry.name))
    return found


def reap_orphans(folder: Path, wait_s: float = 10.0) -> list[int]:
    """Kill what is left of the local Ray of a killed run on this output (the note in ``folder``), and delete its Ray
    folder; the processes killed. Call it holding the output's lock. Nothing is done when the note is from another
    machine, when its driver still runs (a process that lived on after its job failed keeps its Ray), or on a system
    without ``/proc``."""
    path = folder / NOTE
    try:
        note = json.loads(path.read_text())
        host, pid, started, ray_folder = note["host"], int(note["pid"]), note["started"], Path(note["ray"])
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError):
        logger.warning("%s: ignoring an unreadable note of a local Ray", path)
        path.unlink(missing_ok=True)
        return []
    if host != socket.gethostname() or not Path("/proc").is_dir():
        return []
    if started is not None and _start_time(pid) == started:
        return []  # its driver still runs
    if not ray_folder.name.startswith(_PREFIX):
        logger.warning("%s: a local Ray in %s is not one this package starts; left alone", path, ray_folder)
        path.unlink(missing_ok=True)
        return []
    killed = _holding(ray_folder)
    for orphan in killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(orphan, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while any(_start_time(p) is not None for p in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    if killed:
        logger.warning(
            "%s: stopped %d processes of the local Ray of a run that was killed (%s)", path, len(killed), ray_folder
        )
    shutil.rmtree(ray_folder, ignore_errors=True)
    path.unlink(missing_ok=True)
    return killed
