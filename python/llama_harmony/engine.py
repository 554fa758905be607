"""Chat completions for gpt-oss on llama.cpp (llama-cpp-python), with Harmony done right.

:class:`HarmonyEngine` renders OpenAI chat requests with llama_harmony's renderer (never the
GGUF's Jinja template, never llama.cpp's tokenizer: ``<|start|>`` typed by a user stays
text), samples token ids with ``Llama.generate`` (every sampling argument, logits processor
and grammar honoured), parses the ids with llama_harmony's lenient streaming parser and
returns OpenAI-shaped ``chat.completion`` objects or ``chat.completion.chunk`` streams with
``reasoning_content``/``reasoning``, ``content`` and ``tool_calls``
(see :mod:`llama_harmony.openai_request` and :mod:`llama_harmony.openai_output` for the mapping policies).

    engine = HarmonyEngine.from_path("gpt-oss-20b-mxfp4.gguf", n_ctx=16384)
    reply = engine.create_chat_completion([{"role": "user", "content": "Hi"}])
    reply["choices"][0]["message"]["content"]

:class:`HarmonyChatHandler` plugs the same engine into llama-cpp-python's own API::

    llm = Llama(model_path=..., chat_handler=HarmonyChatHandler())
    llm.create_chat_completion(messages=[...], tools=[...], stream=True)

or, after :func:`register_chat_format`, ``Llama(..., chat_format="gpt-oss-harmony")``.

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
  stream raises ``RuntimeError`` instead of deadlocking.
* ``seed``: given -> ``Llama.set_seed(seed)`` before sampling; otherwise the Llama's seed is
  left as it is (the default seed samples randomly).
* ``logprobs`` are not supported (``logprobs: null``).

llama.cpp's log
---------------
llama-cpp-python 0.3.36 maps llama.cpp's log levels with a table that predates ggml's
renumbering (``DEBUG=1, INFO=2, WARN=3, ERROR=4``), so with ``verbose=False`` it prints every
WARN line (``llama_kv_cache_iswa: using full-size SWA cache ...``, ``decode: failed to find a
memory slot ...``, ``load: setting token ... attribute``) and hides the real errors.
:func:`install_llama_log_filter` (called by :class:`HarmonyEngine`, :meth:`HarmonyEngine.from_path`,
:class:`HarmonyChatHandler` and :func:`register_chat_format`) replaces llama-cpp-python's
process-wide log callback (also at import of this module when ``llama_cpp`` is already
imported; construct the engine or handler, or call the function, before loading a ``Llama``
to silence the load too) with one that reads the levels correctly and follows the same
switch (llama-cpp-python's ``verbose``, i.e. the level of the ``llama-cpp-python`` logger,
set by the most recently constructed ``Llama``): ``verbose=True`` prints every line to
stderr as before; ``verbose=False`` drops everything except ERROR lines (and their
continuation lines), which still reach stderr: they explain failures (a model llama.cpp
refuses) that the Python exception does not. The failed-slot warning is handled by the
engine (``finish_reason "length"``), so it is not an error.

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

import json
import logging
import os
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import HarmonyEncodingName, Role, StreamableParser, load_harmony_encoding
from .openai_output import ChunkStream, ParserTracker, message_kind, new_completion_id
from .openai_request import (
    OpenAIFormatError,
    messages_to_conversation,
    render_config,
    response_format_schema,
    tool_schemas,
)

__all__ = [
    "EOG_IDS",
    "OpenAIFormatError",
    "ModelError",
    "ModelNotFoundError",
    "ContextOverflowError",
    "HarmonyEngine",
    "HarmonyChatHandler",
    "register_chat_format",
    "CHAT_FORMAT_NAME",
    "install_llama_log_filter",
]

#: End-of-generation ids of gpt-oss in llama.cpp: <|endoftext|>, <|return|>, <|call|>.
EOG_IDS = frozenset({199999, 200002, 200012})
MESSAGE_ID = 200008
START_ID = 200006
END_ID = 200007
CALL_ID = 200012
RETURN_ID = 200002
FIRST_SPECIAL_ID = 199998
CHAT_FORMAT_NAME = "gpt-oss-harmony"


class ModelError(Exception):
    """The model file is missing, cannot be loaded, or is not a gpt-oss model."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model path does not exist (also a ``FileNotFoundError``)."""


