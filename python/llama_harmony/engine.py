"""Chat completions for gpt-oss, with Harmony done right, on llama.cpp in this process.

:class:`HarmonyEngine` renders OpenAI chat requests with llama_harmony's renderer (never the
GGUF's Jinja template, never llama.cpp's tokenizer: ``<|start|>`` typed by a user stays
text), samples token ids on a backend (:class:`~llama_harmony.llama_backend.LlamaBackend`:
``Llama.generate`` with every sampling argument, logits processor and grammar honoured),
parses the ids with llama_harmony's lenient streaming parser and returns OpenAI-shaped
``chat.completion`` objects or ``chat.completion.chunk`` streams with
``reasoning_content``/``reasoning``, ``content`` and ``tool_calls`` (see
:mod:`llama_harmony.openai_request` and :mod:`llama_harmony.openai_output` for the mapping
policies).

    engine = HarmonyEngine.from_path("gpt-oss-20b-mxfp4.gguf", n_ctx=16384)
    reply = engine.create_chat_completion([{"role": "user", "content": "Hi"}])
    reply["choices"][0]["message"]["content"]

Below the chat API sits one generation, a :class:`Turn`: prompt ids in, :class:`TurnEvent`
steps out (the parser's :class:`~llama_harmony.openai_output.ParsedDelta` values plus the
sampled :class:`~llama_harmony.sampling.TokenStep`), iterated synchronously
(:meth:`Turn.events`) or from asyncio (:meth:`Turn.aevents`, which runs the generation in a
worker thread), stoppable from any thread (:meth:`Turn.stop`). The HTTP server and the
Responses API are built on it.

:class:`~llama_harmony.chat_handler.HarmonyChatHandler` plugs the same engine into
llama-cpp-python's own API (also importable from here).

Generation
----------
* Stops on the end-of-generation ids ``<|return|>`` 200002, ``<|call|>`` 200012 and
  ``<|endoftext|>`` 199999 (``<|end|>`` is not one: the model goes on from analysis to the
  final message), on ``max_tokens`` (default: what is left of the context), or when a user
  ``stop`` string appears in the content.
* ``max_tokens`` reached (or the context filled) before the end: ``finish_reason "length"``
  and the partial output is returned as parsed so far (a cut tool call is returned in
  ``tool_calls`` with its partial arguments; a cut final message as partial ``content``).
* A prompt that does not leave room for one token in ``n_ctx`` raises
  :class:`ContextOverflowError` (a ``ValueError``) before anything is evaluated.
* KV cache: every request passes the full id list to ``Llama.generate``, whose prefix match
  re-evaluates only the new suffix. :attr:`HarmonyEngine.last_reused_tokens` (and
  ``usage.prompt_tokens_details.cached_tokens``) report how many prompt tokens were kept.
* Prompt splicing (``HarmonyEngine(..., reuse_generated_ids=True)``, the default): the model
  writes a tool-call header as ``<|start|>assistant<|channel|>commentary to=functions.X
  <|constrain|>json<|message|>``, the renderer (like openai-harmony) renders history as
  ``<|start|>assistant to=functions.X<|channel|>commentary ...``, so a plain re-render would
  stop llama.cpp's prefix match at the first tool call of a chain. The engine therefore
  remembers its last request (the prompt as rendered, the prompt as evaluated, the ids
  sampled) and, when the next request's canonical render is that prompt followed by exactly
  the messages the model wrote, puts the model's own ids there instead of their re-render:
  ``previous prompt + sampled ids + rest of the new render``. The sampled ids end with the
  terminator history uses: ``<|call|>`` stays, ``<|return|>`` becomes ``<|end|>`` (the
  ``<|return|>``/``<|call|>`` token itself was never evaluated, so nothing is lost). The rule
  keeps the prompt a correct Harmony history, message for message: the splice is made only
  when (a) the new render starts with the previous render (same system, developer, tools and
  earlier messages), (b) the sampled ids parse in strict mode (``<|start|>assistant`` +
  sampled ids) to messages whose canonical render comes next in the new render, token for
  token (same author, channel, recipient, content type, body text and terminator: a reply
  sent back without its reasoning, with edited arguments, cut by a stop string, or dropped by
  the chain-of-thought policy is not spliced), and (c) the special tokens of the sampled ids
  are exactly the structural ones of that render (a special token the model wrote inside a
  body is never replayed). The spliced messages then differ from the canonical render only
  in header order (recipient after the channel, as the model writes it and as both gpt-oss
  and llama_harmony's parser accept) and possibly in how the model split body text into
  tokens. Otherwise the prompt is the canonical render (earlier splices of a chain are kept
  as long as (a) holds). With the ``spec`` chain-of-thought policy a new user message drops
  the completed turn's analysis, so splicing only happens inside a tool-call chain (or for
  a turn without reasoning); the ``keep`` policy splices every turn.
  :attr:`HarmonyEngine.last_spliced_tokens` counts the prompt ids copied from earlier
  generations; :meth:`HarmonyEngine.render` always returns the canonical render.
* ``usage.completion_tokens`` counts every sampled id, the final ``<|call|>``/``<|return|>``
  included (as OpenAI does); ``max_tokens`` bounds the same count.
* One request at a time per engine (a ``threading.Lock``; a stream holds it until it is
  exhausted or closed). Starting a second request in the thread that is still iterating a
  stream raises ``RuntimeError`` instead of deadlocking. :meth:`Turn.stop` (any thread) ends
  a generation at the next token.
* ``seed``: given -> ``Llama.set_seed(seed)`` before sampling; otherwise the Llama's seed is
  left as it is (the default seed samples randomly).
* ``logprobs=True`` (with ``top_logprobs`` 0..20) adds ``choices[0].logprobs.content``: one
  entry per sampled token of the visible ``content`` (final, channel-less and preamble
  messages; not headers, reasoning or tool arguments) with the token's text as
  llama_harmony decodes it, its UTF-8 ``bytes``, its ``logprob`` and the ``top_logprobs``
  alternatives, all read from the model's logits before any sampler (streamed chunks carry
  the entries of the tokens whose text they carry).
* ``replay`` (a :class:`~llama_harmony.replay.Replay`): every generation forces the next
  recorded completion through the model (see :mod:`llama_harmony.replay`).

Constrained decoding (opt-in: ``HarmonyEngine(..., constrained=True)``)
-----------------------------------------------------------------------
When the model opens a tool call whose tool has a JSON-Schema ``parameters`` object (header
complete: ``<|message|>`` after ``to=functions.X``) or a ``final`` message while a
``response_format`` (``json_schema``/``json_object``) is in force, the engine restarts
``Llama.generate`` on the same ids (KV cache kept: one token is re-evaluated) with a GBNF
grammar built by ``LlamaGrammar.from_json_schema`` for that body only, plus a mask of the
special tokens other than the end-of-generation ones (the JSON grammar would accept
``<|end|>`` as string text). No end-of-generation id is ever written into a grammar:
llama.cpp lets the grammar sampler pass ``<|call|>``/``<|return|>``/``<|endoftext|>`` once
the JSON value is complete, and generation stops there. Headers and reasoning are never
constrained. Best effort: a schema the converter rejects, a tool without parameters, a user
``grammar`` (which then applies to the whole raw output, as in llama-cpp-python) or an
unknown tool leaves the body unconstrained; :attr:`HarmonyEngine.last_constraints` lists
what was applied. Caveat (llama.cpp): a logits processor that leaves only ids the grammar
rejects makes llama.cpp abort the process; do not combine token-forcing processors with
``constrained=True`` unless the forced ids satisfy the schema.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import (Any, AsyncGenerator, AsyncIterator, Callable, Deque, Dict, Iterator, List, Literal, Mapping,
                    Optional, Sequence, Tuple, Union, overload)

from . import HarmonyEncodingName, Role, StreamableParser, load_harmony_encoding
from .openai_output import ChunkStream, ParsedDelta, ParserTracker, logprob_entry, message_kind, new_completion_id
from .openai_request import (
    OpenAIFormatError,
    messages_to_conversation,
    render_config,
    response_format_schema,
    tool_schemas,
)
from .sampling import EOG_IDS, MAX_TOP_LOGPROBS, SamplingParams, TokenStep

__all__ = [
    "EOG_IDS",
    "OpenAIFormatError",
    "ModelError",
    "ModelNotFoundError",
    "ContextOverflowError",
    "HarmonyEngine",
    "Turn",
    "TurnEvent",
    "TurnResult",
    "HarmonyChatHandler",
    "register_chat_format",
    "CHAT_FORMAT_NAME",
    "install_llama_log_filter",
]

MESSAGE_ID = 200008
START_ID = 200006
END_ID = 200007
CALL_ID = 200012
RETURN_ID = 200002
FIRST_SPECIAL_ID = 199998


class ModelError(Exception):
    """The model file is missing, cannot be loaded, or is not a gpt-oss model."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model path does not exist (also a ``FileNotFoundError``)."""


