"""Fixtures of the LlamaIndex adapter tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.instrumentation import get_dispatcher

from tests.helpers.llamaindex_fakes import Collect


@pytest.fixture
def collected() -> Iterator[list[Any]]:
    """The instrumentation events dispatched during the test, in order."""
    handler = Collect(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler.events
    root.event_handlers.remove(handler)
