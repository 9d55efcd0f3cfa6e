"""``GET /metrics`` scraped after real requests through a live server over loopback fakes: the counts match
what was sent, the histograms count each request, the keys guard it, and another component's series join in."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")
pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families

from tests.core.app.serve.support import ENV, MODEL, QUESTION, SERVER_KEY, backend, post
from tests.helpers.openai_upstreams import FakeUpstream, LiveServer

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"])]

PRICE_IN, PRICE_OUT = 2.0, 8.0  # per million tokens


def scrape(server: LiveServer, key: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``: (name, labels) -> value."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(f"{server.base_url}/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def live(ranker: Path, fakes: list[FakeUpstream], **sections: dict[str, object]) -> LiveServer:
    from blender_core.app.serve.app import create_app
    from blender_core.app.serve.config import parse_config

    backends = [{**backend(f), "price_in": PRICE_IN, "price_out": PRICE_OUT} for f in fakes]
    ensemble = {"ranker": str(ranker), "top_k": 2, "timeout": 10.0, **sections.pop("ensemble", {})}
    config = parse_config({"ensemble": ensemble, "backends": backends, **sections})
    return LiveServer(create_app(config, environ=ENV))


def test_the_counts_match_what_was_sent(tiny_reference_ckpt: Path) -> None:
    """Three requests (two whole, one streamed) to two backends, one of which fails once; then one refused
    (another model): every counter says so, and every histogram counted each request."""
    good = FakeUpstream("good", answer="Paris is the capital.", usage=(10, 5))
    flaky = FakeUpstream("flaky", answer="It is Paris.", usage=(20, 7))
    with good, flaky, live(tiny_reference_ckpt, [good, flaky]) as server:
        body = {"model": MODEL, "messages": QUESTION}
        assert post(server, json=body).status_code == 200
        flaky.mode = "error"  # fails once
        assert post(server, json=body).status_code == 200
        flaky.mode = "answer"
        streamed = post(server, json={**body, "stream": True})
        assert streamed.status_code == 200
        assert streamed.text.rstrip().endswith("data: [DONE]")
        assert post(server, json={**body, "model": "another"}).status_code == 404
        m = scrape(server)

    requests = "blender_requests_total"
    assert value(m, requests, outcome="ok", status="200", stream="false") == 2
    assert value(m, requests, outcome="ok", status="200", stream="true") == 1
    assert value(m, requests, outcome="rejected", status="404", stream="false") == 1
    assert value(m, "blender_request_duration_seconds_count", stream="false") == 2
    assert value(m, "blender_request_duration_seconds_count", stream="true") == 1
    assert value(m, "blender_time_to_first_token_seconds_count") == 1

    calls = "blender_backend_calls_total"
    assert value(m, calls, backend="good", outcome="ok") == 3
    assert value(m, calls, backend="flaky", outcome="ok") == 2
    assert value(m, calls, backend="flaky", outcome="error") == 1
    assert value(m, "blender_backend_latency_seconds_count", backend="good") == 3
    assert value(m, "blender_backend_latency_seconds_count", backend="flaky") == 3
    assert value(m, "blender_ranking_duration_seconds_count") == 3  # each answered request was ranked

    tokens = "blender_tokens_total"
    assert value(m, tokens, stage="candidate", backend="good", type="input") == 3 * 10
    assert value(m, tokens, stage="candidate", backend="good", type="output") == 3 * 5
    assert value(m, tokens, stage="candidate", backend="flaky", type="input") == 2 * 20
    spent = (3 * (10 * PRICE_IN + 5 * PRICE_OUT) + 2 * (20 * PRICE_IN + 7 * PRICE_OUT)) / 1_000_000
    cost = value(m, "blender_cost_total", stage="candidate", backend="good") + value(
        m, "blender_cost_total", stage="candidate", backend="flaky"
    )
    assert cost == pytest.approx(spent)
    assert value(m, "blender_requests_in_flight") == 0


def test_timeouts_errors_and_a_failed_request_count_per_backend(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    """A request where one backend answers, one fails, one answers garbage and one hangs past the timeout;
    then one where every backend fails (502: the counts come from the error's records)."""
    names = ["fast", "failing", "malformed", "hanging"]
    with live(
        tiny_reference_ckpt, [fakes[n] for n in names], ensemble={"timeout": 1.0, "min_successes": 1}
    ) as server:
        body = {"model": MODEL, "messages": QUESTION}
        assert post(server, json=body).status_code == 200
        m = scrape(server)
    calls = "blender_backend_calls_total"
    assert value(m, calls, backend="fast", outcome="ok") == 1
    assert value(m, calls, backend="failing", outcome="error") == 1
    assert value(m, calls, backend="malformed", outcome="error") == 1
    assert value(m, calls, backend="hanging", outcome="timeout") == 1
    assert value(m, "blender_backend_latency_seconds_bucket", backend="hanging", le="0.5") == 0
    assert value(m, "blender_backend_latency_seconds_bucket", backend="hanging", le="2.5") == 1

    with live(tiny_reference_ckpt, [fakes["failing"]]) as server:
        r = post(server, json={"model": MODEL, "messages": QUESTION})
        assert r.status_code == 502
        m = scrape(server)
    assert value(m, "blender_requests_total", outcome="error", status="502", stream="false") == 1
    assert value(m, "blender_request_duration_seconds_count", stream="false") == 0  # not an answer
    assert value(m, calls, backend="failing", outcome="error") == 1


def test_metrics_need_the_api_keys_when_keys_are_configured(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    with live(tiny_reference_ckpt, [fakes["fast"]], server={"api_key_envs": ["BLENDER_TEST_KEY"]}) as server:
        assert httpx.get(f"{server.base_url}/metrics", timeout=10).status_code == 401
        wrong = {"authorization": "Bearer not-the-key-at-all"}
        assert httpx.get(f"{server.base_url}/metrics", headers=wrong, timeout=10).status_code == 401
        no_key = httpx.post(
            f"{server.base_url}/v1/chat/completions", json={"model": MODEL, "messages": QUESTION}, timeout=10
        )
        assert no_key.status_code == 401
        m = scrape(server, SERVER_KEY)
    assert value(m, "blender_requests_total", outcome="rejected", status="401", stream="false") == 1


def test_metrics_off_serves_nothing_and_counts_nothing(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    with live(tiny_reference_ckpt, [fakes["fast"]], server={"metrics": "off"}) as server:
        assert post(server, json={"model": MODEL, "messages": QUESTION}).status_code == 200
        assert httpx.get(f"{server.base_url}/metrics", timeout=10).status_code == 404


def test_another_component_adds_its_series_and_two_apps_count_apart(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    """The hook: a counter added on one app's registry (as the traffic recorder counts its lines); the
    same name on a second app in the same process is no collision."""
    with live(tiny_reference_ckpt, [fakes["fast"]]) as one, live(tiny_reference_ckpt, [fakes["fast"]]) as two:
        for server, disk_full in ((one, 2), (two, 0)):
            app = server.server.config.app
            lines = app.state.metrics.counter("blender_record_lines", "Recorded requests.", ["result"])
            lines.labels(result="written").inc()
            if disk_full:
                lines.labels(result="disk_full").inc(disk_full)
        assert post(one, json={"model": MODEL, "messages": QUESTION}).status_code == 200
        m1, m2 = scrape(one), scrape(two)
    assert value(m1, "blender_record_lines_total", result="disk_full") == 2
    assert value(m2, "blender_record_lines_total", result="written") == 1
    assert value(m2, "blender_record_lines_total", result="disk_full") == 0
    assert value(m1, "blender_requests_total", outcome="ok", status="200", stream="false") == 1
    assert value(m2, "blender_requests_total", outcome="ok", status="200", stream="false") == 0


def test_a_stream_cut_by_the_deadline_or_left_by_its_client_counts_as_such(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    """Both streams began (status 200, a first chunk): one then passed its deadline (an error event), the
    other lost its client; neither is an answered request."""
    with live(
        tiny_reference_ckpt,
        [fakes["fast"], fakes["writer"]],  # the writer fuses slowly: 13 words, 0.15 s apart
        ensemble={"fuser": "writer"},
        limits={"request_timeout": 1.5},
    ) as server:
        body = {"model": MODEL, "messages": QUESTION, "stream": True}
        cut = post(server, json=body)
        assert cut.status_code == 200
        assert '"code":"deadline_exceeded"' in cut.text
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=30) as left:
            assert left.status_code == 200
            next(left.iter_bytes())  # the first chunk, then the client leaves
        m = {}
        for _ in range(100):  # the server notices the client gone at its next chunk: bounded wait
            m = scrape(server)
            if value(m, "blender_requests_total", outcome="client_gone", status="200", stream="true"):
                break
            time.sleep(0.05)
    requests = "blender_requests_total"
    assert value(m, requests, outcome="timeout", status="200", stream="true") == 1
    assert value(m, requests, outcome="client_gone", status="200", stream="true") == 1
    assert value(m, "blender_time_to_first_token_seconds_count") == 2
    assert value(m, "blender_request_duration_seconds_count", stream="true") == 0
