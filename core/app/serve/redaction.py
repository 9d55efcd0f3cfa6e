"""Keeping keys out of what the server says: its logs, its errors and its responses.

The upstream keys live in the backends' clients only. An upstream may still echo a key (some error bodies
quote the ``Authorization`` header they got, and a careless or hostile one may quote it in an answer), so
every error body from an upstream is scrubbed as it arrives, before the backend turns it into an
exception whose text the engine records and logs (:func:`redacting_http_client`); everything the server
sends back (answers, tool calls, the account, errors, streamed pieces) and every log line is scrubbed of
every configured key, server's and upstreams' (:class:`Redactor`, :class:`RedactingFilter`). Keys shorter
than :data:`~blender_core.app.serve.config.MIN_KEY_CHARS` are refused when the server starts, so masking
never mangles ordinary text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"


def _written(secret: str) -> set[str]:
    """The ways a secret may be written: as it is, percent-encoded in a URL (as a client may send a key in
    a query string), and escaped inside a JSON string."""
    return {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }


class Redactor:
    """Replaces every known secret in a text with ``***``, however it is written (:func:`_written`)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # longest first, so that a key containing another is masked whole
        written = {w for s in secrets if s for w in _written(s)}
        self.secrets = sorted(written, key=len, reverse=True)
        self._bytes = [s.encode() for s in self.secrets]

    def partial_end(self, text: str) -> int:
        """The length of the longest end of ``text`` that is the beginning of a secret (0: none): what a
        stream must hold back until more text shows whether a secret follows."""
        found = 0
        for secret in self.secrets:
            for k in range(min(len(text), len(secret) - 1), found, -1):
                if text.endswith(secret[:k]):
                    found = k
                    break
        return found

    def tree(self, value: Any) -> Any:
        """JSON-like data (dicts, lists, tuples as lists) with every string in it scrubbed."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {k: self.tree(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.tree(v) for v in value]
        return value

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def data(self, raw: bytes) -> bytes:
        """The bytes with every secret (UTF-8) masked."""
        for secret in self._bytes:
            if secret in raw:
                raw = raw.replace(secret, MASK.encode())
        return raw

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self(text)


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in every record it passes: its message, its arguments (each in
    place, so that formatters that read them, as uvicorn's access formatter does, still work), and its
    traceback."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor
        if not redact.secrets:
            return True
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it; nothing of it is shown here
            return True
        clean = redact(message)
        if clean != message:  # a secret inside an argument that is not a string
            record.msg, record.args = clean, None
            record.__dict__.pop("color_message", None)
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_filter(redactor: Redactor) -> None:
    """Add a :class:`RedactingFilter` to every handler there is: the root logger's and every other logger's
    (uvicorn's error and access logs included), so that no log line shows a secret, even one a client put
    in a URL. Call it once logging is set up (uvicorn sets its handlers up when its config is made)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # placeholders have none
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter(redactor))


def redacting_http_client(redactor: Redactor, *, max_connections: int, **options: Any) -> Any:
    """An ``httpx.AsyncClient`` that scrubs secrets from every error response body, with room for
    ``max_connections`` upstream calls at once (each kept alive for the next); ``options`` (``base_url``,
    ``headers``, ``timeout``) go to the client. Redirects are followed, and proxies are read from the
    environment, as the ``openai`` SDK's client does.
    """
    import httpx

    class _RedactingClient(httpx.AsyncClient):
        async def send(self, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
            response = await super().send(request, stream=stream, **kwargs)
            if response.status_code < 400:
                return response
            try:  # error bodies are small; read, scrub, and hand on a response holding the clean body
                body = redactor.data(await response.aread())
            finally:
                await response.aclose()
            headers = [
                (k, v)
                for k, v in response.headers.multi_items()
                if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
            ]
            return type(response)(response.status_code, headers=headers, content=body, request=request)

    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return _RedactingClient(limits=limits, follow_redirects=True, **options)
