"""``POST /v1/chat/completions``: a chat.completion JSON object, or server-sent events.

The request is validated (:mod:`.schemas`) and rendered before it waits for the model, so a
bad request gets its ``400`` at once. Then it takes its turn (:mod:`.gate`), generates in a
worker thread (:meth:`~llama_harmony.engine.Turn.aevents`) and streams one SSE event per
parser delta. A client that leaves — while waiting, while its answer streams, or while a
non-streamed answer is being generated — stops its generation at the next token.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, AsyncGenerator, AsyncIterator, Dict, List, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .builtins import is_builtin_recipient, run_builtin
from .errors import ApiError, from_exception
from .schemas import BUILTIN_TOOL_TYPES, ChatCompletionRequest
from .state import ServerState, TokenTiming, Usage, run_until_disconnect, sse_event

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


def _record(server: ServerState, request: Request, req: Any, ending: str, run: Optional["_Rounds"] = None) -> None:
    u = run.usage if run is not None and run.usage.completion else Usage().add(req.turn.result)
    server.metrics.record_generation(prompt_tokens=u.prompt, cached_tokens=u.cached, completion_tokens=u.completion,
                                     reasoning_tokens=u.reasoning, ending=ending, repairs=u.repairs)
    rounds = f" tool_rounds={run.rounds}" if run is not None and run.rounds else ""
    server.note(request, f"prompt={u.prompt} cached={u.cached} completion={u.completion} end={ending}{rounds}")
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
    builtins = _builtins(server, body)
    convert: Dict[str, Any] = {
        "tools": ([t.model_dump(exclude_unset=True) for t in body.tools if t.type == "function"]
                  if body.tools is not None else None),
        "tool_choice": body.tool_choice,
        "reasoning_effort": body.effort(),
        "response_format": body.response_format,
    }
    if builtins:
        convert["builtin_tools"] = sorted(builtins)
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
    timing = TokenTiming(server, start)
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
    run = _Rounds(server, req, messages, convert, builtins, timing)

    if body.stream:
        return StreamingResponse(_sse(server, request, run, first, events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def collect() -> Dict[str, Any]:
        async for event in run.events(first, events):
            req.chunks_for(event)
        run.finish_chunks()
        return req.stream.completion()

    try:
        result = await run_until_disconnect(request, collect())
    finally:
        await run.close()
    if result is None:
        _record(server, request, req, "cancelled", run)
        return Response(status_code=499)
    _record(server, request, req, result["choices"][0]["finish_reason"], run)
    return JSONResponse(result)


async def _acquire(server: ServerState) -> bool:
    await server.gate.acquire()
    return True


async def _sse(server: ServerState, request: Request, run: "_Rounds", first: Any,
               events: AsyncGenerator[Any, None]) -> AsyncIterator[bytes]:
    """The event stream: the role chunk, one event per delta, an error event if the backend
    failed mid-way, the final chunk (``finish_reason``, usage) and ``[DONE]``."""
    req = run.req
    ending = "cancelled"
    try:
        yield sse_event(req.stream.start())
        async for event in run.events(first, events):
            for chunk in req.chunks_for(event):
                yield sse_event(chunk)
        error = run.turn.result.error
        if error is not None:
            yield sse_event(from_exception(error).body())
        for chunk in run.finish_chunks():
            yield sse_event(chunk)
        ending = req.stream.completion()["choices"][0]["finish_reason"]
        yield DONE
    finally:
        await run.close()
        _record(server, request, req, ending, run)


def _builtins(server: ServerState, body: ChatCompletionRequest) -> List[str]:
    """The built-in tools a chat request asks for (``code_interpreter``, ``web_search_preview``
    in ``tools``); 400 when this server does not run them."""
    runtime = server.extensions["responses"]
    out: List[str] = []
    for i, tool in enumerate(body.tools or []):
        if tool.type == "function":
            continue
        name = BUILTIN_TOOL_TYPES[tool.type]
        if name not in runtime.builtins:
            flag = "--python-tool" if name == "python" else "--browser-backend"
            raise ApiError(400, f"tools[{i}]: the built-in {tool.type} tool is not enabled on this server "
                                f"(start it with {flag})", param=f"tools[{i}].type", code="tool_not_enabled")
        out.append(name)
    return out


class _Rounds:
    """The generations of one chat request: one, or more when the model calls a built-in tool
    (the server runs it and the model goes on; the calls are not part of the reply, which
    holds the reasoning and the answer). Usage adds up every generation."""

    def __init__(self, server: ServerState, req: Any, messages: List[Dict[str, Any]], convert: Dict[str, Any],
                 builtins: List[str], timing: TokenTiming):
        self.server = server
        self.req = req
        self.turn = req.turn
        self.messages = messages
        self.convert = convert
        self.builtins = builtins
        self.timing = timing
        self.rounds = 0
        self.events_iter: Optional[AsyncGenerator[Any, None]] = None
        self.usage = Usage()
        self._session: Any = None

    async def events(self, first: Any, events: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
        """Every generation's events (message indexes continued across generations; the
        built-in calls left out)."""
        from ..engine import CALL_ID

        offset, history = 0, None
        self.events_iter = events
        while True:
            async for event in _chain(first, events):
                self.timing.tick(event)
                yield _shifted(event, offset)
            turn = self.turn
            self.usage.add(turn.result)
            msgs = turn.output_messages()
            call = msgs[-1] if msgs else None
            if (not self.builtins or turn.result.eog != CALL_ID or call is None
                    or is_builtin_recipient(call.recipient) not in self.builtins
                    or self.rounds >= self.server.extensions["responses"].max_tool_rounds
                    or self.server.draining):
                return
            self.rounds += 1
            done = await run_builtin(self.server.extensions["responses"], self._browser(), call.recipient,
                                     call.text())
            if history is None:
                history = list(self._conversation().messages)
            history += msgs + [done.message(call.recipient, call.text(), call.channel or "analysis")]
            offset += len(msgs) + 1
            first, events = await self._next(history)

    def _conversation(self) -> Any:
        from ..openai_request import messages_to_conversation

        return messages_to_conversation(self.messages, cot_policy=self.server.engine.cot_policy, **self.convert)

    def _browser(self) -> Any:
        if self._session is None and "browser" in self.builtins:
            from ..tools.browser import BrowserSession

            self._session = BrowserSession(self.server.extensions["responses"].browser_backend)
        return self._session

    async def _next(self, history: List[Any]) -> Any:
        """Start the next generation after a tool's answer: ``(first event, the rest)``."""
        from .. import Conversation

        server, engine = self.server, self.server.engine
        try:
            normal = engine.render_conversation(Conversation.from_messages(history))
        except Exception as exc:  # noqa: BLE001
            raise from_exception(exc) from None
        await server.gate.acquire()
        try:
            prompt, spliced = engine.prepare_prompt(normal)
            params = self.req.turn.params
            if params.max_tokens is not None:
                params = replace(params, max_tokens=max(1, params.max_tokens - self.usage.completion))
            turn = engine.turn(prompt, replace(params, seed=None), normal_ids=normal, spliced=spliced)
        except BaseException:
            server.gate.release()
            raise
        await self.close()
        self.turn = self.req.turn = turn
        server.track(turn)
        events = turn.aevents()
        self.events_iter = events
        try:
            first = await events.__anext__()
        finally:
            server.release_on_finish(turn)
        return first, events

    def finish_chunks(self) -> List[Dict[str, Any]]:
        u = self.usage
        return self.req.stream.finish(self.turn.result.finish_reason, prompt_tokens=u.prompt,
                                      completion_tokens=u.completion, cached_tokens=u.cached,
                                      reasoning_tokens=u.reasoning)

    async def close(self) -> None:
        if self.events_iter is not None:
            await self.events_iter.aclose()
        self.server.untrack(self.turn)


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    if first is not None:
        yield first
    async for item in rest:
        yield item


def _shifted(event: Any, offset: int) -> Any:
    """``event`` with its message indexes moved by ``offset`` and built-in calls left out."""
    if not offset and not any(is_builtin_recipient(d.recipient) for d in event.deltas):
        return event
    deltas = [replace(d, index=d.index + offset) for d in event.deltas if not is_builtin_recipient(d.recipient)]
    return replace(event, deltas=deltas, kind=None if not deltas else event.kind)