class ContextOverflowError(ValueError):
    """The prompt does not fit the context window (``n_ctx``) with room to generate."""

    def __init__(self, prompt_tokens: int, n_ctx: int):
        """Set up the ContextOverflowError (the parameters are described in the class docstring)."""
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the context window (n_ctx) is {n_ctx} tokens: "
            f"shorten the conversation or load the model with a larger n_ctx")
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        self.param = "messages"


# =================================================================================================
# One generation
# =================================================================================================

#: Why a generation ended (:attr:`TurnResult.stop_reason`).
StopReason = Literal["eog", "max_tokens", "context", "stop", "cancelled", "shutdown", "error"]
#: Why :meth:`Turn.stop` was called.
StopRequest = Literal["stop", "cancelled", "shutdown"]


@dataclass
class TurnEvent:
    """One step of a generation: the parsed steps one sampled id produced (possibly none), the
    sampled :class:`~llama_harmony.sampling.TokenStep`, and the kind of message body the id
    belongs to (``"reasoning"``, ``"content"``, ``"tool"``; ``None`` for header and structural
    ids). The last event of a generation has ``token=None`` and the parser's final steps."""

    deltas: List[ParsedDelta]
    token: Optional[TokenStep] = None
    kind: Optional[str] = None


@dataclass
class TurnResult:
    """Book-keeping of one generation (complete once its events are exhausted)."""

    prompt_tokens: int = 0
    max_tokens: int = 0
    #: Every sampled id, the end-of-generation id included.
    generated: List[int] = field(default_factory=list)
    #: Prompt tokens taken from the KV cache (None: not known).
    cached_tokens: Optional[int] = None
    #: Sampled ids in the bodies of reasoning (analysis) messages.
    reasoning_tokens: int = 0
    eog: Optional[int] = None
    stop_reason: Optional[StopReason] = None
    #: An error that ended the generation early (the backend failed mid-way).
    error: Optional[BaseException] = None
    constraints: List[str] = field(default_factory=list)
    #: ``(kind, detail)`` of every repair the lenient parser made.
    repairs: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        """Every sampled id, the end-of-generation id included (OpenAI counts it too)."""
        return len(self.generated)

    @property
    def finish_reason(self) -> Optional[str]:
        """``"length"`` when the output was cut (``max_tokens``, the context, a server
        shutdown, a backend failure), else None (the caller decides ``stop``/``tool_calls``)."""
        if self.stop_reason in ("max_tokens", "context", "shutdown", "error"):
            return "length"
        return None


