"""How many CPU threads torch uses in every command with ``--num-threads``: the number given, or with 0 (the
default) :func:`auto_threads`, torch's default less the cores other work keeps busy, at least 1.

Why: torch's threads wait on each other, so on a CPU that other work already keeps busy more threads are
slower, not faster. Measured on a shared 2-core machine with other test suites running (``rank`` of 24
PandaLM records with the built-in ranker, the settings alternated, 4 runs each): at a load average of 4.5
to 6.7, torch's default of 2 threads took 3.7 to 5.7 s a record, 1 thread 1.1 to 1.2 s, and this rule 0.8
to 1.7 s (it chose 1 thread each time); at 1.9 to 2.7, 2 threads took 0.39 to 1.36 s as the other work came
and went, 1 thread 0.63 to 0.66 s. The demo's SmolLM2 generated 3 to 6 times faster with 1 thread than
with 2. The load average alone did not tell the fast 2-thread runs from the slow ones (2.7 and 1.9 against
2.4 and 2.3); hence the sample of the moment beside it. On an idle machine the rule keeps torch's default.

A helper module, not a command (the CLI registers no module whose name starts with ``_``); it imports torch
only when a command runs.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Annotated

import typer

from blender_core.app.commands._command import at_least

logger = logging.getLogger(__name__)

NumThreads = Annotated[
    int,
    typer.Option(
        "--num-threads",
        callback=at_least(0),
        help="CPU threads for torch. 0: auto, torch's default (one per core) less the cores other work keeps "
        "busy (the lower of the load average and a 0.3 s sample), at least 1: on a busy CPU, more threads are "
        "slower.",
    ),
]


def auto_threads(default: int, busy: float, cores: int) -> int:
    """The threads for ``--num-threads 0``: ``default`` (torch's), less the ``busy`` ones of ``cores`` (see
    :func:`busy_cores`), at least 1. ``auto_threads(2, 2.5, 2) == 1``; ``auto_threads(8, 0.2, 8) == 8``."""
    return max(1, min(default, round(cores - busy)))


def busy_cores(sample_s: float = 0.3) -> tuple[float, int] | None:
    """How many of the cores this process may use other work keeps busy, and how many it may use: the lower
    of the 1-minute load average and the busy share of those cores over ``sample_s`` seconds now (Linux's
    /proc/stat). The load average alone also counts a command that just ended, this one's previous run
    included; the sample alone is one moment. None where the OS says neither."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    n = len(cores) if cores is not None else os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows has no load average
        busy = None
    if cores is not None:
        try:
            first = _cpu_times(cores)
            time.sleep(sample_s)
            second = _cpu_times(cores)
        except (OSError, ValueError):
            pass
        else:
            now = sum(1.0 - (b[0] - a[0]) / max(b[1] - a[1], 1) for a, b in zip(first, second, strict=True))
            busy = now if busy is None else min(busy, now)
    return None if busy is None else (busy, n)


def _cpu_times(cores: list[int]) -> list[tuple[int, int]]:
    """(idle, total) jiffies of each of ``cores``, from /proc/stat."""
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                times[int(name[3:])] = (values[3] + values[4], sum(values))
    return [times[c] for c in cores]


def set_torch_threads(num_threads: int) -> int:
    """Set torch's CPU threads from ``--num-threads`` (0: :func:`auto_threads`) and return their number."""
    import torch

    if num_threads <= 0:
        default = torch.get_num_threads()
        measured = busy_cores() if default > 1 else None  # one thread: nothing to take away
        if measured is None:
            return default
        busy, cores = measured
        num_threads = auto_threads(default, busy, cores)
        logger.info("torch threads: %d (auto: %.1f of %d cores busy, torch's default %d)", num_threads, busy, cores, default)
    torch.set_num_threads(num_threads)
    return num_threads
