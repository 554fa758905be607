"""What one server holds: the engine, its settings, the model gate, the metrics, and the
generations in flight (so a shutdown can end them cleanly)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Set, TypeVar

from .errors import ApiError
from .gate import ModelGate
from .metrics import Metrics

__all__ = ["ServerConfig", "ServerState", "TokenTiming", "Usage", "wait_for_disconnect", "run_until_disconnect",
           "sse_event"]

log = logging.getLogger("llama_harmony.server")
T = TypeVar("T")


class TokenTiming:
    """Time to first token and time between tokens of one request, for the metrics: every
    sampled id of every generation is ticked once (the first as TTFT, from ``start``)."""

    def __init__(self, server: "ServerState", start: float):
        """Timing for one request of ``server`` that arrived at ``start`` (``time.perf_counter()``)."""
        self.server = server
        self.start = start
        self.last: Optional[float] = None

    def tick(self, event: Any) -> None:
        """Note one of the engine's turn events (the final event, ``token=None``, is not a token)."""
        if event.token is None:
            return
        now = time.perf_counter()
        if self.last is None:
            self.server.metrics.ttft.observe(now - self.start)
        else:
            self.server.metrics.tpot.observe(now - self.last)
        self.last = now


@dataclass
class ServerConfig:
    """Settings of an HTTP server (the ``serve`` command's options)."""

    #: The model id the API reports (``/v1/models``, ``model`` in replies).
    model_name: str = "gpt-oss"
    #: Other ids accepted in a request's ``model`` (``--model-alias``).
    aliases: Sequence[str] = ()
    #: API keys (``--api-key``, ``LLAMA_HARMONY_API_KEY``); empty: no authentication.
    api_keys: Sequence[str] = ()
    #: Origins allowed to call the server from a web page (``--cors-origin``); empty: none.
    cors_origins: Sequence[str] = ()
    max_request_bytes: int = 1 << 20
    queue_timeout: float = 300.0
    max_queue: int = 64
    #: Log message content (off: only sizes and counts are logged).
    log_content: bool = False
    #: Seconds a shutdown waits for in-flight requests to end.
    shutdown_timeout: float = 10.0


@dataclass
class Usage:
    """Token counts of one request, added up over its generations (several when built-in
    tools run between them), and the lenient parser's repairs."""

    prompt: int = 0
    cached: int = 0
    completion: int = 0
    reasoning: int = 0
    repairs: List[Any] = field(default_factory=list)

    def add(self, result: Any) -> "Usage":
        """Add one generation's :class:`~llama_harmony.engine.TurnResult`."""
        self.prompt += result.prompt_tokens
        self.cached += result.cached_tokens or 0
        self.completion += result.completion_tokens
        self.reasoning += result.reasoning_tokens
        self.repairs += list(result.repairs)
        return self


class ServerState:
    """Shared by every request of one app (``app.state.server``)."""

    def __init__(self, engine: Any, config: ServerConfig):
        """Set up the ServerState (the parameters are described in the class docstring)."""
        self.engine = engine
        self.config = config
        self.metrics = Metrics()
        self.gate = ModelGate(serial=getattr(engine.backend, "serial", True), queue_timeout=config.queue_timeout,
                              max_queue=config.max_queue, on_change=self.metrics.queue.set)
        stats = getattr(engine.backend, "stats", None)
        if callable(stats):  # gateway mode: per-upstream series
            self.metrics.add_upstreams(stats)
        self.created = int(time.time())
        self.draining = False
        self._turns: Set[Any] = set()
        self._lock = threading.Lock()
        self.extensions: Dict[str, Any] = {}

    # -- model names -------------------------------------------------------------------------

    @property
    def model_ids(self) -> List[str]:
        """The served model id, then its aliases."""
        return [self.config.model_name] + [a for a in self.config.aliases if a != self.config.model_name]

    def check_model(self, requested: Optional[str]) -> None:
        """404 ``model_not_found`` unless ``requested`` is the served model or an alias."""
        if requested is None or requested in self.model_ids:
            return
        served = ", ".join(repr(m) for m in self.model_ids)
        raise ApiError(404, f"model {requested!r} not found; this server serves {served}", param="model",
                       code="model_not_found")

    # -- generations in flight -----------------------------------------------------------------

    def check_open(self) -> None:
        """503 ``shutting_down`` once the server drains."""
        if self.draining:
            raise ApiError(503, "the server is shutting down", code="shutting_down")

    def track(self, turn: Any) -> None:
        """Register a running generation (a shutdown stops it)."""
        with self._lock:
            self._turns.add(turn)
        self.metrics.in_flight.set(len(self._turns))
        if self.draining:
            turn.stop("shutdown")

    def untrack(self, turn: Any) -> None:
        """Forget a finished generation."""
        with self._lock:
            self._turns.discard(turn)
        self.metrics.in_flight.set(len(self._turns))

    def drain(self) -> None:
        """Stop accepting generations and end the running ones at their next token (their
        clients get the output so far with ``finish_reason "length"``)."""
        self.draining = True
        with self._lock:
            turns = list(self._turns)
        for turn in turns:
            turn.stop("shutdown")

    @property
    def in_flight(self) -> int:
        """How many generations are running."""
        return len(self._turns)

    # -- holding the model -----------------------------------------------------------------------

    def release_on_finish(self, turn: Any) -> None:
        """Hand the model on when ``turn`` has let go of it (from whatever thread it ends in)."""
        if not self.gate.serial:
            return
        loop = asyncio.get_running_loop()

        def release() -> None:
            try:
                loop.call_soon_threadsafe(self.gate.release)
            except RuntimeError:  # pragma: no cover - the loop is gone (process exit)
                pass

        turn.when_finished(release)

    def note(self, request: Any, text: str) -> None:
        """Add to the request's log line."""
        request.scope.setdefault("state", {})["log_note"] = text

    def log_content(self, what: str, obj: Any) -> None:
        """Log ``obj`` under ``what`` when content logging is on (``--log-content``)."""
        if self.config.log_content:
            log.info("%s: %s", what, json.dumps(obj, ensure_ascii=False)[:100_000])


async def wait_for_disconnect(receive: Callable[[], Awaitable[Dict[str, Any]]]) -> None:
    """Return when the client has gone (ASGI ``http.disconnect``)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def run_until_disconnect(request: Any, work: Awaitable[T]) -> Optional[T]:
    """Await ``work``; if the client disconnects first, cancel it and return None."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        return None
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


def sse_event(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