class ContextOverflowError(ValueError):
    """The prompt does not fit the context window (``n_ctx``) with room to generate."""

    def __init__(self, prompt_tokens: int, n_ctx: int):
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the context window (n_ctx) is {n_ctx} tokens: "
            f"shorten the conversation or load the model with a larger n_ctx")
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        self.param = "messages"


@dataclass
class _Run:
    """Book-keeping of one generation."""

    prompt_tokens: int = 0
    max_tokens: int = 0
    generated: List[int] = field(default_factory=list)
    eog: Optional[int] = None
    truncated: bool = False
    error: Optional[BaseException] = None
    constraints: List[str] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        """Every sampled id, the end-of-generation id included (OpenAI counts it too)."""
        return len(self.generated)


@dataclass
class _Exchange:
    """The last chat request of an engine, for prompt splicing (see the module docstring)."""

    normal: List[int]  # the prompt as llama_harmony renders it
    actual: List[int]  # the prompt evaluated (``normal`` with earlier generations spliced in)
    spliced: int = 0  # ids of ``actual`` copied from earlier generations
    generated: Optional[List[int]] = None  # sampled ids, set when they ended on <|call|>/<|return|>
    span: Any = None  # cached (model ids, canonical ids) of ``generated``, or False


# =================================================================================================
# llama.cpp's log
# =================================================================================================

#: ggml_log_level -> logging level (ggml: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5).
_GGML_LEVELS = {0: 20, 1: 10, 2: 20, 3: 30, 4: 40}
_log_state: Dict[str, Any] = {"callback": None, "last": 20}
_LLAMA_CPP_LOGGER = logging.getLogger("llama-cpp-python")
_log_lock = threading.Lock()


def _llama_log(level: int, text: Optional[bytes], user_data: Any) -> None:
    """The log callback: print a line when its level reaches llama-cpp-python's logger level."""
    try:
        if level == 5:  # GGML_LOG_LEVEL_CONT: the level of the line it continues
            py_level = _log_state["last"]
        else:
            py_level = _log_state["last"] = _GGML_LEVELS.get(int(level), 20)
        threshold = _LLAMA_CPP_LOGGER.level or logging.ERROR
        if text and py_level >= threshold:
            print(text.decode("utf-8", "replace"), end="", flush=True, file=sys.stderr)
    except BaseException:  # pragma: no cover - never raise into C (e.g. at interpreter shutdown)
        pass


def install_llama_log_filter() -> None:
    """Install the log callback described in the module docstring (once per process; the
    ctypes callback object is kept alive for the life of the process)."""
    if _log_state["callback"] is not None:
        return
    with _log_lock:
        if _log_state["callback"] is not None:
            return
        import ctypes

        import llama_cpp
        import llama_cpp.llama  # noqa: F401  (imports llama_cpp._logger, which sets its own callback first)

        cb = llama_cpp.llama_log_callback(_llama_log)
        llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
        _log_state["callback"] = cb


def _sampling_kwargs(temperature: float, top_p: float, top_k: int, min_p: float, repeat_penalty: float,
                     extra: Mapping[str, Any]) -> Dict[str, Any]:
    kw = {
        "temp": float(temperature if temperature is not None else 1.0),
        "top_p": float(top_p if top_p is not None else 1.0),
        "top_k": int(top_k if top_k is not None else 0),
        "min_p": float(min_p if min_p is not None else 0.0),
        "repeat_penalty": float(repeat_penalty if repeat_penalty is not None else 1.0),
    }
    for name, cast in (("typical_p", float), ("frequency_penalty", float), ("presence_penalty", float),
                       ("tfs_z", float), ("mirostat_mode", int), ("mirostat_tau", float),
                       ("mirostat_eta", float)):
        if extra.get(name) is not None:
            kw[name] = cast(extra[name])
    return kw


