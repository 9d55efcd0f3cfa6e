"""Keeping keys out of what the server says: its logs, its errors and its responses.

The upstream keys live in the backends' clients only. An upstream may still echo a key (some error bodies
quote the ``Authorization`` header they got), so every error body from an upstream is scrubbed as it
arrives, before the openai client turns it into an exception whose text the engine records and logs
(:func:`redacting_http_client`); what the server sends back and logs is scrubbed once more
(:class:`Redactor`, :class:`RedactingFilter`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

MASK = "***"
# shorter values are not secrets worth masking, and would mask ordinary words
_MIN_SECRET = 8


class Redactor:
    """Replaces every known secret in a text with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # longest first, so that a key containing another is masked whole
        self.secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)
        self._bytes = [s.encode() for s in self.secrets]

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
    """A handler filter that masks secrets in every record it passes (message and arguments, rendered)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor.secrets:
            return True
        message = record.getMessage()
        clean = self.redactor(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = self.redactor(text), None
        return True


def install_log_filter(
    redactor: Redactor, logger_names: Iterable[str] = ("", "uvicorn", "uvicorn.error")
) -> None:
    """Add a :class:`RedactingFilter` to every handler of these loggers (the root and uvicorn's)."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter(redactor))


def redacting_http_client(redactor: Redactor, *, max_connections: int) -> Any:
    """An async HTTP client for the openai SDK that scrubs secrets from every error response body.

    It is the SDK's own default client (its timeouts, redirects and proxy settings from the environment),
    with room for ``max_connections`` upstream calls at once.
    """
    import openai

    base: Any = openai.DefaultAsyncHttpxClient  # httpx.AsyncClient, or httpx2's in openai >= 3

    class _RedactingClient(base):  # type: ignore[misc, valid-type]
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

    client_class = next(c for c in base.__mro__ if c.__name__ == "AsyncClient")
    http = importlib.import_module(client_class.__module__.split(".")[0])  # the HTTP library the SDK uses
    limits = http.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return _RedactingClient(limits=limits)
