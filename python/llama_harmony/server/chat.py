"""``POST /v1/chat/completions``: a chat.completion JSON object, or server-sent events.

The request is validated (:mod:`.schemas`) and rendered before it waits for the model, so a
bad request gets its ``400`` at once. Then it takes its turn (:mod:`.gate`), generates in a
worker thread (:meth:`~llama_harmony.engine.Turn.aevents`) and streams one SSE event per
parser delta. A client that leaves — while waiting, while its answer streams, or while a
non-streamed answer is being generated — stops its generation at the next token.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Dict, List, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .errors import from_exception
from .schemas import ChatCompletionRequest
from .state import ServerState, run_until_disconnect, sse_event

__all__ = ["chat_completions", "sampling_kwargs"]

DONE = b"data: [DONE]\n\n"


def sampling_kwargs(body: ChatCompletionRequest) -> Dict[str, Any]:
    """The engine's sampling keywords for a request."""
    kw: Dict[str, Any] = {"max_tokens": body.max_completion_tokens or body.max_tokens}
    for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty",
                 "frequency_penalty", "seed", "stop"):
        value = getattr(body, name)
        if value is not None:
            kw[name] = value
    if body.logit_bias:
        kw["logit_bias"] = {int(k): v for k, v in body.logit_bias.items()}
    if body.logprobs:
        kw["logprobs"] = True
        kw["top_logprobs"] = body.top_logprobs or 0
    elif body.top_logprobs is not None:
        from .errors import ApiError

        raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs", code="invalid_value")
    return kw


class _Timing:
    """Time to first token and time per token, for the metrics."""

    def __init__(self, server: ServerState, start: float):
        self.server = server
        self.start = start
        self.last: Optional[float] = None

    def tick(self, event: Any) -> None:
        if event.token is None:
            return
        now = time.perf_counter()
        if self.last is None:
            self.server.metrics.ttft.observe(now - self.start)
        else:
            self.server.metrics.tpot.observe(now - self.last)
        self.last = now


def _record(server: ServerState, request: Request, req: Any, ending: str) -> None:
    r = req.turn.result
    server.metrics.record_generation(prompt_tokens=r.prompt_tokens, cached_tokens=r.cached_tokens,
                                     completion_tokens=r.completion_tokens, reasoning_tokens=r.reasoning_tokens,
                                     ending=ending, repairs=r.repairs)
    server.note(request, f"prompt={r.prompt_tokens} cached={r.cached_tokens or 0} "
                         f"completion={r.completion_tokens} end={ending}")
    if server.config.log_content:
        server.log_content("reply", req.stream.message)


async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
    """The endpoint (see the module docstring)."""
    server: ServerState = request.app.state.server
    start = time.perf_counter()
    server.check_open()
    server.check_model(body.model)
    engine = server.engine
    messages = body.messages_as_dicts()
    convert: Dict[str, Any] = {
        "tools": [t.model_dump(exclude_unset=True) for t in body.tools] if body.tools is not None else None,
        "tool_choice": body.tool_choice,
        "reasoning_effort": body.effort(),
        "response_format": body.response_format,
    }
    sampling = sampling_kwargs(body)
    server.log_content("request", {"messages": messages, "tools": convert["tools"]})
    try:
        rendered = engine.render(messages, **convert)
    except Exception as exc:  # noqa: BLE001 - mapped to 400 (or 500)
        raise from_exception(exc) from None

    if await run_until_disconnect(request, _acquire(server)) is None:
        return Response(status_code=499)  # the client left while waiting: nobody to answer
    try:
        server.check_open()
        req = engine.chat_request(messages, rendered=rendered, model=server.config.model_name,
                                  stream_options=body.stream_options.model_dump() if body.stream_options else None,
                                  **convert, **sampling)
    except BaseException as exc:
        server.gate.release()
        if isinstance(exc, Exception):
            raise from_exception(exc) from None
        raise
    turn = req.turn
    server.track(turn)
    events = turn.aevents()
    timing = _Timing(server, start)
    try:
        first = await run_until_disconnect(request, events.__anext__())
    except Exception as exc:  # noqa: BLE001 - the generation could not start
        server.release_on_finish(turn)
        server.untrack(turn)
        raise from_exception(exc) from None
    server.release_on_finish(turn)
    if first is None:  # the client left before the first token
        server.untrack(turn)
        await events.aclose()
        _record(server, request, req, "cancelled")
        return Response(status_code=499)
    timing.tick(first)

    if body.stream:
        return StreamingResponse(_sse(server, request, req, first, events, timing), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def collect() -> Dict[str, Any]:
        req.chunks_for(first)
        async for event in events:
            timing.tick(event)
            req.chunks_for(event)
        req.finish_chunks()
        return req.stream.completion()

    try:
        result = await run_until_disconnect(request, collect())
    finally:
        server.untrack(turn)
    if result is None:
        _record(server, request, req, "cancelled")
        return Response(status_code=499)
    _record(server, request, req, result["choices"][0]["finish_reason"])
    return JSONResponse(result)


async def _acquire(server: ServerState) -> bool:
    await server.gate.acquire()
    return True


async def _sse(server: ServerState, request: Request, req: Any, first: Any, events: AsyncIterator[Any],
               timing: _Timing) -> AsyncIterator[bytes]:
    """The event stream: the role chunk, one event per delta, an error event if the backend
    failed mid-way, the final chunk (``finish_reason``, usage) and ``[DONE]``."""
    ending = "cancelled"
    try:
        yield sse_event(req.stream.start())
        for chunk in req.chunks_for(first):
            yield sse_event(chunk)
        async for event in events:
            timing.tick(event)
            for chunk in req.chunks_for(event):
                yield sse_event(chunk)
        error = req.turn.result.error
        if error is not None:
            yield sse_event(from_exception(error).body())
        finals: List[Dict[str, Any]] = req.finish_chunks()
        for chunk in finals:
            yield sse_event(chunk)
        ending = req.stream.completion()["choices"][0]["finish_reason"]
        yield DONE
    finally:
        await events.aclose()
        server.untrack(req.turn)
        _record(server, request, req, ending)
