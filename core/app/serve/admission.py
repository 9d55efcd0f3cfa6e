"""Admission control: which chat completions run now, which wait for a slot, which are refused (429).

The server is one process with one event loop: whatever the machine, its own work for a request (the
OpenAI protocol, LangChain, the backends' HTTP clients) runs on one core. Past a few dozen requests running
at once that core is saturated: every step of each request (sending a backend call, reading its answer) waits
behind every other's, and the per-request cost grows too (httpcore's connection pool scans every connection
on each request, so it costs O(connections²)). The backend calls, whose timeout runs from their start, then
time out while their answers sit unread, and the server answered 502, blaming its backends for its own load.

So at most ``limit`` chat completions *run* at once (``max_running``, 32 by default: measured, one process
serves its most there; see the README), and the rest of the ``max_in_flight`` admitted ones wait, in arrival
order, for a slot. A waiting request has started no backend call, so no backend timeout runs while it waits.
The running limit also follows the event loop's lag, measured every 50 ms: it shrinks by a quarter when the
loop falls behind (other processes on the cores, a ``max_running`` set too high), down to :data:`PER_CORE`
per core, and grows back while the loop keeps up and requests are waiting.

A request waits only while it can still be answered before its deadline (``request_timeout``, counted from
its arrival): when the expected wait (the requests ahead of it over the slots, at the mean time a completion
runs) would pass it, it is refused at once, and one still waiting when too little of its deadline is left
is refused then, each with 429 and a ``Retry-After`` of the expected wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections import deque

#: Running slots per core that are always allowed (progress even when the loop lags).
PER_CORE = 2
#: The event loop's lag (seconds late on a 50 ms sleep, smoothed) above which the running limit shrinks...
LAG_HIGH = 0.025
#: ...and below which it grows back, when requests are waiting for a slot.
LAG_LOW = 0.01
#: How often the lag is measured, in seconds.
INTERVAL = 0.05


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Overloaded(Exception):
    """A request refused for now: the server is at ``max_in_flight``, or no slot would free in time;
    ``retry_after`` is the expected wait for a slot, in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Admission:
    """Admits chat completions: at most ``limit`` running at once, the rest waiting in arrival order, all
    together at most ``max_in_flight``.

    Args:
        max_in_flight: requests admitted at once, running or waiting (429 at once beyond).
        max_running: the most that run at once (capped by ``max_in_flight``); the lag may lower it for a
            while, down to ``PER_CORE`` per core.
    """

    def __init__(self, max_in_flight: int, max_running: int) -> None:
        self.max_in_flight = max_in_flight
        self.ceiling = min(max_running, max_in_flight)
        self.floor = min(self.ceiling, PER_CORE * cores())
        self.limit = self.ceiling
        self.running = 0
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.service: float | None = None  # seconds a completion runs, smoothed (None: none ended yet)
        self.lag = 0.0
        self._shrunk_at = -math.inf

    @property
    def in_flight(self) -> int:
        return self.running + len(self.waiting)

    def expected_wait(self, position: int) -> float:
        """Seconds until the request at ``position`` in the queue (1: the next) gets a slot, as it looks now."""
        if self.service is None:
            return 0.0
        return position * self.service / max(1, self.limit)

    async def enter(self, deadline: float) -> None:
        """Take a running slot, waiting for one while the request's ``deadline`` (the loop's clock) allows.

        Raises:
            Overloaded: ``max_in_flight`` are admitted already, or no slot would free before the deadline.
        """
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(
                f"{self.in_flight} requests are in flight, this server's limit (max_in_flight)",
                self.expected_wait(len(self.waiting) + 1),
            )
        if self.running < self.limit and not self.waiting:
            self.running += 1
            return
        loop = asyncio.get_running_loop()
        wait = self.expected_wait(len(self.waiting) + 1)
        needed = self.service or 0.0
        if loop.time() + wait + needed > deadline:
            raise self._too_late(wait)
        slot: asyncio.Future[None] = loop.create_future()
        self.waiting.append(slot)
        try:
            await asyncio.wait_for(asyncio.shield(slot), max(0.0, deadline - needed - loop.time()))
        except (TimeoutError, asyncio.TimeoutError):
            if not slot.done():  # given meanwhile: keep it
                self._forget(slot)
                raise self._too_late(self.expected_wait(len(self.waiting) + 1)) from None
        except asyncio.CancelledError:
            if slot.done():
                self.leave(None)  # given meanwhile: hand it on
            else:
                self._forget(slot)
            raise

    def _forget(self, slot: asyncio.Future[None]) -> None:
        slot.cancel()
        with contextlib.suppress(ValueError):
            self.waiting.remove(slot)

    def _too_late(self, wait: float) -> Overloaded:
        return Overloaded(
            f"{self.running} requests are running and {len(self.waiting)} waiting; no slot would free before "
            "this request's deadline (limits.request_timeout)",
            wait,
        )

    def leave(self, seconds: float | None) -> None:
        """Free a running slot (``seconds``: how long the completion ran) and hand it to the next waiting."""
        self.running -= 1
        if seconds is not None:
            self.service = seconds if self.service is None else 0.8 * self.service + 0.2 * seconds
        self._admit()

    def _admit(self) -> None:
        while self.waiting and self.running < self.limit:
            slot = self.waiting.popleft()
            if not slot.done():
                self.running += 1
                slot.set_result(None)

    async def watch(self) -> None:
        """Follow the event loop's lag for the app's life (a task of the lifespan)."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(INTERVAL)
            now = loop.time()
            self.observe(now - start - INTERVAL, now)

    def observe(self, late: float, now: float) -> None:
        """Adapt the running limit to the loop being ``late`` seconds on its last sleep (at ``now``): shrink
        it by a quarter while the loop falls behind (at most once per completion time: the requests admitted
        before still load the loop), grow it by an eighth, up to ``max_running``, while the loop keeps up and
        requests wait for a slot."""
        self.lag = 0.5 * self.lag + 0.5 * max(0.0, late)
        if self.lag > LAG_HIGH:
            if self.limit > self.floor and now - self._shrunk_at >= max(self.service or 0.0, 4 * INTERVAL):
                self.limit = max(self.floor, int(self.limit * 0.75))
                self._shrunk_at = now
        elif self.lag < LAG_LOW and self.waiting and self.running >= self.limit:
            self.limit = min(self.ceiling, self.limit + max(1, self.limit // 8))
        self._admit()
