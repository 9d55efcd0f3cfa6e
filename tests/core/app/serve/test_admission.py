"""Admission control without a server: who runs, who waits (in order, within the deadline), who is refused,
and how the running limit follows the event loop's lag."""

from __future__ import annotations

import asyncio

import pytest

from blender_core.app.serve.admission import Admission, Overloaded


async def test_requests_beyond_the_running_limit_wait_in_order_and_beyond_max_in_flight_are_refused() -> None:
    admission = Admission(4, 2)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    await admission.enter(deadline)
    await admission.enter(deadline)
    order: list[int] = []

    async def queued(k: int) -> None:
        await admission.enter(deadline)
        order.append(k)

    waiting = [asyncio.ensure_future(queued(k)) for k in range(2)]
    await asyncio.sleep(0.01)
    assert (admission.running, len(admission.waiting), admission.in_flight) == (2, 2, 4)
    with pytest.raises(Overloaded, match="4 requests are in flight, this server's limit"):
        await admission.enter(deadline)
    admission.leave(0.5)
    admission.leave(0.5)
    await asyncio.gather(*waiting)
    assert order == [0, 1]  # first come, first served
    assert (admission.running, len(admission.waiting), admission.service) == (2, 0, 0.5)


async def test_a_request_that_could_not_be_answered_before_its_deadline_is_refused_at_once() -> None:
    admission = Admission(100, 1)
    loop = asyncio.get_running_loop()
    await admission.enter(loop.time() + 10)
    admission.service = 2.0  # a completion runs 2 s: the next slot frees in 2 s, and the answer takes 2 more
    with pytest.raises(Overloaded, match="no slot would free before this request's deadline") as info:
        await admission.enter(loop.time() + 3.0)
    assert info.value.retry_after == 2.0
    assert not admission.waiting  # nothing left behind


async def test_a_waiting_request_gives_up_when_too_little_of_its_deadline_is_left() -> None:
    admission = Admission(100, 1)
    loop = asyncio.get_running_loop()
    await admission.enter(loop.time() + 10)
    admission.service = 0.05
    start = loop.time()
    with pytest.raises(Overloaded):  # the slot is never freed
        await admission.enter(start + 0.3)
    assert 0.2 <= loop.time() - start < 1.0
    assert not admission.waiting


async def test_a_client_that_leaves_while_waiting_holds_no_slot() -> None:
    admission = Admission(10, 1)
    loop = asyncio.get_running_loop()
    await admission.enter(loop.time() + 10)
    gone = asyncio.ensure_future(admission.enter(loop.time() + 10))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    admission.leave(0.1)
    assert (admission.running, len(admission.waiting)) == (0, 0)
    await admission.enter(loop.time() + 10)  # the slot is free for the next one
    assert admission.running == 1


async def test_the_running_limit_shrinks_when_the_loop_falls_behind_and_grows_back_when_it_keeps_up() -> None:
    admission = Admission(256, 64)
    assert admission.limit == 64
    floor = admission.floor
    loop = asyncio.get_running_loop()
    for _ in range(64):
        await admission.enter(loop.time() + 60)
    waiting = [asyncio.ensure_future(admission.enter(loop.time() + 60)) for _ in range(100)]
    await asyncio.sleep(0.01)
    admission.service = 1.0
    admission.observe(1.0, now=10.0)  # far behind: a quarter less...
    assert admission.limit == 48
    admission.observe(1.0, now=10.5)  # ...and not again before a completion's time has passed
    assert admission.limit == 48
    for k in range(20):
        admission.observe(1.0, now=11.0 + k)
    assert admission.limit == floor  # never below the floor
    for _ in range(64 - floor):  # the running ones end; the waiting take only the slots the limit allows
        admission.leave(1.0)
    assert admission.running == floor
    for k in range(60):  # the loop keeps up, and requests wait: the limit grows back, slots are given
        admission.observe(0.0, now=40.0 + k * 0.05)
    assert admission.limit == 64  # up to max_running, no further
    assert admission.running == 64
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
