"""``blender-llm serve``: the ensemble as an OpenAI-compatible server (FastAPI over the LangChain
``BlenderLLM``), laid out as vLLM's ``entrypoints/openai/``.

- :mod:`~blender_core.app.serve.config`: the TOML config, validated (no server package needed).
- :mod:`~blender_core.app.serve.protocol`: the wire format: a typed request, and responses as the
  ``openai`` package's own ``ChatCompletion`` / ``ChatCompletionChunk`` / ``CompletionUsage``.
- :mod:`~blender_core.app.serve.serving`: one chat completion: its deadline, the client leaving, the stream.
- :mod:`~blender_core.app.serve.routes`: the routes, on a module-level router reading the app's state.
- :mod:`~blender_core.app.serve.guard`: keys, admission and the body limit (ASGI middleware).
- :mod:`~blender_core.app.serve.admission`: which chat completions run, wait for a slot, or are refused.
- :mod:`~blender_core.app.serve.app`: ``create_app``: the app, its state, the router and the guard.
- :mod:`~blender_core.app.serve.backends`: the served ensemble, built from the config.
- :mod:`~blender_core.app.serve.upstream`: an OpenAI-compatible endpoint as a chat model, on one shared
  ``httpx`` client per endpoint (the ``kind = "openai"`` backends).
- :mod:`~blender_core.app.serve.redaction`: keys kept out of logs, errors and responses.
- :mod:`~blender_core.app.serve.run`: where it may listen, and uvicorn with a graceful shutdown.
- :mod:`~blender_core.app.serve.startup`: why it could not start, in one line in the config's terms.
- :mod:`~blender_core.app.serve.summary`: the start-up block (what it serves).
- :mod:`~blender_core.app.serve.metrics`: the Prometheus series and how a request counts in them;
  :mod:`~blender_core.app.serve.metrics_http`: the metering middleware, ``GET /metrics``, its own port.

Nothing is imported here, so that the config can be read without the ``[serve]`` extra.
"""
