"""The Responses API: ``POST /v1/responses``, ``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}``.

A request is mapped to Harmony by :mod:`llama_harmony.openai_responses` (items, instructions,
tools, ``previous_response_id`` history with the chain-of-thought policy), generated on the
engine (in-process or gateway), and shaped as a ``Response`` object or its streaming events.

Built-in tools run here, between generations of the same response: when the model ends a
generation with a call to ``python`` (``--python-tool``: the code runs in the bubblewrap
sandbox of :mod:`llama_harmony.tools.sandbox`) or to ``browser.search`` / ``open`` / ``find``
(``--browser-backend``), the tool's output goes back to the model as the tool's Harmony
message and the model generates again, at most ``max_tool_rounds`` times; the calls appear in
the output as ``code_interpreter_call`` / ``web_search_call`` items. The model is let go
while a tool runs (another request may use it).

Stored responses (``store``, default true) keep the Response object, the chain's Harmony
messages and call ids, and the browser's state, in a bounded :class:`~llama_harmony.response_store.ResponseStore`
(in memory, or SQLite with ``--responses-db``): ``previous_response_id`` continues them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, AsyncIterator, Dict, List

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import Role
from ..sampling import SamplingParams
from .builtins import run_builtin
from .errors import ApiError, from_exception
from .schemas import ResponseRequest
from .state import ServerState, TokenTiming, Usage, run_until_disconnect

__all__ = ["ResponsesRuntime", "create_response", "get_response", "delete_response"]

log = logging.getLogger("llama_harmony.server")


class ResponsesRuntime:
    """What the Responses API needs besides the engine: the store and the built-in tools.

    :param store: a :class:`~llama_harmony.response_store.ResponseStore` (default: in memory,
        1,000 responses, 64 MiB).
    :param python_tool: a :class:`~llama_harmony.tools.python_tool.PythonTool` (None: no python).
    :param browser_backend: a :class:`~llama_harmony.tools.browser.BrowserBackend` (None: no browser).
    :param max_tool_rounds: built-in tool calls run for one response before it ends incomplete.
    """

    def __init__(self, store: Any = None, *, python_tool: Any = None, browser_backend: Any = None,
                 max_tool_rounds: int = 8):
        """Set up the ResponsesRuntime (the parameters are described in the class docstring)."""
        if store is None:
            from ..response_store import ResponseStore

            store = ResponseStore()
        self.store = store
        self.python_tool = python_tool
        self.browser_backend = browser_backend
        self.max_tool_rounds = int(max_tool_rounds)

    @property
    def builtins(self) -> set:
        """The built-in tools this server runs (``python``, ``browser``)."""
        out = set()
        if self.python_tool is not None:
            out.add("python")
        if self.browser_backend is not None:
            out.add("browser")
        return out


def _sse(event: Dict[str, Any]) -> bytes:
    data = json.dumps(event, ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode("utf-8")


class _Run:
    """One response: its generations, the built-in tool calls between them, its events."""

    def __init__(self, server: ServerState, runtime: ResponsesRuntime, body: ResponseRequest, prepared: Any,
                 stream: Any, session: Any, timing: TokenTiming):
        self.server = server
        self.timing = timing
        self.engine = server.engine
        self.runtime = runtime
        self.body = body
        self.prepared = prepared
        self.rs = stream
        self.session = session
        self.turn: Any = None
        self.conversation = prepared.conversation
        self.usage = Usage()
        self.rounds = 0
        self.ended = False

    # -- one generation ---------------------------------------------------------------------------

    async def next_turn(self) -> Any:
        """Render, wait for the model, and make the next generation's :class:`Turn` (raises
        :class:`ApiError` for what the client can fix)."""
        engine, server = self.engine, self.server
        try:
            normal = engine.encoding.render_conversation_for_completion(self.conversation, Role.ASSISTANT,
                                                                        self.prepared.render_config)
        except Exception as exc:  # noqa: BLE001
            raise from_exception(exc) from None
        await server.gate.acquire()
        try:
            server.check_open()
            prompt, spliced = engine.prepare_prompt(normal)
            body = self.body
            limit = body.max_output_tokens
            if limit is not None:
                limit = max(1, limit - self.usage.completion)
            params = SamplingParams(temperature=1.0 if body.temperature is None else body.temperature,
                                    top_p=1.0 if body.top_p is None else body.top_p, max_tokens=limit)
            rf = self.prepared.response_format
            constrained = engine.constrained
            turn = engine.turn(prompt, params, schemas=self.prepared.tool_schemas if constrained else None,
                               response_schema=rf[1] if (constrained and rf) else None, normal_ids=normal,
                               spliced=spliced)
        except BaseException as exc:
            server.gate.release()
            if isinstance(exc, Exception):
                raise from_exception(exc) from None
            raise
        server.track(turn)
        self.turn = turn
        return turn

    async def generation(self, turn: Any) -> AsyncIterator[Dict[str, Any]]:
        rs = self.rs
        events = turn.aevents()
        final: List[Any] = []
        try:
            first = True
            async for event in events:
                if first:
                    self.server.release_on_finish(turn)
                    first = False
                self.timing.tick(event)
                if event.token is None:
                    final = event.deltas
                    continue
                for e in rs.feed(event.deltas):
                    yield e
        finally:
            if first:
                self.server.release_on_finish(turn)
            await events.aclose()
            self.server.untrack(turn)
        r = turn.result
        self.usage.add(r)
        self.server.metrics.record_generation(prompt_tokens=r.prompt_tokens, cached_tokens=r.cached_tokens,
                                              completion_tokens=r.completion_tokens,
                                              reasoning_tokens=r.reasoning_tokens,
                                              ending=r.stop_reason or "stop", repairs=r.repairs)
        for e in rs.end_generation(final, length=r.finish_reason == "length"):
            yield e

    # -- built-in tools ---------------------------------------------------------------------------

    async def run_tool(self, call: Any) -> List[Dict[str, Any]]:
        done = await run_builtin(self.runtime, self.session, call.recipient, call.text)
        return self.rs.tool_result(call.item_id, done.text, status=done.status, logs=done.logs, action=done.action)

    # -- the whole response -----------------------------------------------------------------------

    async def events(self, first_turn: Any) -> AsyncIterator[Dict[str, Any]]:
        """Every event of the response; the first generation is ready (``first_turn``)."""
        rs = self.rs
        for e in rs.start():
            yield e
        turn = first_turn
        while True:
            async for e in self.generation(turn):
                yield e
            r = turn.result
            if r.error is not None:
                for e in rs.fail(f"the model backend failed while generating: {r.error}", code="server_error"):
                    yield e
                self.ended = True
                return
            pending = rs.pending_calls()
            cut = r.finish_reason == "length"
            if cut or not pending:
                break
            if self.rounds >= self.runtime.max_tool_rounds:
                log.info("response %s: %d built-in tool rounds, stopping", rs.id, self.rounds)
                break
            self.rounds += 1
            for call in pending:
                for e in await self.run_tool(call):
                    yield e
            self.conversation = self.prepared.continued(rs.output_messages())
            try:
                turn = await self.next_turn()
            except ApiError as err:
                for e in rs.fail(err.message, code="server_error"):
                    yield e
                self.ended = True
                return
        u = self.usage
        status = "incomplete" if (rs.pending_calls() or self.turn.result.finish_reason == "length") else None
        for e in rs.finish(status=status, input_tokens=u.prompt, cached_tokens=u.cached, output_tokens=u.completion,
                           reasoning_tokens=u.reasoning):
            yield e
        self.ended = True
        self.store()

    def store(self) -> None:
        if self.body.store is False:
            return
        record = {"response": self.rs.response(), "chain": self.rs.chain_state(self.prepared.state).to_dict(),
                  "browser": self.session.to_dict() if self.session is not None else None}
        try:
            self.runtime.store.put(self.rs.id, record)
        except Exception as exc:  # noqa: BLE001 - the answer is still given, only not stored
            log.warning("response %s not stored: %s", self.rs.id, exc)


def _runtime(server: ServerState) -> ResponsesRuntime:
    rt = server.extensions.get("responses")
    if rt is None:
        rt = server.extensions["responses"] = ResponsesRuntime()
    return rt


async def create_response(request: Request, body: ResponseRequest) -> Response:
    """``POST /v1/responses``."""
    from ..openai_responses import ChainState, ResponseStream, responses_to_conversation

    server: ServerState = request.app.state.server
    start = time.perf_counter()
    server.check_open()
    server.check_model(body.model)
    runtime = _runtime(server)
    history, browser_state = None, None
    if body.previous_response_id is not None:
        record = runtime.store.get(body.previous_response_id)
        if record is None:
            raise ApiError(404, f"previous response {body.previous_response_id!r} not found (never stored, "
                                f"deleted, or evicted from the store)", param="previous_response_id",
                           code="previous_response_not_found")
        history, browser_state = ChainState.from_dict(record["chain"]), record.get("browser")
    raw = body.model_dump(exclude_unset=True)
    server.log_content("responses request", {"input": raw.get("input"), "instructions": raw.get("instructions")})
    try:
        prepared = responses_to_conversation(
            body.input, instructions=body.instructions, tools=raw.get("tools"), tool_choice=body.tool_choice,
            reasoning=body.reasoning.model_dump(exclude_none=True) if body.reasoning else None, text=body.text,
            history=history, builtin_tools_available=runtime.builtins, cot_policy=server.engine.cot_policy)
    except Exception as exc:  # noqa: BLE001 - 400 naming the field
        raise from_exception(exc) from None
    session = None
    if "browser" in prepared.builtin_tools:
        from ..tools.browser import BrowserSession

        try:
            session = (BrowserSession.from_dict(runtime.browser_backend, browser_state) if browser_state
                       else BrowserSession(runtime.browser_backend))
        except ValueError:
            session = BrowserSession(runtime.browser_backend)
    rs = ResponseStream(server.config.model_name, request=raw, builtin_tools=prepared.builtin_tools)
    run = _Run(server, runtime, body, prepared, rs, session, TokenTiming(server, start))
    turn = await run_until_disconnect(request, run.next_turn())
    if turn is None:
        return Response(status_code=499)

    if body.stream:
        async def sse() -> AsyncIterator[bytes]:
            try:
                async for event in run.events(turn):
                    yield _sse(event)
            finally:
                if not run.ended and run.turn is not None:
                    run.turn.stop("cancelled")

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def collect() -> Dict[str, Any]:
        async for _ in run.events(turn):
            pass
        return rs.response()

    result = await run_until_disconnect(request, collect())
    if result is None:
        return Response(status_code=499)
    return JSONResponse(result)


async def get_response(request: Request, response_id: str) -> JSONResponse:
    """``GET /v1/responses/{id}``: a stored response."""
    server: ServerState = request.app.state.server
    record = _runtime(server).store.get(response_id)
    if record is None:
        raise ApiError(404, f"response {response_id!r} not found", param="response_id", code="not_found")
    return JSONResponse(record["response"])


async def delete_response(request: Request, response_id: str) -> JSONResponse:
    """``DELETE /v1/responses/{id}``."""
    server: ServerState = request.app.state.server
    if not _runtime(server).store.delete(response_id):
        raise ApiError(404, f"response {response_id!r} not found", param="response_id", code="not_found")
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})

