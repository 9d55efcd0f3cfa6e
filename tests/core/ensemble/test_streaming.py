"""blender_core.ensemble.streaming: the time-to-first-item guard with a fallback, sync and async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from blender_core.ensemble.streaming import FirstItemTimeout, StreamReport, aguarded_stream, guarded_stream


def slow_start(delay: float, items: list[str]) -> Iterator[str]:
    time.sleep(delay)
    yield from items


async def aslow_start(delay: float, items: list[str]) -> AsyncIterator[str]:
    await asyncio.sleep(delay)
    for item in items:
        yield item


def broken_after_first() -> Iterator[str]:
    yield "a"
    raise RuntimeError("mid-stream")


@pytest.mark.parametrize("timeout", [None, 1.0])
def test_items_flow_and_the_report_is_filled(timeout: float | None) -> None:
    report = StreamReport()
    assert list(guarded_stream(lambda: slow_start(0.05, ["a", "b"]), timeout=timeout, report=report)) == [
        "a",
        "b",
    ]
    assert report.error is None
    assert not report.fell_back
    assert report.first_item_s is not None
    assert report.first_item_s >= 0.05


def test_late_first_item_falls_back_without_waiting() -> None:
    report = StreamReport()
    start = time.perf_counter()
    out = list(
        guarded_stream(
            lambda: slow_start(2.0, ["late"]), timeout=0.2, fallback=lambda: ["best"], report=report
        )
    )
    assert out == ["best"]
    assert time.perf_counter() - start < 1.0
    assert report.fell_back
    assert "no output within 0.2 s" in (report.error or "")


@pytest.mark.parametrize("timeout", [None, 1.0])
def test_errors_before_the_first_item_fall_back_and_after_it_raise(timeout: float | None) -> None:
    def fails() -> Iterator[str]:
        raise ValueError("bad fuser")

    report = StreamReport()
    assert list(guarded_stream(fails, timeout=timeout, fallback=lambda: ["best"], report=report)) == ["best"]
    assert report.error == "ValueError: bad fuser"
    assert list(guarded_stream(lambda: iter([]), timeout=timeout, fallback=lambda: ["best"])) == ["best"]
    stream = guarded_stream(broken_after_first, timeout=timeout, fallback=lambda: ["best"])
    assert next(stream) == "a"
    with pytest.raises(RuntimeError, match="mid-stream"):
        next(stream)


def test_without_a_fallback_the_timeout_raises() -> None:
    with pytest.raises(FirstItemTimeout, match="time-to-first-token"):
        list(guarded_stream(lambda: slow_start(2.0, ["late"]), timeout=0.1))


async def test_async_guard() -> None:
    report = StreamReport()
    start = time.perf_counter()
    out = [
        x
        async for x in aguarded_stream(
            lambda: aslow_start(2.0, ["late"]), timeout=0.2, fallback=lambda: ["best"], report=report
        )
    ]
    assert out == ["best"]
    assert time.perf_counter() - start < 1.0
    assert report.fell_back
    out = [x async for x in aguarded_stream(lambda: aslow_start(0.01, ["a", "b"]), timeout=1.0)]
    assert out == ["a", "b"]
    with pytest.raises(FirstItemTimeout):
        [x async for x in aguarded_stream(lambda: aslow_start(2.0, ["late"]), timeout=0.1)]