class _LogitBias:
    """``logit_bias`` ({token id: bias}) as a logits processor."""

    def __init__(self, bias: Mapping[Any, float]):
        import numpy as np

        self.ids = np.array([int(k) for k in bias], dtype=np.int64)
        self.values = np.array([float(v) for v in bias.values()], dtype=np.float32)

    def __call__(self, input_ids, scores):
        scores[self.ids] += self.values
        return scores


class _MaskSpecials:
    """Sets every special id except the end-of-generation ones to -inf (constrained bodies)."""

    def __init__(self, n_vocab: int):
        import numpy as np

        ids = [i for i in range(FIRST_SPECIAL_ID, n_vocab) if i not in EOG_IDS]
        self.ids = np.array(ids, dtype=np.int64)

    def __call__(self, input_ids, scores):
        import numpy as np

        scores[self.ids] = -np.inf
        return scores


class _EngineLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: Optional[int] = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._owner == me and self._lock.locked():
            raise RuntimeError("this engine is busy with an unfinished request in the same thread "
                               "(exhaust or close() the previous stream first)")
        self._lock.acquire()
        self._owner = me
        try:
            yield
        finally:
            self._owner = None
            self._lock.release()


if "llama_cpp" in sys.modules:  # installing needs llama_cpp: done now if it is loaded, else on first use
    try:
        install_llama_log_filter()
    except Exception:  # pragma: no cover
        pass


