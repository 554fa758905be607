"""The engine's backend over llama-server replicas (gateway mode).

:class:`UpstreamBackend` makes an :class:`~llama_harmony.upstream.UpstreamPool` look like the
in-process backend to :class:`~llama_harmony.engine.HarmonyEngine`: prompt ids and
:class:`~llama_harmony.sampling.SamplingParams` in, :class:`~llama_harmony.sampling.TokenStep`
values out. The Harmony layer above it is the same code as in-process: the same renderer,
prompt splicing, lenient parser, chat and Responses shapes.

    engine = HarmonyEngine.from_upstream(["http://127.0.0.1:8081", "http://127.0.0.1:8082"])
    engine.create_chat_completion([{"role": "user", "content": "Hi"}])

Many generations run at once (continuous batching happens in llama-server), so the backend
is not ``serial``: the HTTP server does not queue requests for it. Asynchronous code (the
server) generates through :meth:`UpstreamBackend.agenerate` on its own event loop (a pool per
loop, made on first use); synchronous callers go through a private event-loop thread.

What maps to llama-server: every :class:`SamplingParams` field (see
:func:`llama_harmony.upstream.completion_request`); constrained bodies (JSON Schemas) go as
llama-server's ``json_schema``; forbidding special ids as ``logit_bias`` ``false``; forced
completions (replay mode) as grammars of token terminals, split into several generations
where llama.cpp's grammar cannot force an id (:func:`llama_harmony.upstream.forced_segments`). llama-cpp-python logits processors run
in-process only: passing one here raises ``TypeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from dataclasses import replace
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .sampling import EOG_IDS, SamplingParams, TokenStep

__all__ = ["UpstreamBackend"]

FIRST_SPECIAL_ID = 199998
N_VOCAB = 201088
RETURN_ID = 200002


class _Stream:
    """One generation through the pool: an async iterator of steps that keeps the pool's
    :class:`~llama_harmony.upstream.Generation` (``cached_tokens`` of the prompt once done).

    ``plan``: the generations to run one after the other, each ``(expected ids or None,
    params)``; a later one continues after every id emitted so far (forced completions that
    llama.cpp's grammar cannot force in one go, see
    :func:`~llama_harmony.upstream.forced_segments`)."""

    def __init__(self, backend: "UpstreamBackend", prompt_ids: Sequence[int],
                 plan: Sequence[Tuple[Optional[List[int]], SamplingParams]]):
        self._backend = backend
        self._prompt = list(prompt_ids)
        self._plan = list(plan)
        self._gen: Any = None
        self._expected: Optional[List[int]] = None
        self._emitted: List[int] = []
        self._pos = 0
        self._started = 0
        self.cached_tokens: Optional[int] = None
        self.replica: Optional[str] = None

    def __aiter__(self) -> "_Stream":
        return self

    async def __anext__(self) -> TokenStep:
        while True:
            if self._gen is None:
                if not self._plan:
                    raise StopAsyncIteration
                self._expected, params = self._plan.pop(0)
                self._pos = 0
                pool = await self._backend.pool()
                self._gen = pool.generate(self._prompt + self._emitted, params)
                self._started += 1
            try:
                step = await self._gen.__anext__()
            except StopAsyncIteration:
                self._note()
                if self._expected is not None and self._pos != len(self._expected):
                    self._mismatch(f"ended after {self._pos} of {len(self._expected)} forced ids")
                if not self._plan:
                    raise
                self._gen = None
                continue
            if self._expected is not None:
                if self._pos >= len(self._expected) or step.id != self._expected[self._pos]:
                    self._mismatch(f"emitted id {step.id} where the forced completion has "
                                   f"{self._expected[self._pos] if self._pos < len(self._expected) else 'no more'}")
                self._pos += 1
            self._emitted.append(step.id)
            return step

    def _mismatch(self, what: str) -> None:
        from .upstream import UpstreamProtocolError

        raise UpstreamProtocolError(self._gen.replica or ",".join(self._backend.urls), what)

    def _note(self) -> None:
        if self._gen is not None:
            if self._started == 1:  # the prompt's cache figure (later parts continue it)
                self.cached_tokens = self._gen.cached_tokens
            self.replica = self._gen.replica

    async def aclose(self) -> None:
        self._plan = []
        if self._gen is not None:
            await self._gen.aclose()
            self._note()


class UpstreamBackend:
    """Generation on llama-server replicas (see the module docstring).

    :param urls: the replicas (``http://host:port``).
    :param api_key: llama-server's ``--api-key``.
    :param pool_options: passed to :class:`~llama_harmony.upstream.UpstreamPool`
        (``connect_timeout``, ``read_timeout``, ``health_interval``, ``max_attempts``, ...).
    """

    kind = "llama-server"
    #: Many generations at once: llama-server batches them.
    serial = False

    def __init__(self, urls: Sequence[str], *, api_key: Optional[str] = None, **pool_options: Any):
        """Set up the UpstreamBackend (the parameters are described in the class docstring)."""
        from .upstream import UpstreamPool

        if isinstance(urls, str):
            urls = [urls]
        self.urls = [u.rstrip("/") for u in urls]
        self.api_key = api_key
        self.pool_options = dict(pool_options)
        UpstreamPool(self.urls, api_key=api_key, **self.pool_options)  # validates the arguments now
        self.model_name: Optional[str] = None
        self.n_ctx: int = 0
        self._pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()
        self._starting: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future]" = \
            weakref.WeakKeyDictionary()
        self._bg_loop: Optional[asyncio.AbstractEventLoop] = None
        self._bg_lock = threading.Lock()

    # -- the pools ---------------------------------------------------------------------------

    def _new_pool(self) -> Any:
        from .upstream import UpstreamPool

        return UpstreamPool(self.urls, api_key=self.api_key, **self.pool_options)

    async def pool(self) -> Any:
        """The pool of the running event loop (made and started on first use)."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        starting = self._starting.get(loop)
        if starting is None:
            starting = loop.create_future()
            self._starting[loop] = starting
            try:
                p = self._new_pool()
                await p.start()
                self._learn(p)
                self._pools[loop] = p
                starting.set_result(p)
            except BaseException as exc:
                self._starting.pop(loop, None)
                starting.set_exception(exc)
                starting.exception()  # retrieved: no "never retrieved" warning
                raise
        return await asyncio.shield(starting)

    def _learn(self, pool: Any) -> None:
        if pool.model_name and not self.model_name:
            self.model_name = pool.model_name
        if pool.n_ctx:
            self.n_ctx = int(pool.n_ctx)

    async def aclose(self) -> None:
        """Close the running loop's pool."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()

    def stats(self) -> List[Tuple[str, Dict[str, Any]]]:
        """Per-upstream counters of every pool, summed by URL (for ``/metrics``)."""
        rows: Dict[str, Dict[str, Any]] = {}
        for pool in list(self._pools.values()):
            for url, st in pool.stats().items():
                row = rows.setdefault(url, {"requests": 0, "failures": 0, "tokens": 0, "in_flight": 0,
                                            "healthy": False, "cached_tokens": 0, "prompt_tokens": 0})
                for key in ("requests", "failures", "tokens", "in_flight", "cached_tokens", "prompt_tokens"):
                    row[key] += int(st.get(key, 0) or 0)
                row["healthy"] = row["healthy"] or bool(st.get("healthy"))
        return sorted(rows.items())

    def connect(self, timeout: float = 30.0) -> None:
        """Reach the upstreams once (model name, context per slot), waiting up to ``timeout``
        seconds for one to answer. Raises :class:`~llama_harmony.upstream.UpstreamUnavailable`
        (or :class:`~llama_harmony.upstream.UpstreamAuthError`)."""
        from .upstream import UpstreamUnavailable

        async def probe() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            pool = self._new_pool()
            try:
                await pool.start()
                while not pool.n_ctx and loop.time() < deadline:
                    await asyncio.sleep(0.25)
                    await pool.check_health()
                self._learn(pool)
            finally:
                await pool.aclose()
            if not self.n_ctx:
                raise UpstreamUnavailable(",".join(self.urls), f"no upstream answered within {timeout:g} s")

        asyncio.run(probe())

    # -- the backend protocol ------------------------------------------------------------------

    def hold(self) -> contextlib.AbstractContextManager:
        """Nothing to hold: every generation has its own slot upstream."""
        return contextlib.nullcontext()

    busy = False

    def cached_prefix(self, ids: Sequence[int]) -> Optional[int]:
        """Not known before the upstream answers (it reports it at the end)."""
        return None

    def constraint(self, schema: Mapping[str, Any]) -> Any:
        """A JSON Schema constraint (sent as llama-server's ``json_schema``)."""
        return {"json_schema": dict(schema)}

    def _params(self, params: SamplingParams, *, processors: Sequence[Any], grammar: Any,
                mask_specials: bool) -> SamplingParams:
        if processors:
            raise TypeError("logits processors run in-process only (llama-cpp-python); an upstream "
                            "llama-server cannot call Python code")
        if grammar is not None:
            if isinstance(grammar, Mapping) and "json_schema" in grammar:
                params = replace(params, json_schema=grammar["json_schema"])
            elif isinstance(grammar, str):
                params = replace(params, grammar=grammar)
            else:
                raise TypeError("an upstream takes a grammar as GBNF text (a llama_cpp.LlamaGrammar object "
                                "only works in-process)")
        if mask_specials:
            bias = dict(params.logit_bias)
            for i in range(FIRST_SPECIAL_ID, N_VOCAB):
                if i not in EOG_IDS:
                    bias[i] = float("-inf")
            params = replace(params, logit_bias=bias)
        return params

    @staticmethod
    def _forced_plan(forced: Sequence[int], params: SamplingParams) -> List[Tuple[Optional[List[int]], SamplingParams]]:
        """The generations that emit ``forced`` exactly (then ``<|return|>``, as in-process),
        cut at ``max_tokens``. The request's sampling settings do not apply: the output is
        given."""
        from .upstream import forced_segments

        ids = [int(t) for t in forced]
        if not ids or ids[-1] not in EOG_IDS:
            ids.append(RETURN_ID)
        if params.max_tokens is not None:
            ids = ids[:max(1, params.max_tokens)]
        return [(seg, p) for seg, p in forced_segments(ids, logprobs=params.logprobs)]

    def agenerate(self, prompt_ids: Sequence[int], params: SamplingParams, *, processors: Sequence[Any] = (),
                  grammar: Any = None, forced: Optional[Sequence[int]] = None,
                  mask_specials: bool = False) -> _Stream:
        """Sample after ``prompt_ids`` on the running event loop's pool: an async iterator of
        steps (``aclose()`` stops the upstream generation); ``cached_tokens`` once it ended.
        ``forced`` ids are emitted exactly (replay mode), in one generation or, when they
        split characters over several ids, in a few."""
        params = self._params(params, processors=processors, grammar=grammar, mask_specials=mask_specials)
        if forced is not None:
            return _Stream(self, prompt_ids, self._forced_plan(forced, params))
        return _Stream(self, prompt_ids, [(None, params)])

    # -- synchronous use (the Python API) -----------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        with self._bg_lock:
            if self._bg_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="llama-harmony-upstream", daemon=True).start()
                self._bg_loop = loop
            return self._bg_loop

    def generate(self, prompt_ids: Sequence[int], params: SamplingParams, *, processors: Sequence[Any] = (),
                 grammar: Any = None, forced: Optional[Sequence[int]] = None,
                 mask_specials: bool = False) -> Iterator[TokenStep]:
        """:meth:`agenerate` for synchronous callers (runs on a private event-loop thread);
        closing the iterator stops the upstream generation."""
        stream = self.agenerate(prompt_ids, params, processors=processors, grammar=grammar, forced=forced,
                                mask_specials=mask_specials)
        loop = self._loop()
        q: "queue.Queue[Any]" = queue.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for step in stream:
                    q.put(step)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                q.put(_Raised(exc))
            finally:
                await stream.aclose()
                q.put(done)

        fut = asyncio.run_coroutine_threadsafe(pump(), loop)
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, _Raised):
                    if isinstance(item.exc, asyncio.CancelledError):
                        return
                    raise item.exc
                yield item
        finally:
            if not fut.done():
                fut.cancel()
                try:
                    fut.result(timeout=30)
                except BaseException:  # noqa: BLE001 - cancelled as asked
                    pass


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc
