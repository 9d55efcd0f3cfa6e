"""What ``blender-llm serve`` serves, said once when it starts listening: the URL, the backends, the ranker,
the fuser, the limits, whether keys are required (the variables' names, never the keys) and where the
metrics are.

Example:
    >>> from blender_core.app.serve.config import parse_config
    >>> backends = [{"name": "gpt", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]
    >>> print(startup_block(parse_config({"backends": backends}), api_url="http://127.0.0.1:8000"))
    ... # doctest: +NORMALIZE_WHITESPACE
    blender-llm serve: listening on http://127.0.0.1:8000/v1 (model "blender-llm")
      backends  gpt  openai  m
      ranker    llm-blender/PairRM (the default)
      fuser     none: the top-ranked answer is returned
      limits    max_running 32, max_in_flight 256, request_timeout 120 s, backend timeout 30 s,
                shutdown_timeout 120 s
      keys      not required (no [server] api_key_envs: loopback only)
      metrics   http://127.0.0.1:8000/metrics (no keys)
      stop      Ctrl-C or SIGTERM: the requests in flight finish, then exit 0; a second one stops at once (exit 1)
"""

from __future__ import annotations

from blender_core.app.serve.config import HuggingFaceBackend, OpenAIBackend, ServeConfig
from blender_core.ranking.registry import DEFAULT_RANKER


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


def _backend(b: OpenAIBackend | HuggingFaceBackend) -> list[str]:
    """The backend's name, kind, model, and its ensemble settings where they are not the defaults."""
    extra = []
    if b.tier != 1:
        extra.append(f"tier {b.tier}")
    if b.samples != 1:
        extra.append(f"{b.samples} samples")
    if b.price_in is not None or b.price_out is not None:
        extra.append(f"price {b.price_in} in / {b.price_out} out per 1M tokens")
    return [b.name, b.kind, b.model, ", ".join(extra)]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def url(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def metrics_url(config: ServeConfig, api_url: str) -> str | None:
    """Where ``GET /metrics`` is served, for a server at ``api_url`` (None: ``metrics = "off"``)."""
    s = config.server
    if s.metrics == "port" and s.metrics_port is not None:
        return f"{url(s.metrics_host, s.metrics_port)}/metrics"
    return f"{api_url}/metrics" if s.metrics == "api" else None


def startup_block(config: ServeConfig, *, api_url: str) -> str:
    """The start-up block of a server listening at ``api_url`` (``http://host:port``)."""
    e, limits, server = config.ensemble, config.limits, config.server
    ranker = e.ranker if e.ranker is not None else f"{DEFAULT_RANKER} (the default)"
    fuser = f"{e.fuser} (fuses the top {e.top_k})" if e.fuser else "none: the top-ranked answer is returned"
    limit = (
        f"max_running {limits.max_running}, max_in_flight {limits.max_in_flight}, request_timeout "
        f"{_seconds(limits.request_timeout)}, backend timeout {_seconds(e.timeout)}, shutdown_timeout "
        f"{_seconds(config.shutdown_timeout)}"
    )
    names = server.api_key_envs
    keys = (
        f"required (Authorization: Bearer; {len(names)} accepted, from {', '.join(names)})"
        if names
        else "not required (no [server] api_key_envs: loopback only)"
    )
    at = metrics_url(config, api_url)
    if at is None:
        metrics = "off"
    elif server.metrics == "api":
        metrics = f"{at} ({'the same keys as the API' if names else 'no keys'})"
    else:
        metrics = f"{at} (a listener of its own, no keys)"
    rows = _table([_backend(b) for b in config.backends])
    lines = [f'blender-llm serve: listening on {api_url}/v1 (model "{server.model_name}")']
    lines += [f"  {'backends' if k == 0 else '':8}  {row}" for k, row in enumerate(rows)]
    lines += [
        f"  ranker    {ranker}",
        f"  fuser     {fuser}",
        f"  limits    {limit}",
        f"  keys      {keys}",
        f"  metrics   {metrics}",
        "  stop      Ctrl-C or SIGTERM: the requests in flight finish, then exit 0; a second one stops at once "
        "(exit 1)",
    ]
    return "\n".join(lines)