@dataclass
class _Exchange:
    """A finished chat request, for prompt splicing (see the module docstring)."""

    normal: List[int]  # the prompt as llama_harmony renders it
    actual: List[int]  # the prompt evaluated (``normal`` with earlier generations spliced in)
    spliced: int = 0  # ids of ``actual`` copied from earlier generations
    generated: Optional[List[int]] = None  # sampled ids, set when they ended on <|call|>/<|return|>
    span: Any = None  # cached (model ids, canonical ids) of ``generated``, or False


_DONE = object()


class Turn:
    """One generation on an engine: prompt ids in, :class:`TurnEvent` steps out.

    Made by :meth:`HarmonyEngine.turn`. Iterate :meth:`events` (holds the model while it
    runs) or, from asyncio, :meth:`aevents`. :meth:`stop` ends it at the next token from any
    thread; :attr:`result` holds the counts, the stop reason and the repairs.
    """

    def __init__(self, engine: "HarmonyEngine", prompt_ids: Sequence[int], params: SamplingParams, *,
                 processors: Sequence[Any] = (), grammar: Any = None, forced: Optional[Sequence[int]] = None,
                 schemas: Optional[Mapping[str, Optional[dict]]] = None, response_schema: Optional[dict] = None,
                 exchange: Optional[_Exchange] = None):
        """Set up the Turn (the parameters are described in the class docstring)."""
        self.engine = engine
        self.prompt_ids = [int(t) for t in prompt_ids]
        engine._check_prompt(self.prompt_ids)
        self.params = params
        self.processors = list(processors or [])
        self.grammar = grammar
        self.forced = list(forced) if forced is not None else None
        self.schemas = dict(schemas or {})
        self.response_schema = response_schema
        self.exchange = exchange
        self.result = TurnResult(prompt_tokens=len(self.prompt_ids),
                                 max_tokens=engine._max_tokens(len(self.prompt_ids), params.max_tokens))
        self._stop: Optional[StopRequest] = None
        self._tracker: Optional[ParserTracker] = None
        self._started = False
        #: Set (from the worker thread) once an :meth:`aevents` generation has really ended.
        self.finished = threading.Event()
        self._worker = False
        self._callbacks: List[Callable[[], None]] = []
        self._cb_lock = threading.Lock()

    # -- control ---------------------------------------------------------------------------------

    def stop(self, reason: StopRequest = "stop") -> None:
        """End the generation at the next token (thread-safe). ``reason``: ``"stop"`` (a stop
        string was seen), ``"cancelled"`` (the client left) or ``"shutdown"`` (the server is
        stopping: the output counts as cut, ``finish_reason "length"``); any other value
        counts as ``"cancelled"``."""
        if self._stop is None:
            self._stop = reason if reason in ("stop", "cancelled", "shutdown") else "cancelled"

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop is not None

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once this generation has let go of the model: at once when
        :meth:`aevents` never started a worker (or it already ended), else from the worker
        thread when it ends."""
        with self._cb_lock:
            if self._worker and not self.finished.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def output_messages(self) -> List[Any]:
        """The messages the model wrote so far, as the lenient parser read them (Harmony
        ``Message`` objects; call after the events are exhausted for the complete list)."""
        return list(self._tracker.parser.messages) if self._tracker is not None else []

    def _finish_worker(self) -> None:
        with self._cb_lock:
            self.finished.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # pragma: no cover - a callback must not kill the worker
                pass

    # -- the steps shared by every driver --------------------------------------------------------

    def _begin(self) -> None:
        if self._started:
            raise RuntimeError("a Turn runs once")
        self._started = True
        eng, r = self.engine, self.result
        if self.exchange is not None:
            eng._remember(self.exchange)
            eng.last_spliced_tokens = self.exchange.spliced
        eng.last_prompt_ids = list(self.prompt_ids)
        r.cached_tokens = eng.backend.cached_prefix(self.prompt_ids)
        eng.last_reused_tokens = r.cached_tokens or 0
        eng.last_completion_ids = r.generated
        eng.last_constraints = r.constraints
        self._tracker = ParserTracker(eng._new_parser(), decode=eng.encoding.decode,
                                      parser_factory=lambda: eng._new_parser(None))

    def _step(self, step: TokenStep, constrained: bool) -> Tuple[TurnEvent, Any]:
        """Parse one sampled id; returns its event and a constraint to switch to (or None)."""
        r, tracker = self.result, self._tracker
        assert tracker is not None  # set by _begin()
        tok = step.id
        r.generated.append(tok)
        deltas = tracker.process(tok)
        header = tracker.current_header()
        kind = message_kind(*header)[0] if (header is not None and tok < FIRST_SPECIAL_ID) else None
        if kind == "reasoning":
            r.reasoning_tokens += 1
        switch = None
        if (tok == MESSAGE_ID and not constrained and header is not None
                and (self.schemas or self.response_schema is not None)
                and len(r.generated) < r.max_tokens):
            channel, recipient = header
            mkind, name = message_kind(channel, recipient)
            schema: Optional[dict] = None
            label = ""
            if mkind == "tool" and name is not None and self.schemas.get(name):
                schema, label = self.schemas[name], f"tool:{name}"
            elif mkind == "content" and channel == "final" and self.response_schema is not None:
                schema, label = self.response_schema, "response_format"
            if schema is not None:
                switch = self.engine.backend.constraint(schema)
                if switch is not None:
                    r.constraints.append(label)
        return TurnEvent(deltas, step, kind), switch

    def _end(self) -> TurnEvent:
        r = self.result
        if r.stop_reason is None:
            r.stop_reason = "max_tokens"
        cut = r.finish_reason == "length"
        tracker = self._tracker
        assert tracker is not None  # set by _begin()
        deltas = tracker.process_eos(length=cut)
        r.repairs = list(tracker.repairs)
        ex = self.exchange
        if ex is not None and r.eog in (CALL_ID, RETURN_ID) and r.stop_reason == "eog":
            ex.generated = list(r.generated)
        return TurnEvent(deltas)

    def _restart_args(self, switch: Any) -> Dict[str, Any]:
        """Arguments of the generation that continues with a constraint (same ids, KV kept)."""
        n = len(self.result.generated)
        return dict(prompt_ids=self.prompt_ids + self.result.generated,
                    params=replace(self.params, seed=None, grammar=None, json_schema=None,
                                   max_tokens=max(1, self.result.max_tokens - n)),
                    processors=self.processors,
                    grammar=switch, mask_specials=True,
                    forced=self.forced[n:] if self.forced is not None else None)

    def _stop_before_start(self) -> None:
        r = self.result
        if self._stop is not None or r.max_tokens <= 0:
            r.stop_reason = "cancelled" if self._stop == "cancelled" else (self._stop or "max_tokens")

    def _failed(self, exc: BaseException) -> None:
        """The backend failed: before any id, the request fails; after, the output is cut."""
        if not self.result.generated:
            raise exc
        self.result.error, self.result.stop_reason = exc, "error"

    def _constrained_from_start(self) -> bool:
        return self.grammar is not None or bool(self.params.grammar) or self.params.json_schema is not None

    def _first_params(self) -> SamplingParams:
        return replace(self.params, max_tokens=max(1, self.result.max_tokens))

    def _ended_by(self, step: TokenStep) -> bool:
        """After an id was handed out: does the generation end here?"""
        r = self.result
        if step.id in EOG_IDS:
            r.eog, r.stop_reason = step.id, "eog"
            return True
        if self._stop is not None:
            r.stop_reason = self._stop
            return True
        if len(r.generated) >= r.max_tokens:
            r.stop_reason = "max_tokens"
            return True
        return False

    # -- drivers ---------------------------------------------------------------------------------

    def events(self) -> Iterator[TurnEvent]:
        """Run the generation here, holding the model; one event per sampled id, then the
        final event (``token=None``)."""
        with self.engine.backend.hold():
            yield from self.events_held()

    def events_held(self) -> Iterator[TurnEvent]:
        """:meth:`events` for a caller that already holds the model (``engine.backend.hold()``)."""
        backend = self.engine.backend
        self._begin()
        r = self.result
        constrained = self._constrained_from_start()
        gen = backend.generate(self.prompt_ids, self._first_params(), processors=self.processors,
                               grammar=self.grammar, forced=self.forced)
        try:
            self._stop_before_start()
            while r.stop_reason is None:
                try:
                    step = next(gen)
                except StopIteration:  # the backend could not go on (the context is full)
                    r.stop_reason = "context"
                    break
                except Exception as exc:  # noqa: BLE001 - the backend failed mid-way
                    self._failed(exc)
                    break
                event, switch = self._step(step, constrained)
                yield event
                if self._ended_by(step):
                    break
                if switch is not None:
                    gen.close()
                    constrained = True
                    gen = backend.generate(**self._restart_args(switch))
        finally:
            gen.close()
        yield self._end()

    async def _native_aevents(self) -> AsyncGenerator[TurnEvent, None]:
        """The generation on an asynchronous backend (llama-server replicas), in this event
        loop: cancelling the consumer's task cancels the upstream request."""
        backend = self.engine.backend
        self._begin()
        r = self.result
        constrained = self._constrained_from_start()
        gen = backend.agenerate(self.prompt_ids, self._first_params(), processors=self.processors,
                                grammar=self.grammar, forced=self.forced)
        first = gen
        try:
            self._stop_before_start()
            while r.stop_reason is None:
                try:
                    step = await gen.__anext__()
                except StopAsyncIteration:  # the upstream ended without an end of generation (context)
                    r.stop_reason = "context"
                    break
                except Exception as exc:  # noqa: BLE001 - the backend failed mid-way
                    self._failed(exc)
                    break
                event, switch = self._step(step, constrained)
                yield event
                if self._ended_by(step):
                    break
                if switch is not None:
                    await gen.aclose()
                    constrained = True
                    gen = backend.agenerate(**self._restart_args(switch))
            if r.stop_reason in ("eog", "max_tokens") and gen is first:
                # the upstream's last message (its timings: cached prompt tokens) follows the last id
                try:
                    async for _ in gen:
                        pass
                except Exception:  # noqa: BLE001 - the answer is complete; only the timings are lost
                    pass
        finally:
            await gen.aclose()
            cached = getattr(first, "cached_tokens", None)
            if cached is not None:
                r.cached_tokens = int(cached)
            self._finish_worker()
        yield self._end()

    async def aevents(self) -> AsyncGenerator[TurnEvent, None]:
        """:meth:`events` from asyncio. On an in-process backend the generation runs in a worker
        thread and its events are handed to the event loop as they come; on an asynchronous
        backend (llama-server) it runs in this loop. Leaving the loop early (``break``, an
        exception, the task being cancelled) stops the generation (at the next token, or at
        once upstream); :attr:`finished` is set when the model has been let go."""
        if getattr(self.engine.backend, "agenerate", None) is not None:
            with self._cb_lock:
                self._worker = True
            try:
                async for event in self._native_aevents():
                    yield event
            finally:
                if not self.finished.is_set():
                    self._finish_worker()
            return
        loop = asyncio.get_running_loop()
        queue: "asyncio.Queue[Any]" = asyncio.Queue()

        def post(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody listens any more
                self.stop("cancelled")

        def work() -> None:
            try:
                for event in self.events():
                    post(event)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                post(_Failure(exc))
            finally:
                self._finish_worker()
                post(_DONE)

        with self._cb_lock:
            self._worker = True
        threading.Thread(target=work, name="llama-harmony-turn", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            if not self.finished.is_set():
                self.stop("cancelled")


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


# =================================================================================================
# The engine
# =================================================================================================

class HarmonyEngine:
    """OpenAI-style chat completions for a gpt-oss model.

    :param llama: a loaded ``llama_cpp.Llama`` (gpt-oss GGUF); or pass ``backend``.
    :param backend: a token backend (default: a :class:`~llama_harmony.llama_backend.LlamaBackend`
        over ``llama``).
    :param encoding: a :class:`~llama_harmony.HarmonyEncoding` (default: a new one).
    :param cot_policy: chain-of-thought policy for rendering history: ``"spec"``,
        ``"reference"`` or ``"keep"`` (see :mod:`llama_harmony.openai_request`).
    :param constrained: grammar-constrain tool-call arguments and ``response_format``
        bodies (see the module docstring).
    :param reuse_generated_ids: splice the model's own ids into the next prompt when the
        request continues the last one (see "Prompt splicing" in the module docstring).
    :param replay: a :class:`~llama_harmony.replay.Replay`: every generation forces its next
        recorded completion (see :mod:`llama_harmony.replay`).
    """

    def __init__(self, llama: Any = None, *, backend: Any = None, encoding: Any = None, cot_policy: str = "spec",
                 constrained: bool = False, reuse_generated_ids: bool = True, replay: Any = None):
        """Set up the HarmonyEngine (the parameters are described in the class docstring)."""
        render_config(cot_policy)  # validates
        if backend is None:
            if llama is None:
                raise TypeError("HarmonyEngine needs a llama_cpp.Llama (llama=...) or a backend (backend=...)")
            from .llama_backend import LlamaBackend

            backend = LlamaBackend(llama)
        self.backend = backend
        #: The ``llama_cpp.Llama`` of an in-process backend (None otherwise).
        self.llama = getattr(backend, "llama", None)
        self.encoding = encoding if encoding is not None else load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        self.cot_policy = cot_policy
        self.constrained = bool(constrained)
        self.model_name = getattr(backend, "model_name", None) or "gpt-oss"
        self.replay = replay
        #: Prompt tokens kept from the KV cache by the last request (prefix match).
        self.last_reused_tokens = 0
        #: Prompt ids of the last request.
        self.last_prompt_ids: List[int] = []
        #: Ids sampled by the last request.
        self.last_completion_ids: List[int] = []
        #: Constraints applied by the last request (e.g. ``["tool:get_weather"]``).
        self.last_constraints: List[str] = []
        #: Prompt ids of the last chat request copied from earlier generations (prompt splicing).
        self.last_spliced_tokens = 0
        self.reuse_generated_ids = bool(reuse_generated_ids)
        # Recent chat requests for prompt splicing: the last one when the model keeps one KV
        # cache (in-process), more when several caches serve requests (llama-server replicas).
        self._exchanges: Deque[_Exchange] = deque(maxlen=1 if getattr(backend, "serial", True) else 64)
        self._exchange_lock = threading.Lock()
        self._turn_tail = [START_ID] + [int(t) for t in self.encoding.encode_ordinary("assistant")]

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_path(cls, model_path: Union[str, os.PathLike], *, n_ctx: int = 8192, n_threads: Optional[int] = None,
                  seed: Optional[int] = None, verbose: bool = False, encoding: Any = None,
                  cot_policy: str = "spec", constrained: bool = False, reuse_generated_ids: bool = True,
                  replay: Any = None, **llama_kwargs: Any) -> "HarmonyEngine":
        """Load a gpt-oss GGUF with llama-cpp-python (``swa_full`` left at its default).

        Raises :class:`ModelNotFoundError` for a missing file and :class:`ModelError` when
        llama.cpp cannot load it or when its ``general.architecture`` is not ``gpt-oss``.
        """
        path = Path(model_path).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"model file not found: {str(path)!r}")
        if not path.is_file():
            raise ModelError(f"model path is not a file: {str(path)!r}")
        from llama_cpp import Llama

        from .llama_backend import install_llama_log_filter

        install_llama_log_filter()
        kwargs = dict(llama_kwargs)
        kwargs.setdefault("n_ctx", n_ctx)
        if n_threads is not None:
            kwargs["n_threads"] = n_threads
        if seed is not None:
            kwargs["seed"] = seed
        try:
            llm = Llama(model_path=str(path), verbose=verbose, **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp could not load {str(path)!r}: {exc}") from exc
        arch = (getattr(llm, "metadata", None) or {}).get("general.architecture")
        if arch != "gpt-oss":
            try:
                llm.close()
            except Exception:  # pragma: no cover
                pass
            raise ModelError(f"{str(path)!r} is a {arch!r} model, not gpt-oss (general.architecture); "
                             f"llama-harmony only drives gpt-oss models")
        return cls(llm, encoding=encoding, cot_policy=cot_policy, constrained=constrained,
                   reuse_generated_ids=reuse_generated_ids, replay=replay)

    @classmethod
    def from_upstream(cls, urls: Union[str, Sequence[str]], *, api_key: Optional[str] = None,
                      model_name: Optional[str] = None, wait: float = 30.0, encoding: Any = None,
                      cot_policy: str = "spec", constrained: bool = False, reuse_generated_ids: bool = True,
                      replay: Any = None, **pool_options: Any) -> "HarmonyEngine":
        """An engine over llama-server replicas (gateway mode; see :mod:`llama_harmony.gateway`).

        ``urls``: one or more ``http://host:port`` of llama-server processes serving the same
        gpt-oss model; ``api_key``: their ``--api-key``; ``model_name``: the id reported to
        clients (default: the upstream's alias); ``wait``: seconds to wait for an upstream to
        answer. ``pool_options`` go to :class:`~llama_harmony.upstream.UpstreamPool`. Raises
        :class:`~llama_harmony.upstream.UpstreamUnavailable` when none answers.
        """
        from .gateway import UpstreamBackend

        backend = UpstreamBackend(urls, api_key=api_key, **pool_options)
        backend.connect(timeout=wait)
        if model_name:
            backend.model_name = model_name
        return cls(backend=backend, encoding=encoding, cot_policy=cot_policy, constrained=constrained,
                   reuse_generated_ids=reuse_generated_ids, replay=replay)

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """The context window of one generation, in tokens."""
        return int(self.backend.n_ctx)

    def render(self, messages: Sequence[Mapping[str, Any]], *, tools: Any = None, tool_choice: Any = None,
               reasoning_effort: Any = None, response_format: Any = None, **convert_kwargs: Any) -> List[int]:
        """The prompt ids of a chat request (``...<|start|>assistant``), rendered by llama_harmony."""
        convo = messages_to_conversation(messages, tools=tools, tool_choice=tool_choice,
                                         reasoning_effort=reasoning_effort, response_format=response_format,
                                         cot_policy=self.cot_policy, **convert_kwargs)
        return self.render_conversation(convo, limits=convert_kwargs.get("limits"))

    def render_conversation(self, conversation: Any, *, limits: Any = None) -> List[int]:
        """The prompt ids of a Harmony conversation (``...<|start|>assistant``) under this
        engine's chain-of-thought policy."""
        return self.encoding.render_conversation_for_completion(conversation, Role.ASSISTANT,
                                                                render_config(self.cot_policy), limits=limits)

    # -- prompt splicing (see the module docstring) -----------------------------------------------

    def _remember(self, exchange: _Exchange) -> None:
        with self._exchange_lock:
            self._exchanges.append(exchange)

    def _generated_span(self, ex: _Exchange) -> Any:
        """``(model ids, canonical ids)`` of the messages ``ex.generated`` holds, both starting
        with ``<|start|>assistant`` and ending with the history terminator, or False when those
        ids are not a clean Harmony history (malformed, special tokens in a body...)."""
        if ex.span is None:
            ex.span = False
            gen = ex.generated
            if gen and gen[-1] in (CALL_ID, RETURN_ID):
                model = self._turn_tail + gen[:-1] + [CALL_ID if gen[-1] == CALL_ID else END_ID]
                try:
                    msgs = self.encoding.parse_messages_from_completion_tokens(model, None, strict=True)
                    canon: List[int] = []
                    for m in msgs:
                        canon += self.encoding.render(m)
                except Exception:
                    return ex.span
                if msgs and ([t for t in model if t >= FIRST_SPECIAL_ID]
                             == [t for t in canon if t >= FIRST_SPECIAL_ID]):
                    ex.span = (model, canon)
        return ex.span

    def _splice_one(self, ex: _Exchange, normal: List[int]) -> Optional[Tuple[List[int], int]]:
        tail = self._turn_tail
        nt = len(tail)
        if ex.normal[-nt:] != tail or ex.actual[-nt:] != tail:
            return None
        nb = len(ex.normal) - nt
        if len(normal) < len(ex.normal) or normal[:nb] != ex.normal[:nb]:
            return None
        base = ex.actual[:-nt]
        rest = normal[nb:]
        span = self._generated_span(ex)
        if span:
            model, canon = span
            if len(rest) >= len(canon) + nt and rest[:len(canon)] == canon:
                return base + model + rest[len(canon):], ex.spliced + len(model) - nt
        if ex.spliced == 0:
            return None
        return base + rest, ex.spliced

    def _splice(self, normal: List[int]) -> "tuple[List[int], int]":
        """The prompt to evaluate for the canonical render ``normal``, and how many of its ids
        come from earlier generations (the newest remembered request that it continues)."""
        tail = self._turn_tail
        if not self.reuse_generated_ids or normal[-len(tail):] != tail:
            return normal, 0
        with self._exchange_lock:
            recent = list(self._exchanges)
        for ex in reversed(recent):
            out = self._splice_one(ex, normal)
            if out is not None:
                return out
        return normal, 0

    def _new_parser(self, role: Any = Role.ASSISTANT) -> Any:
        """llama_harmony's lenient streaming parser (never raises on model output)."""
        return StreamableParser(self.encoding, role, strict=False)

    def _check_prompt(self, prompt_ids: Sequence[int]) -> None:
        n_ctx = self.n_ctx
        if len(prompt_ids) >= n_ctx:
            raise ContextOverflowError(len(prompt_ids), n_ctx)
        if not prompt_ids:
            raise ValueError("empty prompt")

    def _max_tokens(self, prompt_len: int, max_tokens: Optional[int]) -> int:
        room = self.n_ctx - prompt_len
        if max_tokens is None or max_tokens <= 0:
            return room
        return min(int(max_tokens), room)

    def _forced(self) -> Optional[List[int]]:
        return self.replay.next_ids(self.encoding) if self.replay is not None else None

    # -- generations -----------------------------------------------------------------------------

    def turn(self, prompt_ids: Sequence[int], params: Optional[SamplingParams] = None, *,
             processors: Sequence[Any] = (), grammar: Any = None,
             schemas: Optional[Mapping[str, Optional[dict]]] = None, response_schema: Optional[dict] = None,
             forced: Optional[Sequence[int]] = None, normal_ids: Optional[Sequence[int]] = None,
             spliced: int = 0) -> Turn:
        """A :class:`Turn` (one generation, not started) after ``prompt_ids``.

        ``schemas``/``response_schema`` constrain tool arguments / the final message
        (``constrained`` engines; see the module docstring). ``forced`` ids are emitted exactly
        (default: the engine's replay, if any). ``normal_ids``: the canonical render when
        ``prompt_ids`` came from :meth:`prepare_prompt` (the request is then remembered for
        prompt splicing; ``spliced``: what :meth:`prepare_prompt` counted). Raises :class:`ContextOverflowError` now when the prompt does not fit.
        """
        exchange = None
        if normal_ids is not None:
            exchange = _Exchange(normal=list(normal_ids), actual=list(prompt_ids), spliced=spliced)
        if forced is None:
            forced = self._forced()
        return Turn(self, prompt_ids, params or SamplingParams(), processors=processors, grammar=grammar,
                    forced=forced, schemas=schemas, response_schema=response_schema, exchange=exchange)

    def prepare_prompt(self, normal_ids: Sequence[int]) -> Tuple[List[int], int]:
        """``(prompt ids to evaluate, ids spliced from earlier generations)`` for a canonical
        render (prompt splicing, see the module docstring)."""
        return self._splice(list(normal_ids))

    def generate_ids(self, prompt_ids: Sequence[int], *, max_tokens: Optional[int] = None, temperature: float = 1.0,
                     top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0, repeat_penalty: float = 1.0,
                     seed: Optional[int] = None, logits_processor: Any = None, grammar: Any = None,
                     logit_bias: Optional[Mapping[Any, float]] = None, **sampling: Any) -> Iterator[int]:
        """Sample ids after ``prompt_ids`` (rendered by llama_harmony) until an end-of-generation
        id (yielded too) or ``max_tokens`` (default: the rest of the context). Holds the engine
        lock while iterating. Raises :class:`ContextOverflowError` at call time."""
        params = _params(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                         repeat_penalty=repeat_penalty, seed=seed, logit_bias=logit_bias, extra=sampling)
        turn = Turn(self, prompt_ids, params, processors=list(logits_processor or []), grammar=grammar,
                    forced=self._forced())

        def it() -> Iterator[int]:
            for event in turn.events():
                if event.token is not None:
                    yield event.token.id

        return it()

    # -- chat completions ------------------------------------------------------------------------

    @overload
    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]], *, stream: Literal[False] = False,
                               **kwargs: Any) -> Dict[str, Any]: ...

    @overload
    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]], *, stream: Literal[True],
                               **kwargs: Any) -> Iterator[Dict[str, Any]]: ...

    @overload
    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]], *, stream: bool,
                               **kwargs: Any) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]: ...

    def create_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Optional[Sequence[Any]] = None,
        tool_choice: Any = None,
        stream: bool = False,
        reasoning_effort: Any = None,
        response_format: Optional[Mapping[str, Any]] = None,
        max_tokens: Optional[int] = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: Optional[Union[str, Sequence[str]]] = None,
        logits_processor: Any = None,
        grammar: Any = None,
        stream_options: Optional[Mapping[str, Any]] = None,
        model: Optional[str] = None,
        logprobs: Optional[bool] = None,
        top_logprobs: Optional[int] = None,
        **ignored: Any,
    ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """An OpenAI chat completion (``stream=False``) or an iterator of chunks.

        Extra sampling keywords accepted: ``typical_p``, ``presence_penalty``,
        ``frequency_penalty``, ``tfs_z``, ``mirostat_mode``, ``mirostat_tau``,
        ``mirostat_eta``, ``logit_bias``; ``model_identity`` and ``conversation_start_date``
        reach the system message; ``limits`` (a :class:`~llama_harmony.Limits`) bounds the
        request. Other keywords are ignored. Request errors
        (:class:`~llama_harmony.openai_request.OpenAIFormatError`, :class:`ContextOverflowError`,
        :class:`~llama_harmony.LimitExceeded`, ``ValueError`` for a bad ``top_logprobs``) are
        raised at call time, also when streaming.
        """
        request = self.chat_request(messages, tools=tools, tool_choice=tool_choice, reasoning_effort=reasoning_effort,
                                    response_format=response_format, max_tokens=max_tokens, temperature=temperature,
                                    top_p=top_p, top_k=top_k, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed,
                                    stop=stop, logits_processor=logits_processor, grammar=grammar,
                                    stream_options=stream_options, model=model, logprobs=logprobs,
                                    top_logprobs=top_logprobs, **ignored)
        body = request.chunks()
        if stream:
            return body
        for _ in body:
            pass
        return request.stream.completion()

    def chat_request(self, messages: Sequence[Mapping[str, Any]], *, tools: Optional[Sequence[Any]] = None,
                     tool_choice: Any = None, reasoning_effort: Any = None,
                     response_format: Optional[Mapping[str, Any]] = None, max_tokens: Optional[int] = None,
                     temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
                     repeat_penalty: float = 1.0, seed: Optional[int] = None,
                     stop: Optional[Union[str, Sequence[str]]] = None, logits_processor: Any = None,
                     grammar: Any = None, stream_options: Optional[Mapping[str, Any]] = None,
                     model: Optional[str] = None, logprobs: Optional[bool] = None, top_logprobs: Optional[int] = None,
                     forced: Optional[Sequence[int]] = None, rendered: Optional[Sequence[int]] = None,
                     **extra: Any) -> "ChatRequest":
        """A prepared chat request (rendered, spliced, checked; not started): its
        :class:`Turn` and the :class:`~llama_harmony.openai_output.ChunkStream` that shapes its
        output. :meth:`create_chat_completion` is ``chat_request(...).chunks()``; the HTTP
        server drives :meth:`ChatRequest.achunks` instead. Same arguments and errors;
        ``rendered``: the request's render, when the caller made it already (:meth:`render`)."""
        convert = {k: extra[k] for k in ("model_identity", "conversation_start_date", "limits", "builtin_tools")
                   if k in extra}
        if rendered is not None:
            normal_ids = list(rendered)
        else:
            normal_ids = self.render(messages, tools=tools, tool_choice=tool_choice,
                                     reasoning_effort=reasoning_effort, response_format=response_format, **convert)
        prompt_ids, spliced = self._splice(normal_ids)
        self._check_prompt(prompt_ids)
        k = _top_logprobs(logprobs, top_logprobs)
        params = _params(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                         repeat_penalty=repeat_penalty, seed=seed, logit_bias=extra.get("logit_bias"),
                         extra=extra, logprobs=k)
        schemas = tool_schemas(tools, tool_choice) if (self.constrained and grammar is None) else {}
        rf = response_format_schema(response_format) if (self.constrained and grammar is None) else None
        include_usage = bool(stream_options and stream_options.get("include_usage"))
        cs = ChunkStream(model=model or self.model_name, id=new_completion_id(), created=int(time.time()),
                         include_usage=include_usage, stop=stop, logprobs=k is not None)
        turn = self.turn(prompt_ids, params, processors=list(logits_processor or []), grammar=grammar,
                         schemas=schemas, response_schema=rf[1] if rf else None, forced=forced,
                         normal_ids=normal_ids, spliced=spliced)
        return ChatRequest(self, turn, cs)


