"""Event-loop checks, free of any framework: count the loop's ticks while a call runs, which proves that
the call does not block the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class Ticks:
    """How many times the event loop ran the ticker while the block ran."""

    count: int = 0


@contextlib.asynccontextmanager
async def ticking(period: float = 0.02) -> AsyncIterator[Ticks]:
    """Tick every ``period`` seconds on the event loop while the ``async with`` block runs; a call that
    blocks the loop holds the count still.

    Example:
        >>> async with ticking(0.02) as ticks:  # doctest: +SKIP
        ...     await call_that_takes_half_a_second()
        >>> assert ticks.count >= 10  # doctest: +SKIP
    """
    ticks = Ticks()

    async def tick() -> None:
        while True:
            await asyncio.sleep(period)
            ticks.count += 1

    task = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
