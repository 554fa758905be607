"""An OpenAI-compatible HTTP server for gpt-oss on llama.cpp, on the standard library only.

Endpoints:

* ``POST /v1/chat/completions``: a chat.completion JSON object, or Server-Sent Events when
  ``"stream": true`` (``data: {chunk}\\n\\n`` ... ``data: [DONE]\\n\\n``). Replies carry
  ``message.reasoning_content`` (and ``reasoning``) besides ``content`` and ``tool_calls``.
  A per-request ``reasoning_effort`` (top level, or ``"reasoning": {"effort": ...}``) reaches
  the engine.
* ``GET /v1/models`` and ``GET /v1/models/{id}``: the one served model.
* ``GET /health``: ``{"status": "ok", ...}``.

One model, one request at a time: requests wait for the model in arrival order, for at most
``queue_timeout`` seconds (then ``503``), and at most ``max_queue`` of them wait at once.
Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``. Request bodies
need a ``Content-Length`` no larger than ``max_request_bytes`` (else ``413``). A client that
disconnects while its answer streams stops the generation and frees the model for the next
request.

    from llama_harmony.engine import HarmonyEngine
    from llama_harmony.server import make_server, serve_forever

    engine = HarmonyEngine.from_path("gpt-oss-20b.gguf")
    server = make_server(engine, "127.0.0.1", 8000, model_name="gpt-oss-20b")
    serve_forever(server)        # or threading.Thread(target=server.serve_forever).start()
"""

from __future__ import annotations

import json
import logging
import math
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_QUEUE_TIMEOUT",
    "ApiError",
    "HarmonyHTTPServer",
    "make_server",
    "serve_forever",
]

log = logging.getLogger("llama_harmony.server")

#: Default cap on a request body (1 MiB: far more than an 8k-token context of text).
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
#: Default time a request waits for the model before it gets ``503``.
DEFAULT_QUEUE_TIMEOUT = 300.0
#: Default number of requests allowed to wait for the model at once (more get ``503``).
DEFAULT_MAX_QUEUE = 64

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_EFFORTS = ("low", "medium", "high")
_DISCONNECT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout)

LogitsProcessorFactory = Callable[[Dict[str, Any]], Any]