class ChatRequest:
    """A chat request made by :meth:`HarmonyEngine.chat_request`: a :class:`Turn` whose events
    a :class:`~llama_harmony.openai_output.ChunkStream` turns into ``chat.completion.chunk``
    dicts (stop strings end the generation; log-probabilities ride on the content chunks)."""

    def __init__(self, engine: HarmonyEngine, turn: Turn, stream: ChunkStream):
        """Set up the ChatRequest (the parameters are described in the class docstring)."""
        self.engine = engine
        self.turn = turn
        self.stream = stream

    def _token_bytes(self, token: int) -> bytes:
        return self.engine.encoding.decode_bytes([token])

    def chunks_for(self, event: TurnEvent) -> List[Dict[str, Any]]:
        """The chunks one :class:`TurnEvent` makes (a stop string stops the turn)."""
        cs = self.stream
        entry = None
        if cs.logprobs and event.token is not None and event.kind == "content" and event.token.logprob is not None:
            entry = logprob_entry(event.token, self._token_bytes)
        out = cs.feed(event.deltas, logprob=entry)
        if cs.stopped:
            self.turn.stop("stop")
        return out

    def finish_chunks(self) -> List[Dict[str, Any]]:
        """The last chunks (held-back text, ``finish_reason``, usage) once the turn ended."""
        r = self.turn.result
        return self.stream.finish(r.finish_reason, prompt_tokens=r.prompt_tokens,
                                  completion_tokens=r.completion_tokens, cached_tokens=r.cached_tokens or 0,
                                  reasoning_tokens=r.reasoning_tokens)

    def chunks(self) -> Iterator[Dict[str, Any]]:
        """The chunks, generated in this thread (holds the model from the first chunk on)."""
        with self.engine.backend.hold():
            yield self.stream.start()
            for event in self.turn.events_held():
                yield from self.chunks_for(event)
        yield from self.finish_chunks()

    async def achunks(self) -> AsyncIterator[Dict[str, Any]]:
        """The chunks from asyncio (the generation runs in a worker thread; see :meth:`Turn.aevents`)."""
        yield self.stream.start()
        async for event in self.turn.aevents():
            for chunk in self.chunks_for(event):
                yield chunk
        for chunk in self.finish_chunks():
            yield chunk