class HarmonyEngine:
    """OpenAI-style chat completions for a gpt-oss ``llama_cpp.Llama``.

    :param llama: a loaded ``llama_cpp.Llama`` (gpt-oss GGUF).
    :param encoding: a :class:`~llama_harmony.HarmonyEncoding` (default: a new one).
    :param cot_policy: chain-of-thought policy for rendering history: ``"spec"``,
        ``"reference"`` or ``"keep"`` (see :mod:`llama_harmony.openai_request`).
    :param constrained: grammar-constrain tool-call arguments and ``response_format``
        bodies (see the module docstring).
    :param reuse_generated_ids: splice the model's own ids into the next prompt when the
        request continues the last one (see "Prompt splicing" in the module docstring).
    """

    def __init__(self, llama: Any, *, encoding: Any = None, cot_policy: str = "spec", constrained: bool = False,
                 reuse_generated_ids: bool = True):
        render_config(cot_policy)  # validates
        try:
            install_llama_log_filter()
        except Exception:  # pragma: no cover - a stand-in llama without llama_cpp
            pass
        self.llama = llama
        self.encoding = encoding if encoding is not None else load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        self.cot_policy = cot_policy
        self.constrained = bool(constrained)
        self.model_name = os.path.basename(getattr(llama, "model_path", "") or "") or "gpt-oss"
        self._lock = _EngineLock()
        self._grammars: Dict[str, Any] = {}
        self._mask: Optional[_MaskSpecials] = None
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
        self._exchange: Optional[_Exchange] = None
        self._turn_tail = [START_ID] + [int(t) for t in self.encoding.encode_ordinary("assistant")]

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_path(cls, model_path: Union[str, os.PathLike], *, n_ctx: int = 8192, n_threads: Optional[int] = None,
                  seed: Optional[int] = None, verbose: bool = False, encoding: Any = None,
                  cot_policy: str = "spec", constrained: bool = False, reuse_generated_ids: bool = True,
                  **llama_kwargs: Any) -> "HarmonyEngine":
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
                   reuse_generated_ids=reuse_generated_ids)

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return int(self.llama.n_ctx())

    def render(self, messages: Sequence[Mapping[str, Any]], *, tools: Any = None, tool_choice: Any = None,
               reasoning_effort: Any = None, response_format: Any = None, **convert_kwargs: Any) -> List[int]:
        """The prompt ids of a chat request (``...<|start|>assistant``), rendered by llama_harmony."""
        convo = messages_to_conversation(messages, tools=tools, tool_choice=tool_choice,
                                         reasoning_effort=reasoning_effort, response_format=response_format,
                                         cot_policy=self.cot_policy, **convert_kwargs)
        return self.encoding.render_conversation_for_completion(convo, Role.ASSISTANT, render_config(self.cot_policy),
                                                                limits=convert_kwargs.get("limits"))

    # -- prompt splicing (see the module docstring) -----------------------------------------------

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

    def _splice(self, normal: List[int]) -> "tuple[List[int], int]":
        """The prompt to evaluate for the canonical render ``normal``, and how many of its ids
        come from earlier generations."""
        ex = self._exchange
        tail = self._turn_tail
        nt = len(tail)
        if (ex is None or not self.reuse_generated_ids or ex.normal[-nt:] != tail or ex.actual[-nt:] != tail
                or normal[-nt:] != tail):
            return normal, 0
        nb = len(ex.normal) - nt
        if len(normal) < len(ex.normal) or normal[:nb] != ex.normal[:nb]:
            return normal, 0
        base = ex.actual[:-nt]
        rest = normal[nb:]
        span = self._generated_span(ex)
        if span:
            model, canon = span
            if len(rest) >= len(canon) + nt and rest[:len(canon)] == canon:
                return base + model + rest[len(canon):], ex.spliced + len(model) - nt
        if ex.spliced == 0:
            return normal, 0
        return base + rest, ex.spliced

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

    def _predict_reuse(self, ids: Sequence[int]) -> int:
        """How many of ``ids`` Llama.generate's prefix match keeps (its own rule)."""
        llama = self.llama
        n = int(getattr(llama, "n_tokens", 0) or 0)
        if n <= 0:
            return 0
        cached = llama.input_ids[:n]
        m = min(n, len(ids))
        lcp = 0
        while lcp < m and int(cached[lcp]) == ids[lcp]:
            lcp += 1
        if lcp == len(ids):
            if n == len(ids) and not getattr(llama, "_requires_eval", True):
                return lcp
            return max(lcp - 1, 0)
        return lcp

    def _grammar_for(self, schema: Mapping[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            try:
                from llama_cpp import LlamaGrammar

                self._grammars[key] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception:
                self._grammars[key] = None
        return self._grammars[key]

    # -- the token loop --------------------------------------------------------------------------

    def _token_loop(self, prompt_ids: Sequence[int], run: _Run, *, sampling: Dict[str, Any],
                    logits_processor: Any = None, grammar: Any = None,
                    switch: Optional[Callable[[int], Any]] = None) -> Iterator[int]:
        """Yield sampled ids until an end-of-generation id or ``run.max_tokens``.

        ``switch(token)`` is called after each id was consumed by the caller; a non-None
        return value is a grammar to apply from the next id on (generation is restarted on
        the same ids, so the KV cache is kept).
        """
        from llama_cpp import LogitsProcessorList

        llama = self.llama
        procs = list(logits_processor or [])
        ids = list(prompt_ids)
        gen = llama.generate(ids, logits_processor=LogitsProcessorList(procs) if procs else None,
                             grammar=grammar, **sampling)
        active = grammar
        try:
            while len(run.generated) < run.max_tokens:
                try:
                    tok = int(next(gen))
                except StopIteration:
                    return
                except RuntimeError as exc:  # llama_decode failed (the context is full)
                    if "llama_decode" not in str(exc):
                        raise
                    run.error = exc
                    run.truncated = True
                    return
                run.generated.append(tok)
                yield tok
                if tok in EOG_IDS:
                    run.eog = tok
                    return
                if switch is not None and active is None and len(run.generated) < run.max_tokens:
                    new = switch(tok)
                    if new is not None:
                        gen.close()
                        if self._mask is None:
                            self._mask = _MaskSpecials(int(llama.n_vocab()))
                        active = new
                        gen = llama.generate(ids + run.generated,
                                             logits_processor=LogitsProcessorList(procs + [self._mask]),
                                             grammar=new, **sampling)
            run.truncated = True
        finally:
            gen.close()

    def generate_ids(self, prompt_ids: Sequence[int], *, max_tokens: Optional[int] = None, temperature: float = 1.0,
                     top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0, repeat_penalty: float = 1.0,
                     seed: Optional[int] = None, logits_processor: Any = None, grammar: Any = None,
                     logit_bias: Optional[Mapping[Any, float]] = None, **sampling: Any) -> Iterator[int]:
        """Sample ids after ``prompt_ids`` (rendered by llama_harmony) until an end-of-generation
        id (yielded too) or ``max_tokens`` (default: the rest of the context). Holds the engine
        lock while iterating. Raises :class:`ContextOverflowError` at call time."""
        prompt_ids = [int(t) for t in prompt_ids]
        self._check_prompt(prompt_ids)
        run = _Run(prompt_tokens=len(prompt_ids), max_tokens=self._max_tokens(len(prompt_ids), max_tokens))
        kw = _sampling_kwargs(temperature, top_p, top_k, min_p, repeat_penalty, sampling)
        procs = list(logits_processor or [])
        if logit_bias:
            procs.append(_LogitBias(logit_bias))

        def it() -> Iterator[int]:
            with self._lock.hold():
                if seed is not None:
                    self.llama.set_seed(int(seed))
                self.last_prompt_ids = list(prompt_ids)
                self.last_reused_tokens = self._predict_reuse(prompt_ids)
                self.last_completion_ids = run.generated
                self.last_constraints = run.constraints
                yield from self._token_loop(prompt_ids, run, sampling=kw, logits_processor=procs, grammar=grammar)

        return it()

    # -- chat completions ------------------------------------------------------------------------

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
        **ignored: Any,
    ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """An OpenAI chat completion (``stream=False``) or an iterator of chunks.

        Extra sampling keywords accepted: ``typical_p``, ``presence_penalty``,
        ``frequency_penalty``, ``tfs_z``, ``mirostat_mode``, ``mirostat_tau``,
        ``mirostat_eta``, ``logit_bias``; ``model_identity`` and ``conversation_start_date``
        reach the system message. Other keywords are ignored. Request errors
        (:class:`~llama_harmony.openai_request.OpenAIFormatError`, :class:`ContextOverflowError`,
        :class:`~llama_harmony.LimitExceeded`) are raised at call time, also when streaming.
        """
        convert = {k: ignored[k] for k in ("model_identity", "conversation_start_date", "limits") if k in ignored}
        normal_ids = self.render(messages, tools=tools, tool_choice=tool_choice, reasoning_effort=reasoning_effort,
                                 response_format=response_format, **convert)
        prompt_ids, spliced = self._splice(normal_ids)
        self._check_prompt(prompt_ids)
        run = _Run(prompt_tokens=len(prompt_ids), max_tokens=self._max_tokens(len(prompt_ids), max_tokens))
        sampling = _sampling_kwargs(temperature, top_p, top_k, min_p, repeat_penalty, ignored)
        procs = list(logits_processor or [])
        if ignored.get("logit_bias"):
            procs.append(_LogitBias(ignored["logit_bias"]))
        schemas = tool_schemas(tools, tool_choice) if (self.constrained and grammar is None) else {}
        rf = response_format_schema(response_format) if (self.constrained and grammar is None) else None
        include_usage = bool(stream_options and stream_options.get("include_usage"))
        cs = ChunkStream(model=model or self.model_name, id=new_completion_id(), created=int(time.time()),
                         include_usage=include_usage, stop=stop)
        exchange = _Exchange(normal=normal_ids, actual=prompt_ids, spliced=spliced)
        body = self._chunks(prompt_ids, run, cs, sampling=sampling, procs=procs, grammar=grammar, seed=seed,
                            schemas=schemas, response_schema=rf[1] if rf else None, exchange=exchange)
        if stream:
            return body
        for _ in body:
            pass
        return cs.completion()

    def _chunks(self, prompt_ids: List[int], run: _Run, cs: ChunkStream, *, sampling: Dict[str, Any], procs: List[Any],
                grammar: Any, seed: Optional[int], schemas: Dict[str, Optional[dict]],
                response_schema: Optional[dict], exchange: Optional[_Exchange] = None) -> Iterator[Dict[str, Any]]:
        with self._lock.hold():
            if seed is not None:
                self.llama.set_seed(int(seed))
            if exchange is not None:
                self._exchange = exchange
                self.last_spliced_tokens = exchange.spliced
            self.last_prompt_ids = list(prompt_ids)
            self.last_reused_tokens = reused = self._predict_reuse(prompt_ids)
            self.last_completion_ids = run.generated
            self.last_constraints = run.constraints
            parser = self._new_parser()
            tracker = ParserTracker(parser, decode=self.encoding.decode,
                                    parser_factory=lambda: self._new_parser(None))

            switch: Optional[Callable[[int], Any]] = None
            if schemas or response_schema is not None:
                def constrain(tok: int) -> Any:
                    header = tracker.current_header() if tok == MESSAGE_ID else None
                    if header is None:
                        return None
                    channel, recipient = header
                    kind, name = message_kind(channel, recipient)
                    schema, label = None, None
                    if kind == "tool" and schemas.get(name):
                        schema, label = schemas[name], f"tool:{name}"
                    elif kind == "content" and channel == "final" and response_schema is not None:
                        schema, label = response_schema, "response_format"
                    if schema is None:
                        return None
                    g = self._grammar_for(schema)
                    if g is not None:
                        run.constraints.append(label)
                    return g

                switch = constrain

            yield cs.start()
            reasoning_tokens = 0
            for tok in self._token_loop(prompt_ids, run, sampling=sampling, logits_processor=procs, grammar=grammar,
                                        switch=switch):
                before = cs.reasoning_deltas
                for chunk in cs.feed(tracker.process(tok)):
                    yield chunk
                if cs.reasoning_deltas != before:
                    reasoning_tokens += 1
                if cs.stopped:
                    break
            for chunk in cs.feed(tracker.process_eos(length=run.truncated and not cs.stopped)):
                yield chunk
            if exchange is not None and run.eog in (CALL_ID, RETURN_ID) and not cs.stopped:
                exchange.generated = list(run.generated)
            finish = "length" if (run.truncated and not cs.stopped) else None
            usage = dict(prompt_tokens=run.prompt_tokens, completion_tokens=run.completion_tokens,
                         cached_tokens=reused, reasoning_tokens=reasoning_tokens)
            for chunk in cs.finish(finish, **usage):
                yield chunk


# =================================================================================================
# llama-cpp-python chat handler
# =================================================================================================

class HarmonyChatHandler:
    """A llama-cpp-python chat handler for gpt-oss::

        llm = Llama(model_path="gpt-oss-20b.gguf", n_ctx=8192, chat_handler=HarmonyChatHandler())
        llm.create_chat_completion(messages=[...], tools=[...], stream=True)

    Every argument of ``Llama.create_chat_completion`` is honoured (sampling, ``stop``,
    ``seed``, ``max_tokens``, ``logits_processor``, ``grammar``, ``logit_bias``,
    ``response_format``, ``tools``/``tool_choice`` and the legacy ``functions``/
    ``function_call``). ``reasoning_effort`` comes from the constructor (default
    ``"medium"``) unless a ``reasoning_effort`` keyword reaches the handler (llama-cpp-python's
    own ``create_chat_completion`` does not forward one; call the handler directly, or use
    :class:`HarmonyEngine`, for per-request effort). One :class:`HarmonyEngine` is kept per
    ``Llama`` object; ``cot_policy``, ``constrained`` and ``reuse_generated_ids`` are passed
    to it (see :class:`HarmonyEngine`).
    """

    def __init__(self, *, reasoning_effort: Any = "medium", cot_policy: str = "spec", constrained: bool = False,
                 encoding: Any = None, model_identity: Optional[str] = None,
                 conversation_start_date: Optional[str] = None, reuse_generated_ids: bool = True):
        render_config(cot_policy)
        try:
            install_llama_log_filter()
        except Exception:  # pragma: no cover
            pass
        self.reasoning_effort = reasoning_effort
        self.cot_policy = cot_policy
        self.constrained = constrained
        self.reuse_generated_ids = bool(reuse_generated_ids)
        self.model_identity = model_identity
        self.conversation_start_date = conversation_start_date
        self._encoding = encoding
        self._engines: "weakref.WeakKeyDictionary[Any, HarmonyEngine]" = weakref.WeakKeyDictionary()
        self._engines_lock = threading.Lock()

    def engine_for(self, llama: Any) -> HarmonyEngine:
        """The engine bound to ``llama`` (created on first use)."""
        with self._engines_lock:
            engine = self._engines.get(llama)
            if engine is None:
                if self._encoding is None:
                    self._encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
                engine = HarmonyEngine(llama, encoding=self._encoding, cot_policy=self.cot_policy,
                                       constrained=self.constrained, reuse_generated_ids=self.reuse_generated_ids)
                self._engines[llama] = engine
            return engine

    def __call__(
        self,
        *,
        llama: Any,
        messages: List[Any],
        functions: Optional[List[Any]] = None,
        function_call: Any = None,
        tools: Optional[List[Any]] = None,
        tool_choice: Any = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        stream: bool = False,
        stop: Optional[Union[str, List[str]]] = None,
        seed: Optional[int] = None,
        response_format: Any = None,
        max_tokens: Optional[int] = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.1,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: Optional[str] = None,
        logits_processor: Any = None,
        grammar: Any = None,
        logit_bias: Optional[Dict[Any, float]] = None,
        logprobs: Optional[bool] = None,
        top_logprobs: Optional[int] = None,
        **kwargs: Any,
    ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        if not tools and functions:
            tools = [{"type": "function", "function": f} for f in functions]
            if tool_choice is None and function_call is not None:
                if isinstance(function_call, str):
                    tool_choice = function_call
                elif isinstance(function_call, Mapping) and function_call.get("name"):
                    tool_choice = {"type": "function", "function": {"name": function_call["name"]}}
        effort = kwargs.pop("reasoning_effort", None) or self.reasoning_effort
        extra: Dict[str, Any] = {}
        for key in ("model_identity", "conversation_start_date"):
            value = kwargs.get(key, getattr(self, key))
            if value is not None:
                extra[key] = value
        return self.engine_for(llama).create_chat_completion(
            messages, tools=tools, tool_choice=tool_choice, stream=stream, reasoning_effort=effort,
            response_format=response_format, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop,
            logits_processor=logits_processor, grammar=grammar, stream_options=kwargs.get("stream_options"),
            model=model, typical_p=typical_p, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, tfs_z=tfs_z, mirostat_mode=mirostat_mode,
            mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, logit_bias=logit_bias, **extra)


def register_chat_format(name: str = CHAT_FORMAT_NAME, **handler_kwargs: Any) -> HarmonyChatHandler:
    """Register a :class:`HarmonyChatHandler` under ``name`` (default ``"gpt-oss-harmony"``) in
    llama-cpp-python's chat-handler registry, so ``Llama(..., chat_format=name)`` uses it.
    Registering again replaces the previous handler. Returns the handler."""
    from llama_cpp import llama_chat_format

    handler = HarmonyChatHandler(**handler_kwargs)
    registry = llama_chat_format.LlamaChatCompletionHandlerRegistry()
    try:
        registry.unregister_chat_handler(name)
    except ValueError:
        pass
    llama_chat_format.register_chat_completion_handler(name)(handler)
    return handler
