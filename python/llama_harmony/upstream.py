"""Token generation on llama.cpp's own server (``llama-server``), over HTTP, for one or many replicas.

The Harmony layer renders token ids and parses token ids; this module only moves ids: the
prompt goes to llama-server's ``POST /completion`` **as a list of token ids** (never through
its chat template or tokenizer), sampling happens there (continuous batching across requests,
per-slot prefix caching), and the generated ids come back one by one as
:class:`~llama_harmony.sampling.TokenStep` values, exactly as the in-process engine yields
them: the last step is the end-of-generation id (``<|return|>`` 200002, ``<|call|>`` 200012,
``<|endoftext|>`` 199999) unless ``max_tokens`` (or the context) ended the generation first.

Needs ``httpx`` (the ``server`` extra). Asynchronous; no sync facade.

    pool = UpstreamPool(["http://127.0.0.1:8081", "http://127.0.0.1:8082"])
    await pool.start()
    gen = pool.generate(prompt_ids, SamplingParams(temperature=0.0, max_tokens=256))
    async with gen:
        async for step in gen:
            parser.process(step.id)
    gen.replica, gen.prompt_tokens, gen.cached_tokens, gen.stop_reason
    await pool.aclose()

Classes
-------
:class:`LlamaServerReplica`
    One llama-server: :meth:`~LlamaServerReplica.stream` (one generation),
    :meth:`~LlamaServerReplica.health`, :meth:`~LlamaServerReplica.props`, its health state,
    in-flight count and :class:`ReplicaStats`.
:class:`UpstreamPool`
    Several replicas of one model: :meth:`~UpstreamPool.generate` routes a prompt (prefix
    affinity, else least loaded), checks health in the background, fails over, and returns a
    :class:`Generation`.
:func:`forced_completion`
    Sampling settings that make llama-server emit exactly given ids through its normal
    sampling loop (replay mode, tests); not for ids that split a UTF-8 character (llama.cpp's
    grammar cannot force those): :func:`forced_segments` forces any ids, in several
    generations.
:func:`completion_request`
    The ``POST /completion`` body for prompt ids and :class:`SamplingParams`.

Errors (all :class:`UpstreamError`, each naming the upstream URL)
    :class:`UpstreamUnavailable` (no healthy replica, or every attempt failed before the
    first token: the server answers 503), :class:`UpstreamStreamError` (the stream was cut
    after ``tokens_yielded`` ids: the server ends the response with an error chunk),
    :class:`UpstreamAuthError` (401/403: wrong or missing ``api_key``),
    :class:`UpstreamRequestError` (llama-server refused the request itself, e.g. a prompt
    longer than a slot's context: not retried), :class:`UpstreamProtocolError` (the upstream
    answered something this module cannot use exactly, e.g. a stream that withheld ids).

Request fields used (llama.cpp of llama-cpp-python 0.3.36, ``tools/server``)
-------------------------------------------------------------------------------
``POST /completion`` with ``prompt`` (list of ids), ``stream: true``, ``return_tokens: true``,
``cache_prompt: true``, ``n_predict`` (``max_tokens``, -1: until the context is full),
``temperature``, ``top_k`` (0: off; 1 for greedy requests, ``temperature`` 0), ``top_p``,
``min_p``, ``typical_p``, ``repeat_penalty``, ``repeat_last_n`` (64, llama-cpp-python's
default), ``presence_penalty``, ``frequency_penalty``, ``mirostat``/``mirostat_tau``/``mirostat_eta``,
``dry_multiplier`` 0,
``xtc_probability`` 0, ``dynatemp_range`` 0, ``top_n_sigma`` -1 (every sampler the
in-process engine does not use is switched off explicitly, whatever the server's command-line
defaults), ``seed`` (omitted: random), ``logit_bias`` (``[[id, bias], ...]``), ``grammar``
(GBNF), ``n_probs`` + ``post_sampling_probs: false`` (log-probabilities from the raw logits),
``id_slot`` (optional), ``sse_ping_interval`` (keeps a quiet stream observable).

Streamed chunks (SSE ``data:`` lines; ``:`` lines are pings): ``tokens`` (the ids of this
chunk), ``tokens_predicted`` (ids generated so far), ``tokens_evaluated`` (prompt length),
``completion_probabilities`` (``[{id, logprob, top_logprobs: [{id, logprob}, ...]}]``),
``stop`` (true on the last chunk), which carries ``stop_type`` (``eos``/``limit``/``word``),
``truncated``, ``tokens_cached`` and ``timings.cache_n`` (prompt ids taken from the KV cache)
and ``timings.prompt_n`` (prompt ids evaluated). An ``error`` object ends a failed stream.
``GET /health`` (200 ``{"status": "ok"}``; 503 while loading; no API key needed),
``GET /props`` (``model_alias``, ``model_path``, ``total_slots``,
``default_generation_settings.n_ctx`` = context per slot), ``GET /slots``
(``is_processing``, ``next_token[0].n_decoded`` per slot), ``GET /metrics`` (with
``--metrics``). API key: ``Authorization: Bearer KEY``.

llama-server holds back a streamed chunk whose text ends inside a UTF-8 character, and upstream
llama.cpp drops that chunk's token id with it. ``scripts/build-llama-server.sh`` builds
llama-server with a small patch that returns every id when ``return_tokens`` is set. A replica
without it is detected at :meth:`UpstreamPool.start` (a one-token probe) and served in
``whole`` mode: non-streamed requests (exact ids, all at the end), never a wrong id.

Routing
-------
* Prefix affinity: each replica remembers (bounded LRU of chained hashes of 32-id blocks) the
  prompts it served and what it generated for them. A prompt goes to the healthy replica that
  holds its longest prefix when that prefix is at least ``affinity_min_tokens`` long and the
  replica is not busier than the least-loaded one by more than its slot count; within the
  replica, llama-server itself picks the idle slot whose cached ids share the longest prefix
  (``--slot-prompt-similarity``) and keeps evicted prefixes in its host-memory prompt cache.
  gpt-oss uses sliding-window attention: start llama-server with ``--swa-full`` so a cached
  prefix can be reused whatever follows it.
* Otherwise the replica with the fewest requests in flight per slot; ties go round robin.

Health and failover
-------------------
* Every ``health_interval`` seconds each replica's ``GET /health`` is checked (timeout
  ``health_timeout``); a failing replica is marked down, a passing one up again.
* A replica that refuses the connection, answers 5xx, breaks the stream, or stays silent for
  ``read_timeout`` seconds while streaming is marked down. Waiting for the first chunk (queued
  behind busy slots, or evaluating a long prompt) is not a failure while the replica's
  ``/health`` answers; when it stops answering, the request fails over.
* A request that has not yielded an id yet is retried on another healthy replica (each
  replica at most once, at most ``max_attempts`` attempts); after the first id a failure raises
  :class:`UpstreamStreamError` (never a hang). No healthy replica: :class:`UpstreamUnavailable`.

Cancellation: closing a :class:`Generation` (``aclose()``, leaving ``async with``, or
cancelling the task iterating it) closes its HTTP stream; llama-server notices the closed
connection and frees the slot.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any, AsyncGenerator, AsyncIterator, Dict, List, Mapping, Optional, Sequence, Tuple

import httpx

from .sampling import EOG_IDS, SamplingParams, TokenStep

__all__ = [
    "Generation",
    "LlamaServerReplica",
    "ReplicaStats",
    "UpstreamAuthError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamRequestError",
    "UpstreamStreamError",
    "UpstreamUnavailable",
    "completion_request",
    "forced_completion",
    "forced_completion_grammar",
    "forced_segments",
]

#: Bias given to the final end-of-generation id by :func:`forced_completion`.
FORCE_BIAS = 1000.0

#: llama-cpp-python's default ``last_n_tokens_size`` (the repeat-penalty window).
REPEAT_LAST_N = 64

_EXTRA_FIELDS = {
    "typical_p": "typical_p",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "mirostat_mode": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class UpstreamError(Exception):
    """Base of every error of this module; ``upstream`` is the replica's URL (or the pool's
    URLs, comma-separated)."""

    def __init__(self, upstream: str, message: str) -> None:
        """Set up the UpstreamError (the parameters are described in the class docstring)."""
        super().__init__(f"upstream {upstream}: {message}")
        self.upstream = upstream
        self.message = message


class UpstreamUnavailable(UpstreamError):
    """No healthy replica could start the generation; ``attempts`` lists ``(url, reason)``
    of every replica tried. The HTTP server maps it to 503."""

    def __init__(self, upstream: str, message: str, attempts: Sequence[Tuple[str, str]] = ()) -> None:
        """Set up the UpstreamUnavailable (the parameters are described in the class docstring)."""
        super().__init__(upstream, message)
        self.attempts = list(attempts)


class UpstreamStreamError(UpstreamError):
    """The stream broke after ``tokens_yielded`` ids had been yielded (they stand; the
    generation cannot be resumed elsewhere)."""

    def __init__(self, upstream: str, message: str, tokens_yielded: int) -> None:
        """Set up the UpstreamStreamError (the parameters are described in the class docstring)."""
        super().__init__(upstream, message)
        self.tokens_yielded = tokens_yielded


class UpstreamRequestError(UpstreamError):
    """llama-server refused the request itself (HTTP ``status``, e.g. 400 for a prompt longer
    than a slot's context); retrying elsewhere would not help."""

    def __init__(self, upstream: str, message: str, status: int) -> None:
        """Set up the UpstreamRequestError (the parameters are described in the class docstring)."""
        super().__init__(upstream, message)
        self.status = status


class UpstreamAuthError(UpstreamRequestError):
    """401/403 from the upstream: ``api_key`` is missing or wrong for it."""


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something that cannot be turned into exact token steps."""


class _ReplicaFailure(Exception):
    """Internal: the replica failed (transport, 5xx, silence); the pool decides what follows."""


# --------------------------------------------------------------------------------------------
# Request building
# --------------------------------------------------------------------------------------------


def _check_ids(ids: Sequence[int], what: str) -> List[int]:
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"{what}: token ids must be non-negative integers, got {i!r}")
        out.append(int(i))
    return out


def completion_request(prompt_ids: Sequence[int], params: SamplingParams, *, stream: bool = True,
                       id_slot: Optional[int] = None, ping_interval: int = -1) -> Dict[str, Any]:
    """The JSON body of ``POST /completion`` for ``prompt_ids`` sampled with ``params``.

    Every sampler is set explicitly (the server's command-line defaults never leak in); the
    ones :class:`SamplingParams` has no field for are switched off. Raises ``ValueError``
    naming the offending field.
    """
    prompt = _check_ids(prompt_ids, "prompt_ids")
    if not prompt:
        raise ValueError("prompt_ids: the prompt must hold at least one id")
    p = params
    for name in ("temperature", "top_p", "min_p", "repeat_penalty"):
        v = getattr(p, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name}: expected a finite number, got {v!r}")
    if p.temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {p.temperature!r}")
    if not 0.0 <= p.top_p <= 1.0:
        raise ValueError(f"top_p: must be in [0, 1], got {p.top_p!r}")
    if not 0.0 <= p.min_p <= 1.0:
        raise ValueError(f"min_p: must be in [0, 1], got {p.min_p!r}")
    if isinstance(p.top_k, bool) or not isinstance(p.top_k, int) or p.top_k < 0:
        raise ValueError(f"top_k: expected an integer >= 0, got {p.top_k!r}")
    body: Dict[str, Any] = {
        "prompt": prompt,
        "stream": stream,
        "return_tokens": True,
        "cache_prompt": True,
        "n_predict": -1,
        "temperature": float(p.temperature),
        "top_k": int(p.top_k),
        "top_p": float(p.top_p),
        "min_p": float(p.min_p),
        "typical_p": 1.0,
        "repeat_penalty": float(p.repeat_penalty),
        "repeat_last_n": REPEAT_LAST_N,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "mirostat": 0,
        "dry_multiplier": 0.0,
        "xtc_probability": 0.0,
        "dynatemp_range": 0.0,
        "top_n_sigma": -1.0,
        "ignore_eos": False,
        "stop": [],
        "n_probs": 0,
        "post_sampling_probs": False,
    }
    if p.temperature == 0 and not p.extra.get("mirostat_mode"):
        # Greedy: the first id with the highest logit, as llama.cpp's greedy rule (and its
        # ``temperature`` 0) picks it; top_k 1 picks that same id without the softmax over the
        # whole vocabulary that top_k 0 leads to (2 ms per token on a CPU, measured).
        body["top_k"] = 1
    if p.max_tokens is not None:
        if isinstance(p.max_tokens, bool) or not isinstance(p.max_tokens, int) or p.max_tokens < 1:
            raise ValueError(f"max_tokens: expected an integer >= 1, got {p.max_tokens!r}")
        body["n_predict"] = int(p.max_tokens)
    if p.seed is not None:
        if isinstance(p.seed, bool) or not isinstance(p.seed, int) or not 0 <= p.seed < 2 ** 32:
            raise ValueError(f"seed: expected an integer in [0, 2**32), got {p.seed!r}")
        body["seed"] = int(p.seed)
    if p.logit_bias:
        bias = []
        for tok, b in p.logit_bias.items():
            if isinstance(tok, bool) or not isinstance(tok, int) or tok < 0:
                raise ValueError(f"logit_bias: keys must be token ids, got {tok!r}")
            if isinstance(b, bool) or not isinstance(b, (int, float)) or math.isnan(b):
                raise ValueError(f"logit_bias[{tok}]: expected a number, got {b!r}")
            # JSON has no infinity; llama-server reads ``false`` as "never".
            bias.append([tok, False if b == -math.inf else max(min(float(b), 1e30), -1e30)])
        body["logit_bias"] = bias
    if p.grammar is not None:
        if not isinstance(p.grammar, str) or not p.grammar.strip():
            raise ValueError("grammar: expected non-empty GBNF text")
        body["grammar"] = p.grammar
    elif p.json_schema is not None:
        if not isinstance(p.json_schema, Mapping):
            raise ValueError("json_schema: expected a JSON Schema object")
        body["json_schema"] = dict(p.json_schema)
    if p.logprobs is not None:
        if isinstance(p.logprobs, bool) or not isinstance(p.logprobs, int) or not 0 <= p.logprobs <= 20:
            raise ValueError(f"logprobs: expected an integer in [0, 20], got {p.logprobs!r}")
        # n_probs 0 turns probabilities off; the sampled id's log-probability needs >= 1.
        body["n_probs"] = max(1, p.logprobs)
    for name, value in p.extra.items():
        if name == "tfs_z":
            if value not in (None, 1.0):
                raise ValueError("extra.tfs_z: tail-free sampling is not in llama-server")
            continue
        field = _EXTRA_FIELDS.get(name)
        if field is None:
            raise ValueError(f"extra.{name}: unknown sampler (known: {', '.join(sorted(_EXTRA_FIELDS))}, tfs_z)")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"extra.{name}: expected a finite number, got {value!r}")
        body[field] = int(value) if field == "mirostat" else float(value)
    if id_slot is not None:
        body["id_slot"] = int(id_slot)
    if ping_interval > 0:
        body["sse_ping_interval"] = int(ping_interval)
    return body


def forced_completion_grammar(ids: Sequence[int]) -> Tuple[str, Dict[int, float]]:
    """The GBNF grammar and ``logit_bias`` that make llama.cpp emit exactly ``ids``.

    ``ids`` must end with an end-of-generation id (:data:`~llama_harmony.sampling.EOG_IDS`)
    and hold no other one. The grammar is a sequence of token terminals ``<[id]>`` for every
    id but the last (an end-of-generation id inside a grammar aborts llama.cpp); once it is
    complete llama.cpp lets only end-of-generation ids through, and the bias picks the wanted
    one. llama.cpp's grammar sampler rejects an id whose text completes no UTF-8 character
    (a character split over several ids, e.g. a lone lead byte) even when a token terminal
    names it, so such sequences raise ``ValueError`` naming the first such id.
    """
    seq = _check_ids(ids, "ids")
    if not seq or seq[-1] not in EOG_IDS:
        raise ValueError(f"ids: must end with an end-of-generation id {sorted(EOG_IDS)}")
    if any(i in EOG_IDS for i in seq[:-1]):
        raise ValueError("ids: an end-of-generation id may only come last")
    bad = _unforcible_index(seq[:-1])
    if bad is not None:
        raise ValueError(f"ids[{bad}] ({seq[bad]}): its text completes no UTF-8 character (a character split "
                         "over several ids); llama.cpp's grammar rejects such an id, so it cannot be forced")
    if len(seq) == 1:
        # An empty root is not valid GBNF; with no grammar, the bias alone picks the EOG id.
        return "", {seq[-1]: FORCE_BIAS}
    body = " ".join(f"<[{i}]>" for i in seq[:-1])
    return f"root ::= {body}\n", {seq[-1]: FORCE_BIAS}


def _unforcible_index(ids: Sequence[int]) -> Optional[int]:
    """The first of ``ids`` that llama.cpp's grammar sampler rejects even when a token terminal
    names it: an id whose bytes, decoded after the previous ids, give no whole UTF-8 character
    and end inside one (``llama_grammar_reject_candidates_for_stack``)."""
    enc = _native()
    remain = 0  # continuation bytes still expected
    for k, tok in enumerate(ids):
        data = enc.decode_bytes([tok])
        whole, pos = False, 0
        while pos < len(data) and remain > 0:
            if data[pos] >> 6 != 2:
                return k  # an unfinished character cut by a non-continuation byte
            pos, remain = pos + 1, remain - 1
            whole = remain == 0
        while pos < len(data):
            lead = data[pos]
            need = 0 if lead < 0x80 else 1 if lead >> 5 == 6 else 2 if lead >> 4 == 14 else 3 if lead >> 3 == 30 else -1
            if need < 0:
                return k
            take = min(need, len(data) - pos - 1)
            pos, remain = pos + 1 + take, need - take
            whole = whole or remain == 0
        if not whole and remain > 0:
            return k
    return None


_NATIVE: Any = None


def _native() -> Any:
    global _NATIVE
    if _NATIVE is None:
        from ._core import NativeEncoding

        _NATIVE = NativeEncoding()
    return _NATIVE


def forced_completion(ids: Sequence[int], *, logprobs: Optional[int] = None) -> SamplingParams:
    """:class:`SamplingParams` under which llama-server generates exactly ``ids`` (ending with
    an end-of-generation id) through its normal sampling loop: greedy, with the grammar and
    bias of :func:`forced_completion_grammar` and ``max_tokens = len(ids)``."""
    grammar, bias = forced_completion_grammar(ids)
    return _forcing(len(ids), bias, grammar or None, logprobs)


def _forcing(n: int, bias: Dict[int, float], grammar: Optional[str], logprobs: Optional[int]) -> SamplingParams:
    return SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                          max_tokens=n, logit_bias=bias, grammar=grammar, logprobs=logprobs)


def forced_segments(ids: Sequence[int], *, logprobs: Optional[int] = None) -> List[Tuple[List[int], SamplingParams]]:
    """Successive generations that together make llama-server emit exactly ``ids``, also ids
    :func:`forced_completion` cannot force (characters split over several ids: emoji, rare
    CJK characters): ``[(segment ids, params), ...]``; each generation's prompt is the
    previous one's plus every id emitted so far.

    Runs of forcible ids go as token-terminal grammars (``max_tokens`` = the run's length;
    the last run also gets the end-of-generation bias when ``ids`` ends with an
    end-of-generation id); an id the grammar rejects goes alone, forced by a logit bias
    (greedy, one token). ``ids`` may hold an end-of-generation id only last; without one,
    generation stops after the last id. Raises ``ValueError`` naming the bad field.
    """
    seq = _check_ids(ids, "ids")
    if not seq:
        raise ValueError("ids: nothing to force")
    eog = seq[-1] if seq[-1] in EOG_IDS else None
    body = seq[:-1] if eog is not None else seq
    if any(i in EOG_IDS for i in body):
        raise ValueError("ids: an end-of-generation id may only come last")
    out: List[Tuple[List[int], SamplingParams]] = []
    i = 0
    while i < len(body):
        bad = _unforcible_index(body[i:])  # a fresh grammar: the UTF-8 state starts anew
        if bad == 0:
            out.append(([body[i]], _forcing(1, {body[i]: FORCE_BIAS}, None, logprobs)))
            i += 1
            continue
        end = len(body) if bad is None else i + bad
        run = body[i:end]
        i = end
        if i == len(body) and eog is not None:
            out.append((run + [eog], forced_completion(run + [eog], logprobs=logprobs)))
            return out
        out.append((run, _forcing(len(run), {}, "root ::= " + " ".join(f"<[{t}]>" for t in run) + "\n",
                                  logprobs)))
    if eog is not None:
        out.append(([eog], forced_completion([eog], logprobs=logprobs)))
    return out


# --------------------------------------------------------------------------------------------
# One replica
# --------------------------------------------------------------------------------------------


@dataclass
class ReplicaStats:
    """Counters of one replica (for ``/metrics``): ``requests`` started on it, ``failures``
    (transport errors, 5xx, silence), ``tokens`` generated, ``prompt_tokens`` and
    ``cached_tokens`` (prompt ids it took from its KV cache) of finished generations,
    ``in_flight`` now, ``healthy`` now, ``mode`` (``stream`` or ``whole``)."""

    url: str
    healthy: bool = False
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    mode: str = "stream"
    last_error: str = ""


@dataclass
class _Outcome:
    """What the replica told about one generation, filled in as it goes."""

    prompt_tokens: Optional[int] = None
    cached_tokens: Optional[int] = None
    stop_reason: Optional[str] = None
    truncated: bool = False
    generated: int = 0


class LlamaServerReplica:
    """One llama-server at ``url`` (``http://host:port``, no trailing path).

    :param api_key: sent as ``Authorization: Bearer`` (llama-server's ``--api-key``).
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: longest silence, in seconds, on a stream that has started.
    :param health_timeout: seconds for ``GET /health`` to answer.
    :param mode: ``stream`` (ids as they are sampled; needs the patched llama-server, see the
        module docstring), ``whole`` (one non-streamed request: exact ids at the end, for an
        unpatched llama-server) or ``auto`` (``stream``; :meth:`probe` decides).
    :param client: an ``httpx.AsyncClient`` to share (the pool passes one); otherwise the
        replica makes its own and closes it in :meth:`aclose`.
    """

    def __init__(self, url: str, *, api_key: Optional[str] = None, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, health_timeout: float = 5.0, mode: str = "auto",
                 client: Optional[httpx.AsyncClient] = None) -> None:
        """Set up the LlamaServerReplica (the parameters are described in the class docstring)."""
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: expected http://host:port, got {url!r}")
        if mode not in ("auto", "stream", "whole"):
            raise ValueError(f"mode: expected auto, stream or whole, got {mode!r}")
        for name, v in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout),
                        ("health_timeout", health_timeout)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {v!r}")
        self.url = url
        self.read_timeout = float(read_timeout)
        self.health_timeout = float(health_timeout)
        self.mode = "stream" if mode == "auto" else mode
        self.mode_probed = mode != "auto"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_client = client is None
        self._client = client or _make_client(connect_timeout)
        self._connect_timeout = float(connect_timeout)
        self.stats = ReplicaStats(url=url, mode=self.mode)
        #: ``/props`` once read: model name, slots, context per slot.
        self.model_name: Optional[str] = None
        self.n_slots: int = 1
        self.n_ctx: Optional[int] = None

    # -- state --------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether the last health check or request succeeded."""
        return self.stats.healthy

    @property
    def in_flight(self) -> int:
        """Generations running on this replica now."""
        return self.stats.in_flight

    def mark_down(self, reason: str) -> None:
        """Take the replica out of rotation until a health check passes."""
        self.stats.healthy = False
        self.stats.last_error = reason

    def mark_up(self) -> None:
        """Put the replica back in rotation."""
        self.stats.healthy = True

    # -- simple endpoints ---------------------------------------------------------------

    async def health(self) -> bool:
        """``GET /health``: True when the model is loaded and the server answers in time.
        Updates :attr:`healthy`."""
        try:
            r = await self._client.get(self.url + "/health", timeout=self.health_timeout)
            ok = r.status_code == 200
            reason = "" if ok else f"/health answered {r.status_code}"
        except httpx.HTTPError as e:
            ok, reason = False, f"/health: {type(e).__name__}: {e}"
        if ok:
            self.mark_up()
        else:
            self.mark_down(reason)
        return ok

    async def _get_json(self, path: str) -> Any:
        try:
            r = await self._client.get(self.url + path, headers=self._headers, timeout=self.health_timeout)
        except httpx.HTTPError as e:
            raise UpstreamUnavailable(self.url, f"GET {path}: {type(e).__name__}: {e}") from e
        if r.status_code != 200:
            raise _status_error(self.url, r.status_code, r.text, f"GET {path}")
        return r.json()

    async def props(self) -> Dict[str, Any]:
        """``GET /props``, and remember the model name (``model_alias``), the number of slots
        (``total_slots``) and the context of one slot (``default_generation_settings.n_ctx``)."""
        props = await self._get_json("/props")
        self.model_name = props.get("model_alias") or None
        self.n_slots = max(1, int(props.get("total_slots") or 1))
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        self.n_ctx = int(n_ctx) if n_ctx else None
        return props

    async def slots(self) -> List[Dict[str, Any]]:
        """``GET /slots``: the state of every slot (``is_processing``, ``next_token``...)."""
        return await self._get_json("/slots")

    async def metrics_text(self) -> str:
        """``GET /metrics`` (llama-server started with ``--metrics``), as Prometheus text."""
        try:
            r = await self._client.get(self.url + "/metrics", headers=self._headers, timeout=self.health_timeout)
        except httpx.HTTPError as e:
            raise UpstreamUnavailable(self.url, f"GET /metrics: {type(e).__name__}: {e}") from e
        if r.status_code != 200:
            raise _status_error(self.url, r.status_code, r.text, "GET /metrics")
        return r.text

    async def probe(self, probe_id: int, prompt_id: int = 17) -> str:
        """Decide :attr:`mode`: generate one id, ``probe_id`` (forced by a logit bias), whose
        text ends inside a UTF-8 character (a lone lead byte), and check that the stream
        carries it. Returns the mode chosen (``whole`` also when the probe itself fails)."""
        params = SamplingParams(temperature=0.0, max_tokens=1, logit_bias={int(probe_id): FORCE_BIAS})
        got: List[int] = []
        agen = self._stream_chunks([prompt_id], params, None, _Outcome(), stream=True)
        try:
            async for step in agen:
                got.append(step.id)
        except (UpstreamProtocolError, _ReplicaFailure, UpstreamRequestError) as e:
            if isinstance(e, UpstreamAuthError):
                raise
            self.stats.last_error = f"streaming probe: {e}"
            got = []
        finally:
            await agen.aclose()
        self.mode = "stream" if got == [probe_id] else "whole"
        self.mode_probed = True
        self.stats.mode = self.mode
        return self.mode

    async def aclose(self) -> None:
        """Close the HTTP client if the replica made it."""
        if self._own_client:
            await self._client.aclose()

    # -- generation ---------------------------------------------------------------------

    async def stream(self, prompt_ids: Sequence[int], params: SamplingParams, *,
                     id_slot: Optional[int] = None) -> AsyncIterator[TokenStep]:
        """Generate on this replica alone: an async iterator of :class:`TokenStep`.

        No retry: a failure raises :class:`UpstreamUnavailable` before the first id,
        :class:`UpstreamStreamError` after it (and marks the replica down). Closing the
        iterator early closes the HTTP stream, which stops llama-server's generation.
        """
        outcome = _Outcome()
        yielded = 0
        agen = self._generate(prompt_ids, params, id_slot, outcome)
        try:
            async for step in agen:
                yielded += 1
                yield step
        except _ReplicaFailure as e:
            if yielded:
                raise UpstreamStreamError(self.url, str(e), yielded) from None
            raise UpstreamUnavailable(self.url, str(e), [(self.url, str(e))]) from None
        finally:
            await agen.aclose()

    async def _generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                        id_slot: Optional[int], outcome: _Outcome) -> AsyncGenerator[TokenStep, None]:
        """One attempt, with the bookkeeping (in flight, counters, health on failure)."""
        self.stats.in_flight += 1
        self.stats.requests += 1
        try:
            agen = self._stream_chunks(prompt_ids, params, id_slot, outcome, stream=self.mode == "stream")
            try:
                async for step in agen:
                    self.stats.tokens += 1
                    yield step
            finally:
                await agen.aclose()
            self.stats.prompt_tokens += outcome.prompt_tokens or 0
            self.stats.cached_tokens += outcome.cached_tokens or 0
        except _ReplicaFailure as e:
            self.stats.failures += 1
            self.mark_down(str(e))
            raise
        finally:
            self.stats.in_flight -= 1

    async def _open(self, body: Dict[str, Any]) -> httpx.Response:
        """Send ``POST /completion`` and wait for the response headers.

        llama-server answers a streamed request only with its first result, so a request
        queued behind busy slots is silent: while ``/health`` answers, keep waiting."""
        request = self._client.build_request("POST", self.url + "/completion", json=body, headers=self._headers)
        send = asyncio.ensure_future(self._client.send(request, stream=True))
        try:
            while True:
                done, _ = await asyncio.wait({send}, timeout=self.read_timeout)
                if done:
                    break
                try:
                    r = await self._client.get(self.url + "/health", timeout=self.health_timeout)
                    alive = r.status_code == 200
                except httpx.HTTPError:
                    alive = False
                if not alive:
                    raise _ReplicaFailure(f"no answer within {self.read_timeout:g} s and /health fails")
            try:
                return send.result()
            except httpx.TimeoutException as e:
                raise _ReplicaFailure(f"timeout: {type(e).__name__}") from e
            except httpx.HTTPError as e:
                raise _ReplicaFailure(f"{type(e).__name__}: {e}") from e
        except BaseException:
            if not send.done():
                send.cancel()
                try:
                    await send
                except BaseException:
                    pass
            elif not send.cancelled() and send.exception() is None:
                await send.result().aclose()
            raise

    async def _stream_chunks(self, prompt_ids: Sequence[int], params: SamplingParams,
                             id_slot: Optional[int], outcome: _Outcome, *, stream: bool) -> AsyncGenerator[TokenStep, None]:
        ping = max(1, int(self.read_timeout / 3)) if stream else -1
        body = completion_request(prompt_ids, params, stream=stream, id_slot=id_slot, ping_interval=ping)
        k = params.logprobs
        response = await self._open(body)
        try:
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", "replace")
                if response.status_code >= 500:
                    raise _ReplicaFailure(f"HTTP {response.status_code}: {_error_message(text)}")
                raise _status_error(self.url, response.status_code, text, "POST /completion")
            if not stream:
                data = json.loads(await _with_timeout(response.aread(), self.read_timeout, "response body"))
                for step in self._whole_steps(data, k, outcome):
                    yield step
                return
            reads = response.aiter_bytes()
            buf = b""
            while True:
                # One timeout per network read (a read usually holds a whole event).
                try:
                    buf += await _with_timeout(reads.__anext__(), self.read_timeout, "stream")
                except StopAsyncIteration:
                    raise _ReplicaFailure("the stream ended before its last chunk") from None
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue  # blank separators and ":" pings
                    chunk = json.loads(line[5:].decode("utf-8", "replace"))
                    if not isinstance(chunk, dict):
                        raise _ReplicaFailure(f"unexpected chunk {line[:100]!r}")
                    if "error" in chunk:
                        raise self._error_chunk(chunk["error"])
                    if outcome.prompt_tokens is None and chunk.get("tokens_evaluated") is not None:
                        outcome.prompt_tokens = int(chunk["tokens_evaluated"])
                    ids = chunk.get("tokens") or ()
                    probs = chunk.get("completion_probabilities") or ()
                    for j, tok in enumerate(ids):
                        outcome.generated += 1
                        yield _step(int(tok), probs[j] if j < len(probs) else None, k)
                    predicted = chunk.get("tokens_predicted")
                    if predicted is not None and int(predicted) > outcome.generated:
                        raise UpstreamProtocolError(
                            self.url, f"llama-server generated {predicted} ids but streamed {outcome.generated}: "
                            "it withholds ids whose text ends inside a UTF-8 character (build it with "
                            "scripts/build-llama-server.sh, or use mode='whole')")
                    if chunk.get("stop"):
                        _finish(chunk, outcome)
                        return
        except (httpx.TimeoutException, httpx.TransportError, httpx.StreamError) as e:
            raise _ReplicaFailure(f"{type(e).__name__}: {e}") from e
        except ValueError as e:  # JSON (json.JSONDecodeError), or a non-integer id
            raise _ReplicaFailure(f"malformed chunk: {e}") from e
        finally:
            await response.aclose()

    def _error_chunk(self, err: Any) -> Exception:
        """The exception for an ``error`` object in the stream: 5xx is the replica's failure,
        anything else a refusal of the request."""
        code = int(err.get("code") or 500) if isinstance(err, dict) else 500
        msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        if code >= 500:
            return _ReplicaFailure(f"error chunk {code}: {msg}")
        return UpstreamRequestError(self.url, f"error chunk {code}: {msg}", code)

    def _whole_steps(self, data: Mapping[str, Any], k: Optional[int], outcome: _Outcome) -> List[TokenStep]:
        """Steps from a non-streamed answer; probabilities are matched to ids in order (an
        unpatched llama-server leaves out the entries of ids whose text it held back)."""
        if isinstance(data, list):
            data = data[0]
        ids = [int(t) for t in data.get("tokens") or []]
        if int(data.get("tokens_predicted") or 0) != len(ids):
            raise UpstreamProtocolError(self.url, "the answer does not list every generated id")
        probs = list(data.get("completion_probabilities") or [])
        steps, pi = [], 0
        for tok in ids:
            entry = None
            if pi < len(probs) and int(probs[pi].get("id", -1)) == tok:
                entry, pi = probs[pi], pi + 1
            steps.append(_step(tok, entry, k))
        outcome.prompt_tokens = int(data.get("tokens_evaluated") or 0)
        outcome.generated = len(ids)
        _finish(data, outcome)
        return steps


def _make_client(connect_timeout: float) -> httpx.AsyncClient:
    # Read timeouts are handled per chunk by the replica (a queued request may wait long).
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=connect_timeout, read=None, write=connect_timeout, pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        trust_env=False,
    )


if sys.version_info >= (3, 11):

    async def _with_timeout(awaitable: Any, seconds: float, what: str) -> Any:
        """``await awaitable``, failing the replica after ``seconds``. ``asyncio.timeout``
        (not ``wait_for``, which can swallow a cancellation that races with the result, and
        a cancelled consumer must close the stream)."""
        try:
            async with asyncio.timeout(seconds):
                return await awaitable
        except TimeoutError:
            raise _ReplicaFailure(f"{what}: silent for {seconds:g} s") from None

else:  # pragma: no cover - Python < 3.11

    async def _with_timeout(awaitable: Any, seconds: float, what: str) -> Any:
        """``await awaitable``, failing the replica after ``seconds``: a timer cancels this
        task (``wait_for`` can swallow a cancellation that races with the result)."""
        task = asyncio.current_task()
        assert task is not None
        fired = []

        def expire() -> None:
            fired.append(True)
            task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if fired:
                raise _ReplicaFailure(f"{what}: silent for {seconds:g} s") from None
            raise
        finally:
            handle.cancel()


def _error_message(text: str) -> str:
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
    except (ValueError, AttributeError):
        pass
    return text.strip()[:300]


def _status_error(url: str, status: int, text: str, what: str) -> UpstreamError:
    msg = f"{what} answered {status}: {_error_message(text)}"
    if status in (401, 403):
        return UpstreamAuthError(url, msg + " (check the upstream API key)", status)
    return UpstreamRequestError(url, msg, status)


def _step(tok: int, entry: Optional[Mapping[str, Any]], k: Optional[int]) -> TokenStep:
    if k is None or entry is None:
        return TokenStep(tok)
    top = tuple((int(t["id"]), float(t["logprob"])) for t in (entry.get("top_logprobs") or [])[:k])
    return TokenStep(tok, float(entry["logprob"]), top)


def _finish(chunk: Mapping[str, Any], outcome: _Outcome) -> None:
    timings = chunk.get("timings") or {}
    if timings.get("cache_n") is not None:
        outcome.cached_tokens = int(timings["cache_n"])
    outcome.truncated = bool(chunk.get("truncated"))
    stop_type: Any = chunk.get("stop_type")  # (a JSON string, or None: both looked up as they are)
    outcome.stop_reason = {"eos": "eos", "limit": "length", "word": "stop"}.get(stop_type, stop_type)


# --------------------------------------------------------------------------------------------
# Prefix affinity
# --------------------------------------------------------------------------------------------


class _PrefixMemory:
    """Chained hashes of ``block``-id blocks of the prompts a replica holds, newest last,
    at most ``capacity`` blocks (an LRU)."""

    def __init__(self, block: int, capacity: int) -> None:
        self.block = block
        self.capacity = capacity
        self._blocks: "collections.OrderedDict[int, None]" = collections.OrderedDict()

    def chain(self, ids: Sequence[int]) -> List[int]:
        """The chained hash after each full block of ``ids``."""
        out, h, b = [], 0, self.block
        for start in range(0, len(ids) - b + 1, b):
            h = hash((h, tuple(ids[start:start + b])))
            out.append(h)
        return out

    def remember(self, chain: Sequence[int]) -> None:
        for h in chain:
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)

    def forget(self) -> None:
        self._blocks.clear()

    def matched(self, chain: Sequence[int]) -> int:
        """How many leading blocks of ``chain`` this replica holds."""
        lo, hi = 0, len(chain)  # blocks are remembered prefix-closed: binary search
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if chain[mid - 1] in self._blocks:
                lo = mid
            else:
                hi = mid - 1
        return lo


# --------------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------------


class Generation:
    """One generation routed by :class:`UpstreamPool`: an async iterator of
    :class:`TokenStep` (use ``async with`` or :meth:`aclose` to end it early).

    Attributes, set as they become known: ``replica`` (URL of the replica that produced the
    ids), ``prompt_tokens`` (at the first id), ``cached_tokens`` (prompt ids llama-server took
    from its KV cache), ``stop_reason`` (``eos``, ``length`` or ``stop``), ``truncated``
    (the slot's context filled up), ``attempts`` (``(url, reason)`` of failed attempts).
    """

    def __init__(self, pool: "UpstreamPool", prompt_ids: Sequence[int], params: SamplingParams) -> None:
        """Set up the Generation (the parameters are described in the class docstring)."""
        self._pool = pool
        self._prompt = list(prompt_ids)
        self._params = params
        self.replica: Optional[str] = None
        self.prompt_tokens: Optional[int] = None
        self.cached_tokens: Optional[int] = None
        self.stop_reason: Optional[str] = None
        self.truncated = False
        self.attempts: List[Tuple[str, str]] = []
        self.ids: List[int] = []
        self._agen = self._run()

    def __aiter__(self) -> "Generation":
        return self

    async def __anext__(self) -> TokenStep:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop the generation (closes the HTTP stream: llama-server frees the slot)."""
        await self._agen.aclose()

    async def __aenter__(self) -> "Generation":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[TokenStep, None]:
        pool = self._pool
        completion_request(self._prompt, self._params)  # bad arguments fail here, before routing
        chain = pool._memory_chain(self._prompt)
        tried: List[LlamaServerReplica] = []
        while True:
            replica = pool._choose(chain, tried)
            if replica is None:
                urls = ",".join(r.url for r in pool.replicas)
                reason = "no healthy replica" if not self.attempts else f"{len(self.attempts)} attempt(s) failed"
                raise UpstreamUnavailable(urls, reason, self.attempts)
            tried.append(replica)
            pool._memory(replica).remember(chain)
            outcome = _Outcome()
            agen = replica._generate(self._prompt, self._params, None, outcome)
            try:
                async for step in agen:
                    if not self.ids:
                        self.replica = replica.url
                        self.prompt_tokens = outcome.prompt_tokens
                    self.ids.append(step.id)
                    yield step
            except _ReplicaFailure as e:
                if self.ids:
                    raise UpstreamStreamError(replica.url, str(e), len(self.ids)) from None
                self.attempts.append((replica.url, str(e)))
                continue
            finally:
                await agen.aclose()
            self.replica = replica.url
            self.prompt_tokens = outcome.prompt_tokens
            self.cached_tokens = outcome.cached_tokens
            self.stop_reason = outcome.stop_reason
            self.truncated = outcome.truncated
            # The replica now also holds what it generated (the next turn's prefix).
            pool._memory(replica).remember(pool._memory_chain(self._prompt + self.ids))
            return


class UpstreamPool:
    """Replicas of one model behind llama-server, with routing, health checks and failover.

    :param urls: the replicas (``http://host:port``).
    :param api_key: llama-server's ``--api-key`` (the same for every replica).
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: longest silence on a started stream (and how long to wait for the
        first chunk before asking ``/health`` whether the replica is alive).
    :param health_interval: seconds between background health checks.
    :param health_timeout: seconds for ``/health`` to answer.
    :param max_attempts: replicas tried for one generation before :class:`UpstreamUnavailable`.
    :param affinity_min_tokens: shortest shared prefix that routes by affinity.
    :param affinity_block: ids per hashed block (prefix matches are counted in blocks).
    :param affinity_capacity: blocks remembered per replica.
    :param mode: ``auto`` (probe each replica at :meth:`start`), ``stream`` or ``whole``
        (see :class:`LlamaServerReplica`).
    :param probe_id: for ``auto``: an id whose text is an incomplete UTF-8 character
        (default: o200k's lone byte ``0xE4``).
    """

    def __init__(self, urls: Sequence[str], *, api_key: Optional[str] = None, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, health_interval: float = 5.0, health_timeout: float = 5.0,
                 max_attempts: int = 3, affinity_min_tokens: int = 64, affinity_block: int = 32,
                 affinity_capacity: int = 1 << 16, mode: str = "auto",
                 probe_id: Optional[int] = None) -> None:
        """Set up the UpstreamPool (the parameters are described in the class docstring)."""
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            raise ValueError("urls: at least one upstream is needed")
        if len({u.rstrip('/') for u in urls}) != len(urls):
            raise ValueError("urls: an upstream is listed twice")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts: expected an integer >= 1, got {max_attempts!r}")
        if not isinstance(health_interval, (int, float)) or not health_interval > 0:
            raise ValueError(f"health_interval: expected a positive number, got {health_interval!r}")
        if not isinstance(affinity_block, int) or affinity_block < 1:
            raise ValueError(f"affinity_block: expected an integer >= 1, got {affinity_block!r}")
        self._client = _make_client(connect_timeout)
        self.replicas = [LlamaServerReplica(u, api_key=api_key, connect_timeout=connect_timeout,
                                            read_timeout=read_timeout, health_timeout=health_timeout,
                                            mode=mode, client=self._client) for u in urls]
        self.health_interval = float(health_interval)
        self.max_attempts = max_attempts
        self.affinity_min_tokens = int(affinity_min_tokens)
        self._probe_id = probe_id
        self._mem = {r.url: _PrefixMemory(affinity_block, affinity_capacity) for r in self.replicas}
        self._block = affinity_block
        self._rr = itertools.count()
        self._health_task: Optional[asyncio.Task] = None
        #: Model name from the first replica's ``/props`` (``model_alias``).
        self.model_name: Optional[str] = None
        #: Context of one slot, the smallest over the replicas (``None`` before :meth:`start`).
        self.n_ctx: Optional[int] = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Check every replica's health, read its ``/props`` (model name, slots, context),
        probe its streaming mode, and start the background health checks. Replicas that are
        down now join when they pass a check. Raises :class:`UpstreamAuthError` if a replica
        rejects the API key."""
        results = await asyncio.gather(*(self._refresh(r) for r in self.replicas), return_exceptions=True)
        for r, res in zip(self.replicas, results):
            if isinstance(res, (UpstreamAuthError, asyncio.CancelledError)):
                raise res
            if isinstance(res, Exception):
                r.mark_down(f"{type(res).__name__}: {res}")
        if self._health_task is None:
            self._health_task = asyncio.ensure_future(self._health_loop())

    async def aclose(self) -> None:
        """Stop the health checks and close the connections."""
        if self._health_task is not None:
            self._health_task.cancel()
            try:
                await self._health_task
            except asyncio.CancelledError:
                pass
            self._health_task = None
        await self._client.aclose()

    async def __aenter__(self) -> "UpstreamPool":
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _refresh(self, replica: LlamaServerReplica) -> None:
        was_up = replica.healthy
        if not await replica.health():
            return
        if was_up and replica.model_name is not None and replica.mode_probed:
            return
        try:
            await replica.props()
            if not replica.mode_probed:
                await replica.probe(self._lead_byte_id())
        except UpstreamAuthError:
            replica.mark_down("the upstream rejects the API key")
            raise
        except UpstreamError as e:
            replica.mark_down(str(e))
            return
        if not was_up:
            # A restarted replica has lost its KV cache.
            self._mem[replica.url].forget()
        if self.model_name is None:
            self.model_name = replica.model_name
        if replica.n_ctx is not None:
            self.n_ctx = replica.n_ctx if self.n_ctx is None else min(self.n_ctx, replica.n_ctx)

    async def check_health(self) -> List[str]:
        """Check every replica now (what the background loop does every ``health_interval``);
        returns the URLs in rotation afterwards."""
        results = await asyncio.gather(*(self._refresh(r) for r in self.replicas), return_exceptions=True)
        for r, res in zip(self.replicas, results):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, Exception):  # e.g. /props not JSON: out of rotation, checked again later
                r.mark_down(f"{type(res).__name__}: {res}")
        return self.healthy_replicas

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            await self.check_health()

    def _lead_byte_id(self) -> int:
        if self._probe_id is None:
            self._probe_id = _native().token_bytes_table(1024).index(b"\xe4")  # o200k's byte 0xE4
        return self._probe_id

    # -- routing ------------------------------------------------------------------------

    def _memory(self, replica: LlamaServerReplica) -> _PrefixMemory:
        return self._mem[replica.url]

    def _memory_chain(self, ids: Sequence[int]) -> List[int]:
        return self._mem[self.replicas[0].url].chain(ids)

    def _choose(self, chain: Sequence[int], tried: Sequence[LlamaServerReplica]) -> Optional[LlamaServerReplica]:
        if len(tried) >= self.max_attempts:
            return None
        live = [r for r in self.replicas if r.healthy and r not in tried]
        if not live:
            return None

        def load(r: LlamaServerReplica) -> float:
            return r.in_flight / r.n_slots

        least = min(load(r) for r in live)
        best, best_blocks = None, 0
        for r in live:
            n = self._mem[r.url].matched(chain)
            if n > best_blocks:
                best, best_blocks = r, n
        if (best is not None and best_blocks * self._block >= self.affinity_min_tokens
                and best.in_flight - least * best.n_slots <= best.n_slots):
            return best
        idle = [r for r in live if load(r) == least]
        return idle[next(self._rr) % len(idle)]

    # -- generation ---------------------------------------------------------------------

    def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        """Start a generation (lazily: nothing is sent before the first ``__anext__``).
        Bad arguments raise ``ValueError`` naming the field at the first step."""
        return Generation(self, prompt_ids, params)

    def stats(self) -> Dict[str, Dict[str, Any]]:
        """Per-replica counters (:class:`ReplicaStats` as dicts), keyed by URL."""
        return {r.url: asdict(replace(r.stats)) for r in self.replicas}

    @property
    def healthy_replicas(self) -> List[str]:
        """URLs of the replicas in rotation now."""
        return [r.url for r in self.replicas if r.healthy]
