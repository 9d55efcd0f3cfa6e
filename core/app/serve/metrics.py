"""The server's Prometheus metrics: the series, on a registry of each app's own, and how one chat
completion is counted in them.

Each app has its own ``CollectorRegistry`` (``app.state.metrics.registry``), so that several apps in one
process (tests, an embedding application) count apart. Labels are bounded: a backend is named by its
config name (a sample ``name#2`` counts under ``name``), never by anything a client sent.

- Requests (chat completions only): ``blender_requests_total{outcome, status, stream}``; outcome is ``ok``,
  ``error`` (5xx, or an error event in a stream that had begun), ``timeout`` (504, or the deadline
  mid-stream), ``overloaded`` (429), ``rejected`` (other 4xx) or ``client_gone`` (the client left first).
  ``blender_request_duration_seconds{stream}`` (answered requests, from arrival, the wait for a slot
  included, to the last byte); ``blender_time_to_first_token_seconds`` (streamed: arrival to the first
  chunk).
- Backends, from the ensemble's account of each request (its ``EnsembleOutcome``, every candidate's
  record) or of a failed one (``EnsembleError.records``): ``blender_backend_calls_total{backend, outcome}``
  (``ok``, ``error``, ``timeout``, ``cancelled``: not needed any more, by an adaptive policy);
  ``blender_backend_latency_seconds{backend}`` (calls that were not cancelled).
- Ranking and fusion: ``blender_ranking_duration_seconds``; ``blender_fusions_total{fuser, outcome}``
  (``fused``, or ``fell_back`` to the top answer after the fuser failed);
  ``blender_fusion_duration_seconds{fuser}``.
- Spending: ``blender_tokens_total{stage, backend, type}`` (stage ``candidate``, ``fusion`` or ``ranking``,
  whose backend is ``ranker``; type ``input`` / ``output``) and ``blender_cost_total{stage, backend}``, in the
  currency of the backends' ``price_in`` / ``price_out``.
- Admission, read at each scrape: ``blender_requests_in_flight``, ``blender_requests_running``,
  ``blender_requests_waiting``, ``blender_running_limit``, ``blender_event_loop_lag_seconds``.

Another component adds its own series to the same registry (the hook): :meth:`ServeMetrics.counter` for a
counter, :meth:`ServeMetrics.register` for any collector (the traffic recorder's counts are one:
:class:`blender_core.app.serve.recording.RecorderCollector`)::

    answers = app.state.metrics.counter("myapp_answers_checked", "Answers checked.", ["verdict"])
    answers.labels(verdict="flagged").inc()
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from blender_core.app.serve.admission import Admission
from blender_core.app.serve.config import ServeConfig
from blender_core.ensemble import CandidateRecord

#: Seconds: from a fast local model's answer to a slow request near the default deadline (120 s).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
#: Seconds: a ranker's forward pass on CPU, up to an LLM judge's calls.
RANKING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: What a candidate not named in the config counts under (never a client's text).
OTHER = "other"
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _AdmissionGauges(Collector):
    """The admission's state, read at each scrape."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def collect(self) -> Iterator[Metric]:
        a = self.admission
        for name, doc, value in (
            ("blender_requests_in_flight", "Chat completions admitted: running or waiting.", a.in_flight),
            ("blender_requests_running", "Chat completions running.", a.running),
            ("blender_requests_waiting", "Chat completions waiting for a running slot.", len(a.waiting)),
            ("blender_running_limit", "Chat completions allowed to run at once now.", a.limit),
            ("blender_event_loop_lag_seconds", "The event loop's lag, last measured.", a.lag),
        ):
            yield GaugeMetricFamily(name, doc, value=float(value))