class ApiError(Exception):
    """An error answered to the client as OpenAI-shaped JSON."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------------------
# Exceptions of the engine, mapped to 400 (imported lazily: the engine pulls in llama_cpp)
# ------------------------------------------------------------------------------------------------

def _client_error_classes() -> Dict[str, Tuple[type, ...]]:
    out: Dict[str, Tuple[type, ...]] = {}
    try:
        from . import LimitExceeded, HarmonyError
        out["limit_exceeded"] = (LimitExceeded,)
        out["harmony_error"] = (HarmonyError,)
    except Exception:  # pragma: no cover - the native core is missing
        pass
    try:
        from .engine import ContextOverflowError
        out["context_length_exceeded"] = (ContextOverflowError,)
    except Exception:
        pass
    try:
        from .openai_request import OpenAIFormatError
        out["invalid_messages"] = (OpenAIFormatError,)
    except Exception:
        pass
    return out


def _map_engine_error(exc: BaseException, classes: Dict[str, Tuple[type, ...]]) -> ApiError:
    """400 for what the client can fix (limits, context overflow, bad messages); 500 otherwise."""
    msg = str(exc) or type(exc).__name__
    for code in ("context_length_exceeded", "limit_exceeded", "invalid_messages", "harmony_error"):
        if code in classes and isinstance(exc, classes[code]):
            return ApiError(400, msg, param=getattr(exc, "param", None) or ("messages" if code != "limit_exceeded" else None),
                            code=code)
    log.exception("unexpected error while generating")
    return ApiError(500, f"internal error: {type(exc).__name__}: {msg}", type="server_error", code="internal_error")


# ------------------------------------------------------------------------------------------------
# Request validation
# ------------------------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(body: Dict[str, Any], name: str, lo: float, hi: float) -> Optional[float]:
    v = body.get(name)
    if v is None:
        return None
    if not _is_number(v) or not lo <= v <= hi:
        raise ApiError(400, f"'{name}' must be a number between {lo:g} and {hi:g}, got {v!r}", param=name,
                       code="invalid_value")
    return float(v)


def _integer(body: Dict[str, Any], name: str, lo: int, hi: Optional[int] = None) -> Optional[int]:
    v = body.get(name)
    if v is None:
        return None
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        bound = f"an integer >= {lo}" if hi is None else f"an integer between {lo} and {hi}"
        raise ApiError(400, f"'{name}' must be {bound}, got {v!r}", param=name, code="invalid_value")
    return v


def parse_chat_request(body: Any) -> Dict[str, Any]:
    """Check a chat-completions request body and return the engine's keyword arguments
    (``messages`` included). Raises :class:`ApiError` (400) naming the bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    messages = body.get("messages")
    if messages is None:
        raise ApiError(400, "'messages' is required", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array", param="messages", code="invalid_value")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object", param=f"messages[{i}]", code="invalid_value")
        role = m.get("role")
        if role not in _ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(_ROLES)}; got {role!r}",
                           param=f"messages[{i}].role", code="invalid_value")

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream", code="invalid_value")
    n = body.get("n")
    if n is not None and n != 1:
        raise ApiError(400, "only n=1 is supported", param="n", code="invalid_value")

    effort = body.get("reasoning_effort")
    param = "reasoning_effort"
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort, param = body["reasoning"].get("effort"), "reasoning.effort"
    elif body.get("reasoning") is not None and not isinstance(body.get("reasoning"), dict):
        raise ApiError(400, "'reasoning' must be an object like {\"effort\": \"low\"}", param="reasoning",
                       code="invalid_value")
    if effort is not None:
        if not isinstance(effort, str) or effort.lower() not in _EFFORTS:
            raise ApiError(400, f"'{param}' must be one of low, medium, high; got {effort!r}", param=param,
                           code="invalid_value")
        effort = effort.lower()

    kw: Dict[str, Any] = {"messages": messages, "stream": stream, "reasoning_effort": effort}
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    kw["max_tokens"] = max_tokens
    for name, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("min_p", 0.0, 1.0),
                         ("repeat_penalty", 0.0, 10.0)):
        v = _number(body, name, lo, hi)
        if v is not None:
            kw[name] = v
    top_k = _integer(body, "top_k", 0)
    if top_k is not None:
        kw["top_k"] = top_k
    seed = body.get("seed")
    if seed is not None:
        if not _is_int(seed):
            raise ApiError(400, "'seed' must be an integer", param="seed", code="invalid_value")
        kw["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 16:
            raise ApiError(400, "'stop' must be a string or an array of at most 16 strings", param="stop",
                           code="invalid_value")
        kw["stop"] = stop
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise ApiError(400, "'tools' must be an array of objects", param="tools", code="invalid_value")
        kw["tools"] = tools
    if body.get("tool_choice") is not None:
        tc = body["tool_choice"]
        if not isinstance(tc, (str, dict)):
            raise ApiError(400, "'tool_choice' must be a string or an object", param="tool_choice",
                           code="invalid_value")
        kw["tool_choice"] = tc
    for name in ("response_format", "stream_options"):
        v = body.get(name)
        if v is not None:
            if not isinstance(v, dict):
                raise ApiError(400, f"'{name}' must be an object", param=name, code="invalid_value")
            kw[name] = v
    return kw


# ------------------------------------------------------------------------------------------------
# Server
# ------------------------------------------------------------------------------------------------

class HarmonyHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server holding one engine; requests take turns on the model."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], engine: Any, *, model_name: str,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
                 max_queue: int = DEFAULT_MAX_QUEUE,
                 read_timeout: float = 60.0,
                 logits_processor_factory: Optional[LogitsProcessorFactory] = None):
        if max_request_bytes < 1:
            raise ValueError("max_request_bytes must be positive")
        self.engine = engine
        self.model_name = model_name
        self.max_request_bytes = int(max_request_bytes)
        self.queue_timeout = float(queue_timeout)
        self.max_queue = int(max_queue)
        self.read_timeout = float(read_timeout)
        self.logits_processor_factory = logits_processor_factory
        self.created = int(time.time())
        self.model_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.waiting = 0
        self.served = 0
        self.disconnects = 0
        self.error_classes = _client_error_classes()
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (reset, broken pipe, timeout) is routine: count it, no
        traceback. Anything else is printed as socketserver does."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            with self._stats_lock:
                self.disconnects += 1
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host = self.server_address[0]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # -- taking turns on the model ----------------------------------------------------------

    def acquire_model(self) -> None:
        with self._stats_lock:
            if self.model_lock.locked() and self.waiting >= self.max_queue:
                raise ApiError(503, f"server busy: {self.waiting} requests are already waiting for the model "
                                    f"(max_queue={self.max_queue})", type="server_error", code="server_busy",
                               headers={"Retry-After": "1"})
            self.waiting += 1
        try:
            ok = self.model_lock.acquire(timeout=self.queue_timeout)
        finally:
            with self._stats_lock:
                self.waiting -= 1
        if not ok:
            raise ApiError(503, f"server busy: waited {self.queue_timeout:g} s for the model (queue_timeout)",
                           type="server_error", code="server_busy", headers={"Retry-After": "1"})

    def count_disconnect(self) -> None:
        with self._stats_lock:
            self.disconnects += 1

    def release_model(self) -> None:
        with self._stats_lock:
            self.served += 1
        self.model_lock.release()


