"""An OpenAI-compatible HTTP server for gpt-oss (FastAPI + uvicorn; the ``[server]`` extra).

Endpoints: ``POST /v1/chat/completions`` (JSON, or server-sent events with ``"stream":
true``), ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health`` (no authentication),
``GET /metrics`` (Prometheus), ``/openapi.json`` and ``/docs``. Errors are OpenAI-shaped:
``{"error": {"message", "type", "param", "code"}}``.

    from llama_harmony.engine import HarmonyEngine
    from llama_harmony.server import ServerConfig, create_app, serve

    engine = HarmonyEngine.from_path("gpt-oss-20b.gguf")
    app = create_app(engine, ServerConfig(model_name="gpt-oss-20b", api_keys=["secret"]))
    serve(app, "127.0.0.1", 8000)          # until SIGTERM / Ctrl-C (graceful)

Modules: :mod:`.app` (routes), :mod:`.chat` (chat completions), :mod:`.schemas` (request
models), :mod:`.guard` (API keys, content type, sizes, the request log), :mod:`.gate` (one
generation at a time on an in-process model), :mod:`.metrics`, :mod:`.errors`, :mod:`.state`,
:mod:`.run` (uvicorn, graceful shutdown).
"""

from .app import create_app
from .errors import ApiError
from .run import BackgroundServer, bind, is_loopback, serve
from .responses import ResponsesRuntime
from .state import ServerConfig, ServerState

__all__ = ["ApiError", "BackgroundServer", "ResponsesRuntime", "ServerConfig", "ServerState", "bind", "create_app", "is_loopback", "serve"]
