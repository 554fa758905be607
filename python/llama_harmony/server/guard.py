"""The server's front door (an ASGI middleware): authentication, what a request must look like,
and the request log.

In this order, for every HTTP request:

1. ``OPTIONS``: answered here, ``204`` with ``Allow`` and no CORS headers (browsers then
   refuse cross-origin calls). With ``--cors-origin`` set, Starlette's ``CORSMiddleware``
   sits in front and answers preflights from the listed origins itself.
2. API keys (``--api-key``, ``LLAMA_HARMONY_API_KEY``): when any is set, every endpoint but
   ``/health`` needs ``Authorization: Bearer KEY``; otherwise ``401`` (OpenAI-shaped, code
   ``invalid_api_key``). Keys are compared in constant time, every configured key each time.
3. ``POST``: the body must be declared ``application/json`` (``415`` otherwise: a web page
   can only send JSON cross-origin after a CORS preflight, which the server refuses unless
   told otherwise), must have a ``Content-Length`` (``411``) no larger than
   ``max_request_bytes`` (``413``, read and dropped when moderately large so the client gets
   the answer).
4. The log: one line per request (method, path, status, duration, and what the endpoint adds:
   token counts); message content is logged only with ``--log-content``.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, MutableMapping, Optional, Sequence

from .errors import ApiError

__all__ = ["Guard"]

log = logging.getLogger("llama_harmony.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_OPEN_PATHS = ("/health",)
_DRAIN_LIMIT = 16 << 20


def _header(scope: Scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_error(send: Send, err: ApiError, extra_headers: Sequence[tuple] = ()) -> None:
    body = err.json_bytes()
    headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in err.headers.items()]
    headers += list(extra_headers)
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Guard:
    """See the module docstring. ``on_response(endpoint, status, seconds)`` feeds the metrics."""

    def __init__(self, app: Any, *, api_keys: Sequence[str] = (), max_request_bytes: int = 1 << 20,
                 on_response: Optional[Callable[[str, int, float], None]] = None):
        """Set up the Guard (the parameters are described in the class docstring)."""
        self.app = app
        self.api_keys: List[bytes] = [k.encode("utf-8") for k in api_keys if k]
        self.max_request_bytes = int(max_request_bytes)
        self.on_response = on_response

    def _authorized(self, scope: Scope) -> bool:
        if not self.api_keys:
            return True
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        given = token.strip().encode("utf-8") if scheme.lower() == "bearer" else b""
        ok = False
        for key in self.api_keys:  # every key, always: the time does not tell which one matched
            ok |= hmac.compare_digest(given, key)
        return ok and bool(given)

    async def _check(self, scope: Scope, receive: Receive) -> Optional[ApiError]:
        method, path = scope["method"], scope["path"]
        if method == "OPTIONS":
            return ApiError(204, "", headers={"Allow": "GET, POST, DELETE, OPTIONS"})
        if path not in _OPEN_PATHS and not self._authorized(scope):
            return ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                            code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if method == "POST":
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return ApiError(415, f"request bodies must be JSON: send 'Content-Type: application/json' "
                                     f"(got {ctype or 'none'!r})", code="unsupported_media_type")
            raw = _header(scope, b"content-length")
            if raw is None:
                return ApiError(411, f"a Content-Length header is required (request bodies are limited to "
                                     f"{self.max_request_bytes} bytes)", code="length_required")
            try:
                length = int(raw.strip())
                if length < 0:
                    raise ValueError
            except ValueError:
                return ApiError(400, f"invalid Content-Length {raw!r}", code="invalid_content_length")
            if length > self.max_request_bytes:
                if length <= _DRAIN_LIMIT:
                    await _drain(receive)
                return ApiError(413, f"request body of {length} bytes exceeds the limit of "
                                     f"{self.max_request_bytes} bytes (--max-request-bytes)",
                                code="request_too_large")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: Dict[str, int] = {"code": 0}
        scope.setdefault("state", {})

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        err = await self._check(scope, receive)
        try:
            if err is not None:
                if err.status == 204:
                    await send({"type": "http.response.start", "status": 204,
                                "headers": [(b"allow", err.headers["Allow"].encode())]})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    status["code"] = 204
                else:
                    status["code"] = err.status
                    await _send_error(send, err)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            elapsed = time.perf_counter() - start
            endpoint = scope.get("state", {}).get("endpoint") or _endpoint_of(scope["path"])
            note = scope.get("state", {}).get("log_note", "")
            log.info("%s %s %s %d %.3fs%s", _client(scope), scope["method"], scope["path"], status["code"] or 499,
                     elapsed, f" {note}" if note else "")
            if self.on_response is not None:
                self.on_response(endpoint, status["code"] or 499, elapsed)


async def _drain(receive: Receive) -> None:
    """Read and drop the request body (so the client reads the error instead of a reset)."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


_KNOWN = ("/v1/chat/completions", "/v1/responses", "/v1/models", "/health", "/metrics", "/docs", "/openapi.json")


def _endpoint_of(path: str) -> str:
    """A bounded label for metrics (no unbounded ids in label values)."""
    for known in _KNOWN:
        if path == known or path.startswith(known + "/"):
            return known
    return "other"