class ServeMetrics:
    """The series of one app, on its own registry, and how a chat completion is counted in them.

    Args:
        config: the served config (backend names: the only backend labels; the fuser's name).
        admission: the app's admission, read at each scrape.
    """

    def __init__(self, config: ServeConfig, admission: Admission | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.backends = frozenset(b.name for b in config.backends)
        self.fuser = config.ensemble.fuser or ""
        r = self.registry
        self.requests = Counter(
            "blender_requests",
            "Chat completions, by outcome and HTTP status.",
            ["outcome", "status", "stream"],
            registry=r,
        )
        self.duration = Histogram(
            "blender_request_duration_seconds",
            "Answered chat completions: arrival to the last byte.",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "blender_time_to_first_token_seconds",
            "Streamed chat completions: arrival to the first chunk.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.calls = Counter(
            "blender_backend_calls", "Backend calls, by outcome.", ["backend", "outcome"], registry=r
        )
        self.backend_latency = Histogram(
            "blender_backend_latency_seconds",
            "Backend calls that were not cancelled: their latency.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ranking = Histogram(
            "blender_ranking_duration_seconds",
            "Ranking the candidates of a request.",
            buckets=RANKING_BUCKETS,
            registry=r,
        )
        self.fusions = Counter("blender_fusions", "Fusions, by outcome.", ["fuser", "outcome"], registry=r)
        self.fusion = Histogram(
            "blender_fusion_duration_seconds",
            "Fusing the top answers of a request.",
            ["fuser"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "blender_tokens", "Tokens, by stage, backend and type.", ["stage", "backend", "type"], registry=r
        )
        self.cost = Counter(
            "blender_cost",
            "Spent, in the prices' currency, by stage and backend.",
            ["stage", "backend"],
            registry=r,
        )
        if admission is not None:
            self.registry.register(_AdmissionGauges(admission))
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}  # bounded: the labels are

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus-client checks the labels on every call."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # ------------------------------------------------------------------------------------------- the hook
    def register(self, collector: Collector) -> None:
        """Add another component's collector to this app's registry (its ``collect()`` runs at each scrape).

        Raises:
            ValueError: one of its series' names is taken.
        """
        self.registry.register(collector)

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """A new counter on this app's registry (``name`` without ``_total``; use the ``blender_`` prefix).

        Raises:
            ValueError: the name is taken.
        """
        return Counter(name, documentation, list(labelnames), registry=self.registry)

    def exposition(self) -> bytes:
        """Every series, in Prometheus' text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------------------------------- counting
    def backend(self, candidate: str) -> str:
        """The label of a candidate: its backend's config name (``name#2``: ``name``), else :data:`OTHER`."""
        if candidate in self.backends:
            return candidate
        base = candidate.rpartition("#")[0]
        return base if base in self.backends else OTHER

    def request(
        self, *, outcome: str, status: int, stream: bool, seconds: float, first_chunk: float | None
    ) -> None:
        """One chat completion's end: its outcome, status, time and (streamed) time to the first chunk."""
        streamed = "true" if stream else "false"
        self._child(self.requests, outcome, str(status), streamed).inc()
        if outcome == "ok":
            self._child(self.duration, streamed).observe(seconds)
        if first_chunk is not None:
            self.first_token.observe(first_chunk)

    def account(self, account: Mapping[str, Any]) -> None:
        """An answered request, from the ensemble's account (``EnsembleOutcome.metadata()``)."""
        self.candidates(account.get("candidates") or [])
        timings = account.get("timings") or {}
        if "rank_s" in timings:
            self.ranking.observe(timings["rank_s"])
        if account.get("fuser") is not None and "fuse_s" in timings:
            self._child(self.fusions, self.fuser, "fused" if account.get("fused") else "fell_back").inc()
            self._child(self.fusion, self.fuser).observe(timings["fuse_s"])
        self._spent("fusion", self.fuser, account.get("fuser_usage"), account.get("fuser_cost"))
        self._spent("ranking", "ranker", account.get("ranker_usage"), None)

    def records(self, records: Iterable[CandidateRecord]) -> None:
        """A failed request's calls (``EnsembleError.records``)."""
        self.candidates(
            {
                "backend": r.backend,
                "latency_s": r.latency_s,
                "error": r.error,
                "cancelled": r.cancelled,
                "usage": dict(r.answer.usage) if r.answer and r.answer.usage else None,
                "cost": r.cost,
            }
            for r in records
        )

    def candidates(self, candidates: Iterable[Mapping[str, Any]]) -> None:
        """Each call of a request: its outcome, latency, tokens and cost."""
        for c in candidates:
            name = self.backend(str(c.get("backend")))
            error = c.get("error")
            if c.get("cancelled") is not None:
                self._child(self.calls, name, "cancelled").inc()
                continue
            outcome = (
                "ok" if error is None else "timeout" if str(error).startswith("TimeoutError") else "error"
            )
            self._child(self.calls, name, outcome).inc()
            self._child(self.backend_latency, name).observe(float(c.get("latency_s") or 0.0))
            self._spent("candidate", name, c.get("usage"), c.get("cost"))

    def _spent(self, stage: str, backend: str, usage: Mapping[str, Any] | None, cost: float | None) -> None:
        for kind in ("input", "output"):
            tokens = (usage or {}).get(f"{kind}_tokens")
            if tokens:
                self._child(self.tokens, stage, backend, kind).inc(tokens)
        if cost:
            self._child(self.cost, stage, backend).inc(cost)