def _top_logprobs(logprobs: Optional[bool], top_logprobs: Optional[int]) -> Optional[int]:
    """``SamplingParams.logprobs`` for OpenAI's ``logprobs``/``top_logprobs``."""
    if top_logprobs is not None:
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) \
                or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be an integer between 0 and {MAX_TOP_LOGPROBS}, got {top_logprobs!r}")
        if not logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
    if not logprobs:
        return None
    return int(top_logprobs or 0)


def _params(*, max_tokens: Optional[int], temperature: Optional[float], top_p: Optional[float], top_k: Optional[int],
            min_p: Optional[float], repeat_penalty: Optional[float], seed: Optional[int],
            logit_bias: Optional[Mapping[Any, float]], extra: Mapping[str, Any],
            logprobs: Optional[int] = None) -> SamplingParams:
    names = ("typical_p", "frequency_penalty", "presence_penalty", "tfs_z", "mirostat_mode", "mirostat_tau",
             "mirostat_eta")
    return SamplingParams(
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        top_k=0 if top_k is None else int(top_k),
        min_p=0.0 if min_p is None else float(min_p),
        repeat_penalty=1.0 if repeat_penalty is None else float(repeat_penalty),
        seed=None if seed is None else int(seed),
        max_tokens=max_tokens if (max_tokens is not None and max_tokens > 0) else None,
        logit_bias={int(k): float(v) for k, v in (logit_bias or {}).items()},
        logprobs=logprobs,
        extra={k: extra[k] for k in names if extra.get(k) is not None},
    )


def install_llama_log_filter() -> None:
    """See :func:`llama_harmony.llama_backend.install_llama_log_filter`."""
    from .llama_backend import install_llama_log_filter as install

    install()


from .chat_handler import CHAT_FORMAT_NAME, HarmonyChatHandler, register_chat_format  # noqa: E402