def make_server(engine: Any, host: str = "127.0.0.1", port: int = 8000, *, model_name: str = "gpt-oss",
                max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                queue_timeout: float = DEFAULT_QUEUE_TIMEOUT, max_queue: int = DEFAULT_MAX_QUEUE,
                read_timeout: float = 60.0,
                logits_processor_factory: Optional[LogitsProcessorFactory] = None) -> HarmonyHTTPServer:
    """Bind an OpenAI-compatible server for ``engine`` (a :class:`~llama_harmony.engine.HarmonyEngine`
    or anything with its ``create_chat_completion``) and return it, not yet serving.

    ``port=0`` picks a free port (see ``server.port``). ``logits_processor_factory``, if given,
    is called with each request's JSON body and may return a logits processor passed to the
    engine (tests use it to force exact token sequences on a random-weight model).
    Call ``server.serve_forever()`` (e.g. in a thread), then ``server.shutdown()`` and
    ``server.server_close()``; or :func:`serve_forever`.
    """
    return HarmonyHTTPServer((host, port), engine, model_name=model_name, max_request_bytes=max_request_bytes,
                             queue_timeout=queue_timeout, max_queue=max_queue, read_timeout=read_timeout,
                             logits_processor_factory=logits_processor_factory)


def serve_forever(server: HarmonyHTTPServer, *, poll_interval: float = 0.5) -> None:
    """Serve until Ctrl-C (or ``server.shutdown()`` from another thread), then close the socket."""
    try:
        server.serve_forever(poll_interval=poll_interval)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HarmonyHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.read_timeout
        super().setup()

    @property
    def server_version(self) -> str:  # type: ignore[override]
        try:
            from . import __version__
        except Exception:  # pragma: no cover
            __version__ = "0"
        return f"llama-harmony/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), format % args)

    # -- responses --------------------------------------------------------------------------

    def _send_json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_api_error(self, err: ApiError) -> None:
        try:
            self._send_json(err.status, err.body(), err.headers)
        except _DISCONNECT_ERRORS + (OSError,):
            self.close_connection = True

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Protocol-level errors (bad request line, unsupported method...) as OpenAI-shaped JSON."""
        try:
            short, _long = self.responses.get(code, ("Error", ""))
        except Exception:  # pragma: no cover
            short = "Error"
        self.close_connection = True
        kind = "invalid_request_error" if code < 500 else "server_error"
        err = ApiError(code, message or short, type=kind, code=short.lower().replace(" ", "_"))
        self._send_api_error(err)

    # -- routing ----------------------------------------------------------------------------

    def _path(self) -> str:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        return path

    def do_GET(self) -> None:  # noqa: N802
        path = self._path()
        try:
            if path == "/health":
                srv = self.server
                self._send_json(200, {"status": "ok", "model": srv.model_name, "busy": srv.model_lock.locked(),
                                      "waiting": srv.waiting, "served": srv.served})
            elif path == "/v1/models":
                self._send_json(200, {"object": "list", "data": [self._model_card()]})
            elif path.startswith("/v1/models/"):
                name = path[len("/v1/models/"):]
                if name != self.server.model_name:
                    raise ApiError(404, f"model {name!r} not found; this server serves {self.server.model_name!r}",
                                   param="model", code="model_not_found")
                self._send_json(200, self._model_card())
            elif path == "/v1/chat/completions":
                raise ApiError(405, "use POST for /v1/chat/completions", code="method_not_allowed",
                               headers={"Allow": "POST"})
            else:
                raise ApiError(404, f"no route for GET {path}", code="not_found")
        except ApiError as e:
            self._send_api_error(e)
        except _DISCONNECT_ERRORS:
            self.close_connection = True

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        try:
            if path in ("/v1/chat/completions", "/chat/completions"):
                self._chat_completions()
            else:
                # The body is not read: close the connection after answering.
                self.close_connection = True
                if path in ("/health", "/v1/models"):
                    raise ApiError(405, f"use GET for {path}", code="method_not_allowed", headers={"Allow": "GET"})
                raise ApiError(404, f"no route for POST {path}", code="not_found")
        except ApiError as e:
            self._send_api_error(e)
        except _DISCONNECT_ERRORS:
            self.close_connection = True

    def _model_card(self) -> Dict[str, Any]:
        return {"id": self.server.model_name, "object": "model", "created": self.server.created,
                "owned_by": "llama-harmony"}

    # -- chat completions -------------------------------------------------------------------

    def _read_json_body(self) -> Any:
        limit = self.server.max_request_bytes
        te = self.headers.get("Transfer-Encoding")
        if te and te.strip().lower() != "identity":
            self.close_connection = True
            raise ApiError(400, "chunked request bodies are not supported: send a Content-Length header "
                                f"(at most {limit} bytes)", code="length_required")
        raw_len = self.headers.get("Content-Length")
        if raw_len is None:
            self.close_connection = True
            raise ApiError(400, f"a Content-Length header is required (request bodies are limited to {limit} bytes)",
                           code="length_required")
        try:
            length = int(raw_len.strip())
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"invalid Content-Length {raw_len!r}", code="invalid_content_length") from None
        if length > limit:
            # Read and drop a moderately oversized body so the client reliably gets the answer
            # (closing on unread data can reset the connection before it reads the 413).
            if not self._discard(length):
                self.close_connection = True
            raise ApiError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes "
                                f"(max_request_bytes)", code="request_too_large")
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            self.close_connection = True
            raise ApiError(400, f"request body ended after {len(data)} of {length} bytes", code="incomplete_body")
        try:
            return json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ApiError(400, f"request body is not valid UTF-8: {e}", code="invalid_json") from None
        except json.JSONDecodeError as e:
            raise ApiError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
        except RecursionError:
            raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None

    def _discard(self, length: int, bound: int = 16 << 20) -> bool:
        """Read and drop ``length`` body bytes (at most ``bound``); True if all were read."""
        if length > bound:
            return False
        left = length
        try:
            while left > 0:
                data = self.rfile.read(min(left, 1 << 16))
                if not data:
                    return False
                left -= len(data)
        except OSError:
            return False
        return True

    def _client_gone(self) -> bool:
        """True if the client closed its end (checked without blocking)."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _chat_completions(self) -> None:
        srv = self.server
        body = self._read_json_body()
        kw = parse_chat_request(body)
        messages = kw.pop("messages")
        stream = kw.pop("stream")
        kw["model"] = srv.model_name
        if srv.logits_processor_factory is not None:
            proc = srv.logits_processor_factory(body)
            if proc is not None:
                kw["logits_processor"] = proc

        srv.acquire_model()
        try:
            if self._client_gone():
                srv.count_disconnect()
                self.close_connection = True
                return
            if stream:
                self._stream(messages, kw)
                return
            try:
                result = srv.engine.create_chat_completion(messages, stream=False, **kw)
            except ApiError:
                raise
            except Exception as e:  # noqa: BLE001 - mapped to 400/500
                raise _map_engine_error(e, srv.error_classes) from None
        finally:
            srv.release_model()
        self._send_json(200, result)

    def _stream(self, messages: Any, kw: Dict[str, Any]) -> None:
        """Stream chunks as SSE. Called with the model held; errors before the first chunk
        become ordinary JSON errors, later ones an SSE ``error`` event."""
        srv = self.server
        it: Optional[Iterator[Dict[str, Any]]] = None
        try:
            try:
                it = iter(srv.engine.create_chat_completion(messages, stream=True, **kw))
                first: Optional[Dict[str, Any]] = next(it, None)
            except Exception as e:  # noqa: BLE001
                raise _map_engine_error(e, srv.error_classes) from None

            chunked = self.request_version >= "HTTP/1.1"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.close_connection = True
                self.send_header("Connection", "close")
            self.end_headers()

            def write(data: bytes) -> None:
                if chunked:
                    self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)

            def event(obj: Any) -> bytes:
                return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

            try:
                if first is not None:
                    write(event(first))
                    for chunk in it:
                        if self._client_gone():
                            raise ConnectionResetError("client disconnected")
                        write(event(chunk))
            except _DISCONNECT_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - headers are sent: report in-band
                err = _map_engine_error(e, srv.error_classes)
                write(event(err.body()))
                self.close_connection = True
            write(b"data: [DONE]\n\n")
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except _DISCONNECT_ERRORS:
            srv.count_disconnect()
            self.close_connection = True
            log.info("%s disconnected during a stream; generation stopped", self.address_string())
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()  # stops the generation (GeneratorExit inside the engine)
                except Exception:  # pragma: no cover - best effort
                    log.exception("closing the generation failed")
