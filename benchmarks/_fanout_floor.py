"""The bare fan-out floor of ``serve_load.py``: the least any fan-out server costs.

A FastAPI app on uvicorn (as ``blender-llm serve`` runs) that sends each chat completion to every upstream
at once over one shared ``httpx.AsyncClient`` per upstream, and answers with the longest answer, whole or as
server-sent events (one content chunk, then ``[DONE]``). No ranking, no checks, no accounting: whatever
``blender-llm serve`` costs above this is its own.

    python benchmarks/_fanout_floor.py --port 8001 --upstreams http://127.0.0.1:9001/v1,http://...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse


def create_app(upstreams: list[str], connections: int) -> FastAPI:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    clients = [httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) for url in upstreams]
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    async def ask(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
        r = await client.post("/chat/completions", json=body)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"] or ""

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        stream = bool(body.pop("stream", False))
        answers = await asyncio.gather(*(ask(c, {**body, "model": "m"}) for c in clients))
        text = max(answers, key=len)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body["model"]}
        if not stream:
            message = {"role": "assistant", "content": text}
            reply = {**head, "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
            return Response(json.dumps(reply), media_type="application/json")

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n".encode()

        async def events() -> Any:
            yield event({"role": "assistant", "content": text})
            yield event({}, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstreams", required=True, help="comma-separated base URLs (ending in /v1)")
    parser.add_argument("--connections", type=int, default=64, help="connections per upstream")
    args = parser.parse_args()
    app = create_app(args.upstreams.split(","), args.connections)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
