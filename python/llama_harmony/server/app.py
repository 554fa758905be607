"""The FastAPI application: routes, error handlers and middleware around one engine.

    from llama_harmony.server import ServerConfig, create_app
    app = create_app(engine, ServerConfig(model_name="gpt-oss-20b", api_keys=["secret"]))
    # run it with uvicorn, or llama_harmony.server.serve(app, host, port)
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

from .. import __version__
from .chat import chat_completions
from .errors import ApiError, errors_of, from_exception, validation_error
from .guard import Guard
from .metrics import CONTENT_TYPE
from .responses import ResponsesRuntime, create_response, delete_response, get_response
from .schemas import ChatCompletionRequest, ResponseRequest
from .state import ServerConfig, ServerState

__all__ = ["create_app"]


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def create_app(engine: Any, config: Optional[ServerConfig] = None, *,
               responses: Optional[ResponsesRuntime] = None) -> FastAPI:
    """An OpenAI-compatible app serving ``engine`` (a :class:`~llama_harmony.engine.HarmonyEngine`).

    ``responses``: the Responses API's store and built-in tools (default: an in-memory store,
    no built-in tools)."""
    config = config or ServerConfig(model_name=getattr(engine, "model_name", "gpt-oss"))
    server = ServerState(engine, config)
    server.extensions["responses"] = responses or ResponsesRuntime()
    app = FastAPI(title="llama-harmony", version=__version__,
                  description="OpenAI-compatible API for gpt-oss with exact Harmony rendering and parsing.")
    app.state.server = server

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(validation_error(errors_of(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route for {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed for {request.url.path}"
        elif exc.status_code == 400:
            message = f"the request body could not be read: {exc.detail}"
        return _error_response(ApiError(exc.status_code, message, code=codes.get(exc.status_code),
                                        headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(from_exception(exc))

    @app.get("/health", summary="Liveness and load (no authentication)")
    async def health() -> dict:
        gate = server.gate
        return {"status": "draining" if server.draining else "ok", "model": config.model_name,
                "backend": getattr(engine.backend, "kind", "?"), "busy": gate.busy or server.in_flight > 0,
                "waiting": gate.waiting, "in_flight": server.in_flight, "served": gate.served}

    def card(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": server.created, "owned_by": "llama-harmony"}

    @app.get("/v1/models", summary="The served model (and its aliases)")
    async def models() -> dict:
        return {"object": "list", "data": [card(m) for m in server.model_ids]}

    @app.get("/v1/models/{model_id:path}", summary="One model")
    async def model(model_id: str) -> dict:
        server.check_model(model_id)
        return card(model_id)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    async def _chat(request: Request, body: ChatCompletionRequest) -> Response:
        request.scope.setdefault("state", {})["endpoint"] = "/v1/chat/completions"
        return await chat_completions(request, body)

    app.add_api_route("/v1/chat/completions", _chat, methods=["POST"], summary="Chat completions (OpenAI)",
                      response_model=None)
    app.add_api_route("/chat/completions", _chat, methods=["POST"], include_in_schema=False, response_model=None)

    async def _responses(request: Request, body: ResponseRequest) -> Response:
        request.scope.setdefault("state", {})["endpoint"] = "/v1/responses"
        return await create_response(request, body)

    async def _get_response(request: Request, response_id: str) -> Response:
        return await get_response(request, response_id)

    async def _delete_response(request: Request, response_id: str) -> Response:
        return await delete_response(request, response_id)

    app.add_api_route("/v1/responses", _responses, methods=["POST"], summary="Create a response (Responses API)",
                      response_model=None)
    app.add_api_route("/v1/responses/{response_id}", _get_response, methods=["GET"],
                      summary="A stored response", response_model=None)
    app.add_api_route("/v1/responses/{response_id}", _delete_response, methods=["DELETE"],
                      summary="Delete a stored response", response_model=None)

    def on_response(endpoint: str, status: int, seconds: float) -> None:
        server.metrics.requests.labels(endpoint, str(status)).inc()
        server.metrics.duration.labels(endpoint).observe(seconds)

    app.add_middleware(Guard, api_keys=list(config.api_keys), max_request_bytes=config.max_request_bytes,
                       on_response=on_response)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "OpenAI-Organization", "OpenAI-Project",
                                          "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS",
                                          "X-Stainless-Arch", "X-Stainless-Runtime",
                                          "X-Stainless-Runtime-Version", "X-Stainless-Retry-Count",
                                          "X-Stainless-Timeout"],
                           max_age=600)
    return app
