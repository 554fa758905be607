"""Parsed Harmony model output -> OpenAI ``chat.completion`` objects and chunk streams.

Pure Python (no :mod:`llama_cpp`). :func:`chat_completion` turns parsed Harmony messages into
a ``chat.completion`` dict; :class:`ChunkStream` shapes the same output as
``chat.completion.chunk`` dicts while the model writes, fed by :class:`ParserTracker` (which
watches a streaming parser token by token) or by any source of :class:`ParsedDelta` values.
The other direction (requests -> Harmony) is :mod:`llama_harmony.openai_request`.

Output policies
---------------
* ``analysis`` messages -> ``reasoning_content`` and ``reasoning`` (the same text).
* ``final`` messages, messages without a channel (stray text the lenient parser rescued) and
  ``commentary`` messages without a recipient (preambles) -> ``content``. Preambles are
  user-facing by design, and an assistant message ``{content, tool_calls}`` sent back in the
  next request renders again as preamble + calls, so the round trip is exact.
* A message whose recipient is a tool name (ASCII letters, digits, ``_``, ``-`` and ``.``;
  not ``assistant``/``user``/``all``/``system``/``developer``), on any channel (gpt-oss often
  calls functions from ``analysis``), is a tool call (another word in the recipient slot, e.g.
  ``––commentary`` from a malformed header, is not: the message is content or reasoning):
  ``function.name`` is the recipient without its ``functions.`` prefix and
  ``function.arguments`` the body text as the model wrote it (``"{}"`` when empty).
* Several messages of the same kind are joined with ``"\\n"``.
* ``finish_reason``: ``"length"`` when generation was cut by ``max_tokens`` or the context
  (the partial output is returned: a cut tool call keeps its partial arguments), otherwise
  ``"tool_calls"`` when there is at least one tool call, otherwise ``"stop"``.
* ``stop`` strings apply to the ``content`` text only: the content ends before the first
  occurrence (streaming holds back text that could be the start of a stop string).
* Raw Harmony markup never reaches ``content``, ``reasoning_content`` or arguments: headers
  are parsed away, and :class:`ParserTracker` (what the engine streams through) drops a
  special token the model wrote inside a message body (the lenient parser keeps it as its
  name, e.g. ``<|start|>``, ``<|channel|>``, ``<|reserved_N|>``) while keeping the ordinary
  text around it. (:func:`chat_completion` takes message text as given: it cannot tell a
  special token from the same characters written as ordinary text.)
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "ParsedDelta",
    "ParserTracker",
    "ChunkStream",
    "CompletionBuilder",
    "chat_completion",
    "message_kind",
    "new_tool_call_id",
    "new_completion_id",
    "logprob_entry",
]

#: Recipients that do not make a message a tool call.
NOT_CALL_RECIPIENTS = frozenset({"assistant", "user", "all", "system", "developer"})



def new_tool_call_id() -> str:
    """``call_`` + 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


def new_completion_id() -> str:
    """``chatcmpl-`` + 24 random hex digits."""
    return "chatcmpl-" + secrets.token_hex(12)


#: What a tool name looks like (OpenAI function names, namespaced with dots: ``functions.get_weather``,
#: ``browser.search``); anything else in the recipient slot is a misparsed header word.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")


def message_kind(channel: Optional[str], recipient: Optional[str]) -> Tuple[str, Optional[str]]:
    """``("reasoning" | "content" | "tool", tool name or None)`` for a message header."""
    r = recipient.strip() if recipient else ""
    if r and r not in NOT_CALL_RECIPIENTS and _TOOL_NAME.match(r):
        return "tool", (r[len("functions."):] if r.startswith("functions.") and len(r) > 10 else r)
    if channel == "analysis":
        return "reasoning", None
    return "content", None


@dataclass
class ParsedDelta:
    """One step of parsed model output.

    ``index`` numbers the messages of one generation (0, 1, ...); the header fields are those
    of that message; ``text`` is new body text (may be empty); ``done`` marks the message's end.
    """

    index: int
    channel: Optional[str] = None
    recipient: Optional[str] = None
    content_type: Optional[str] = None
    text: str = ""
    done: bool = False


class _StopFilter:
    """Cuts a text stream before the first stop string, holding back possible prefixes."""

    def __init__(self, stops: Optional[Union[str, Sequence[str]]]):
        if isinstance(stops, str):
            stops = [stops]
        self.stops = [s for s in (stops or []) if s]
        self.buf = ""
        self.hit = False

    def push(self, text: str) -> str:
        if self.hit:
            return ""
        if not self.stops:
            return text
        self.buf += text
        cut = min((p for p in (self.buf.find(s) for s in self.stops) if p >= 0), default=-1)
        if cut >= 0:
            out, self.buf, self.hit = self.buf[:cut], "", True
            return out
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), keep, -1):
                if self.buf.endswith(s[:k]):
                    keep = k
                    break
        out = self.buf[: len(self.buf) - keep]
        self.buf = self.buf[len(self.buf) - keep:]
        return out

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return "" if self.hit else out


class _Accumulator:
    """Routes parsed deltas into reasoning / content / tool calls; returns OpenAI deltas."""

    def __init__(self, stop: Any = None, tool_call_id_factory: Optional[Callable[[], str]] = None):
        self.reasoning: List[str] = []
        self.content: List[str] = []
        self.tool_calls: List[Dict[str, Any]] = []
        self._stop = _StopFilter(stop)
        self._new_id = tool_call_id_factory or new_tool_call_id
        self._index: Optional[int] = None
        self._kind: Optional[str] = None
        self._call: Optional[Dict[str, Any]] = None
        self._sep_pending = False
        #: Tokens or deltas attributed to reasoning (for usage details).
        self.reasoning_deltas = 0

    @property
    def stopped(self) -> bool:
        """A stop string was found in the content."""
        return self._stop.hit

    def _begin(self, d: ParsedDelta) -> List[Dict[str, Any]]:
        self._index = d.index
        self._kind, name = message_kind(d.channel, d.recipient)
        self._call = None
        self._sep_pending = False
        if self._kind == "tool":
            self._call = {"id": self._new_id(), "type": "function",
                          "function": {"name": name, "arguments": ""}}
            self.tool_calls.append(self._call)
            i = len(self.tool_calls) - 1
            return [{"tool_calls": [{"index": i, "id": self._call["id"], "type": "function",
                                     "function": {"name": name, "arguments": ""}}]}]
        self._sep_pending = bool(self.reasoning if self._kind == "reasoning" else self.content)
        return []

    def push(self, d: ParsedDelta) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        if d.index != self._index:
            out += self._end()
            out += self._begin(d)
        text = d.text or ""
        if text:
            if self._kind == "tool":
                assert self._call is not None  # (set by _begin for a tool message)
                self._call["function"]["arguments"] += text
                out.append({"tool_calls": [{"index": len(self.tool_calls) - 1, "function": {"arguments": text}}]})
            elif self._kind == "reasoning":
                self.reasoning_deltas += 1
                if self._sep_pending:
                    text, self._sep_pending = "\n" + text, False
                self.reasoning.append(text)
                out.append({"reasoning_content": text, "reasoning": text})
            elif not self._stop.hit:
                if self._sep_pending:
                    text, self._sep_pending = "\n" + text, False
                text = self._stop.push(text)
                if text:
                    self.content.append(text)
                    out.append({"content": text})
        if d.done:
            out += self._end()
        return out

    def _end(self) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        if self._kind == "tool" and self._call is not None and not self._call["function"]["arguments"]:
            self._call["function"]["arguments"] = "{}"
            out.append({"tool_calls": [{"index": len(self.tool_calls) - 1, "function": {"arguments": "{}"}}]})
        self._index, self._kind, self._call = None, None, None
        return out

    def close(self) -> List[Dict[str, Any]]:
        """End the current message and release held-back content."""
        out = self._end()
        tail = self._stop.flush()
        if tail:
            self.content.append(tail)
            out.append({"content": tail})
        return out

    def message(self) -> Dict[str, Any]:
        reasoning = "".join(self.reasoning) or None
        content = "".join(self.content)
        msg: Dict[str, Any] = {
            "role": "assistant",
            "content": content if (content or not self.tool_calls) else None,
            "reasoning_content": reasoning,
            "reasoning": reasoning,
        }
        if self.tool_calls:
            msg["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": dict(c["function"])} for c in self.tool_calls]
        return msg

    def finish_reason(self, finish_reason: Optional[str]) -> str:
        if finish_reason is None or finish_reason in ("tool_calls", "stop"):
            return "tool_calls" if self.tool_calls and not self.stopped else "stop"
        return finish_reason


def _message_text(m: Any) -> str:
    content = m.get("content") if isinstance(m, Mapping) else getattr(m, "content", None)
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for c in content:
        if isinstance(c, Mapping):
            t = c.get("text")
        else:
            t = getattr(c, "text", None)
        if isinstance(t, str):
            parts.append(t)
    return "".join(parts)


def _field(m: Any, name: str) -> Any:
    return m.get(name) if isinstance(m, Mapping) else getattr(m, name, None)


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: Optional[int] = None,
           reasoning_tokens: Optional[int] = None) -> Dict[str, Any]:
    usage: Dict[str, Any] = {"prompt_tokens": int(prompt_tokens), "completion_tokens": int(completion_tokens),
                             "total_tokens": int(prompt_tokens) + int(completion_tokens)}
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": int(cached_tokens)}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": int(reasoning_tokens)}
    return usage


def chat_completion(
    messages_parsed: Iterable[Any],
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: Optional[str],
    created: Optional[int] = None,
    id: Optional[str] = None,
    stop: Any = None,
    tool_call_id_factory: Optional[Callable[[], str]] = None,
    cached_tokens: Optional[int] = None,
    reasoning_tokens: Optional[int] = None,
) -> Dict[str, Any]:
    """A ``chat.completion`` dict from parsed Harmony messages (``Message`` objects of either
    llama_harmony or openai_harmony, or their ``to_dict()`` form).

    ``finish_reason``: ``"length"`` is kept; ``None``, ``"stop"`` and ``"tool_calls"`` are
    recomputed (``tool_calls`` when the output holds a tool call). ``stop`` strings cut the
    content (see the module docstring); ``cached_tokens``/``reasoning_tokens`` add
    ``usage.prompt_tokens_details``/``usage.completion_tokens_details``.
    """
    acc = _Accumulator(stop, tool_call_id_factory)
    for i, m in enumerate(messages_parsed):
        acc.push(ParsedDelta(i, _field(m, "channel"), _field(m, "recipient"), _field(m, "content_type"),
                             _message_text(m), done=True))
    acc.close()
    return {
        "id": id or new_completion_id(),
        "object": "chat.completion",
        "created": int(created if created is not None else time.time()),
        "model": model,
        "choices": [{"index": 0, "message": acc.message(), "finish_reason": acc.finish_reason(finish_reason),
                     "logprobs": None}],
        "usage": _usage(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens),
    }


def _token_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def logprob_entry(step: Any, token_bytes: Callable[[int], bytes]) -> Dict[str, Any]:
    """One ``choices[0].logprobs.content`` entry for a sampled :class:`~llama_harmony.sampling.TokenStep`
    with log-probabilities: the token's text (its bytes decoded, U+FFFD where a token holds part
    of a character), ``bytes``, ``logprob`` and ``top_logprobs`` (the same fields per
    alternative). ``token_bytes(id)`` gives a token's bytes (special tokens by name)."""
    data = token_bytes(step.id)
    top = []
    for tid, lp in step.top_logprobs:
        b = token_bytes(tid)
        top.append({"token": _token_text(b), "logprob": float(lp), "bytes": list(b)})
    return {"token": _token_text(data), "logprob": float(step.logprob), "bytes": list(data), "top_logprobs": top}


class CompletionBuilder:
    """Holds the per-response constants (model, id, created, stop strings, id factory) and
    builds the non-streamed object (:meth:`chat_completion`) or a :class:`ChunkStream`."""

    def __init__(self, model: str, *, id: Optional[str] = None, created: Optional[int] = None,
                 stop: Any = None, tool_call_id_factory: Optional[Callable[[], str]] = None):
        """Set up the CompletionBuilder (the parameters are described in the class docstring)."""
        self.model = model
        self.id = id or new_completion_id()
        self.created = int(created if created is not None else time.time())
        self.stop = stop
        self.tool_call_id_factory = tool_call_id_factory

    def chat_completion(self, messages_parsed: Iterable[Any], *, prompt_tokens: int, completion_tokens: int,
                        finish_reason: Optional[str], **extra: Any) -> Dict[str, Any]:
        """The ``chat.completion`` dict of parsed messages (see :func:`chat_completion`)."""
        return chat_completion(messages_parsed, model=self.model, prompt_tokens=prompt_tokens,
                               completion_tokens=completion_tokens, finish_reason=finish_reason,
                               created=self.created, id=self.id, stop=self.stop,
                               tool_call_id_factory=self.tool_call_id_factory, **extra)

    def chunk_stream(self, *, include_usage: bool = False) -> "ChunkStream":
        """A :class:`ChunkStream` with this builder's id, model, stop strings and id factory."""
        return ChunkStream(model=self.model, id=self.id, created=self.created, include_usage=include_usage,
                           stop=self.stop, tool_call_id_factory=self.tool_call_id_factory)


class ChunkStream:
    """Shapes streamed output as ``chat.completion.chunk`` dicts.

    ::

        cs = ChunkStream(model="gpt-oss")
        yield cs.start()                                   # {"role": "assistant", "content": ""}
        for tok in ids:                                    # each parsed step -> 0..n chunks
            yield from cs.feed(tracker.process(tok))
        yield from cs.finish("stop", prompt_tokens=p, completion_tokens=c)

    Deltas: ``{"reasoning_content": t, "reasoning": t}``, ``{"content": t}``, a tool call's
    first delta ``{"tool_calls": [{"index": i, "id", "type": "function", "function":
    {"name", "arguments": ""}}]}`` then ``{"tool_calls": [{"index": i, "function":
    {"arguments": t}}]}`` with the same ``index``. :meth:`finish` sends the last choice chunk
    (empty delta + ``finish_reason``), then, with ``include_usage`` (the OpenAI
    ``stream_options.include_usage``), one more chunk with ``choices: []`` and ``usage``
    (every earlier chunk then carries ``"usage": null``, as OpenAI does).
    Concatenating the deltas gives exactly :attr:`message`.

    With ``logprobs=True``, :meth:`feed` takes each content token's :func:`logprob_entry`;
    entries ride on the next chunk that carries content (``"logprobs": {"content": [...],
    "refusal": null}``; entries of text held back by a stop string, if any, on the final
    chunk) and :meth:`completion` lists them all.
    """

    def __init__(self, *, model: str, id: Optional[str] = None, created: Optional[int] = None,
                 include_usage: bool = False, stop: Any = None,
                 tool_call_id_factory: Optional[Callable[[], str]] = None, logprobs: bool = False):
        """Set up the ChunkStream (the parameters are described in the class docstring)."""
        self.model = model
        self.id = id or new_completion_id()
        self.created = int(created if created is not None else time.time())
        self.include_usage = include_usage
        self._acc = _Accumulator(stop, tool_call_id_factory)
        self._finished = False
        self._finish_reason: Optional[str] = None
        self._usage: Optional[Dict[str, Any]] = None
        #: Whether log-probabilities were asked for.
        self.logprobs = bool(logprobs)
        self._lp_pending: List[Dict[str, Any]] = []
        self._lp_all: List[Dict[str, Any]] = []

    def _chunk(self, delta: Dict[str, Any], finish_reason: Optional[str] = None,
               logprobs: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        lp = {"content": logprobs, "refusal": None} if logprobs else None
        chunk: Dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    @property
    def stopped(self) -> bool:
        """A stop string was found: the caller should stop generating."""
        return self._acc.stopped

    @property
    def has_tool_calls(self) -> bool:
        """Whether the output so far holds a tool call."""
        return bool(self._acc.tool_calls)

    @property
    def reasoning_deltas(self) -> int:
        """How many reasoning deltas were streamed."""
        return self._acc.reasoning_deltas

    @property
    def message(self) -> Dict[str, Any]:
        """The assistant message accumulated so far (what the deltas add up to)."""
        return self._acc.message()

    def start(self) -> Dict[str, Any]:
        """The first chunk: the role."""
        return self._chunk({"role": "assistant", "content": ""})

    def _take_logprobs(self, delta: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
        if self._lp_pending and "content" in delta:
            taken, self._lp_pending = self._lp_pending, []
            return taken
        return None

    def update(self, delta: ParsedDelta) -> List[Dict[str, Any]]:
        """Chunks for one parsed step."""
        return [self._chunk(d, logprobs=self._take_logprobs(d)) for d in self._acc.push(delta)]

    def feed(self, deltas: Union[ParsedDelta, Iterable[ParsedDelta]],
             logprob: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """Chunks for one or more parsed steps (e.g. what :meth:`ParserTracker.process` returns);
        ``logprob``: the :func:`logprob_entry` of the content token that produced them."""
        if logprob is not None and self.logprobs:
            self._lp_pending.append(logprob)
            self._lp_all.append(logprob)
        if isinstance(deltas, ParsedDelta):
            deltas = [deltas]
        out: List[Dict[str, Any]] = []
        for d in deltas:
            out += self.update(d)
        return out

    def finish(self, finish_reason: Optional[str] = None, *, prompt_tokens: int = 0, completion_tokens: int = 0,
               cached_tokens: Optional[int] = None, reasoning_tokens: Optional[int] = None) -> List[Dict[str, Any]]:
        """Flush held-back text, then the ``finish_reason`` chunk (and the usage chunk)."""
        if self._finished:
            return []
        self._finished = True
        out = [self._chunk(d, logprobs=self._take_logprobs(d)) for d in self._acc.close()]
        self._finish_reason = self._acc.finish_reason(finish_reason)
        self._usage = _usage(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)
        rest, self._lp_pending = self._lp_pending, []
        out.append(self._chunk({}, self._finish_reason, logprobs=rest or None))
        if self.include_usage:
            out.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": dict(self._usage)})
        return out

    def completion(self) -> Dict[str, Any]:
        """The same output as one ``chat.completion`` object (after :meth:`finish`)."""
        if not self._finished:
            raise RuntimeError("ChunkStream.completion() needs finish() first")
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": self.message, "finish_reason": self._finish_reason,
                         "logprobs": {"content": list(self._lp_all), "refusal": None} if self.logprobs else None}],
            "usage": dict(self._usage or {}),
        }


# =============================================================================================
# Watching a streaming parser
# =============================================================================================

_END_IDS = frozenset({200002, 200007, 200012, 199999})
_START_ID = 200006
_BOUNDARY_IDS = _END_IDS | {_START_ID}
_MESSAGE_ID = 200008
#: <|start|>, <|channel|>, <|message|>, <|constrain|>
_STRUCTURAL_IDS = frozenset({_START_ID, 200005, _MESSAGE_ID, 200003})


class ParserTracker:
    """Turns a streaming Harmony parser (openai_harmony-compatible API: ``process``,
    ``process_eos``, ``current_channel``, ``current_recipient``, ``current_content_type``,
    ``last_content_delta``, ``messages``) into :class:`ParsedDelta` steps, token by token.

    Cheap per token (one ``last_content_delta`` read; the header is read once per message).
    ``messages`` is read only after structural tokens (``<|start|>``, ``<|end|>``,
    ``<|call|>``, ``<|return|>``, ``<|endoftext|>``) and at EOS, to close messages and to
    emit whatever text the parser put into a finished message that was not streamed as a
    delta (lenient repairs), so nothing the parser returns is lost.

    Recovery (only for parsers that can raise, e.g. a strict one; llama_harmony's lenient
    parser never does): after an error the tracker collects the following ids as stray text
    (decoded with ``decode``, special tokens left out) until the next ``<|start|>``, streams
    that text as a channel-less message (so it reaches ``content``), and resumes with a fresh
    parser from ``parser_factory()`` (a parser built without a role, fed that ``<|start|>``).
    Without a factory, everything after the error is stray text.
    """

    def __init__(self, parser: Any, *, decode: Optional[Callable[[List[int]], str]] = None,
                 parser_factory: Optional[Callable[[], Any]] = None):
        """Set up the ParserTracker (the parameters are described in the class docstring)."""
        self.parser = parser
        self._decode = decode
        self._factory = parser_factory
        self._events = self._has_events(parser)
        #: ``(kind, detail)`` of every repair the parser reported (event API only).
        self.repairs: List[Tuple[str, str]] = []
        self.n_done = 0
        self._base = 0  # messages of earlier parsers (after a recovery)
        self._cur: Optional[ParsedDelta] = None  # header of the message being streamed
        self._streamed: List[str] = []
        self._stray: Optional[List[int]] = None  # ids collected after a parser error
        self._pending: List[int] = []  # ids fed since the last finished message
        self._strip: Optional[str] = None  # special-token name to drop from the next delta
        self._stray_sent = 0  # chars of the stray text already streamed
        #: The first exception a parser raised (None: the parser never failed).
        self.error: Optional[BaseException] = None
        self.errors = 0

    @staticmethod
    def _has_events(parser: Any) -> bool:
        return callable(getattr(parser, "feed", None)) and callable(getattr(parser, "finish", None))

    def current_header(self) -> Optional[Tuple[Optional[str], Optional[str]]]:
        """``(channel, recipient)`` of the message whose body is being written, if any."""
        if self._cur is None or self._stray is not None:
            return None
        return self._cur.channel, self._cur.recipient

    @property
    def in_recovery(self) -> bool:
        """True while ids are collected as stray text after a parser error."""
        return self._stray is not None

    # -- helpers -------------------------------------------------------------------------------

    def _header(self) -> ParsedDelta:
        p = self.parser
        return ParsedDelta(self.n_done, p.current_channel, p.current_recipient, p.current_content_type)

    def _emit_text(self, text: str) -> List[ParsedDelta]:
        if self._cur is None:
            self._cur = self._header()
        self._streamed.append(text)
        c = self._cur
        return [ParsedDelta(c.index, c.channel, c.recipient, c.content_type, text)]

    def _close_current(self) -> List[ParsedDelta]:
        if self._cur is None:
            return []
        c = self._cur
        self.n_done += 1
        self._cur, self._streamed = None, []
        return [ParsedDelta(c.index, c.channel, c.recipient, c.content_type, "", done=True)]

    def _from_events(self, events: Iterable[Any]) -> List[ParsedDelta]:
        """llama_harmony's native events -> parsed steps."""
        out: List[ParsedDelta] = []
        for e in events:
            kind = getattr(e, "type", None)
            if kind == "message_start":
                out += self._close_current()
                self._cur = ParsedDelta(e.index + self._base, e.channel, e.recipient, e.content_type)
                self._streamed = []
                out.append(ParsedDelta(self._cur.index, e.channel, e.recipient, e.content_type, ""))
            elif kind in ("content_delta", "tool_call_delta"):
                text = e.text if kind == "content_delta" else e.arguments
                if self._strip and text.startswith(self._strip):  # a special token kept as text
                    text = text[len(self._strip):]
                self._strip = None
                if not text:
                    continue
                if self._cur is None or self._cur.index != e.index + self._base:
                    self._cur, self._streamed = ParsedDelta(e.index + self._base), []
                self._streamed.append(text)
                c = self._cur
                out.append(ParsedDelta(c.index, c.channel, c.recipient, c.content_type, text))
            elif kind == "message_done":
                self._pending = []
                if self._cur is not None and self._cur.index == e.index + self._base:
                    out += self._close_current()
                self.n_done = max(self.n_done, e.index + self._base + 1)
            elif kind == "repair":
                self.repairs.append((str(e.kind), str(e.detail)))
                if e.kind == "special_token_in_content" and str(e.detail).startswith("<|"):
                    self._strip = str(e.detail)
        return out

    def _reconcile(self) -> List[ParsedDelta]:
        out: List[ParsedDelta] = []
        msgs = self.parser.messages
        for m in msgs[self.n_done - self._base:]:
            text = _message_text(m)
            if self._cur is not None and self._cur.index == self.n_done:
                c = self._cur
                streamed = "".join(self._streamed)
                rest = text[len(streamed):] if text.startswith(streamed) else ""
                out.append(ParsedDelta(c.index, c.channel, c.recipient, c.content_type, rest, done=True))
            else:
                out.append(ParsedDelta(self.n_done, _field(m, "channel"), _field(m, "recipient"),
                                       _field(m, "content_type"), text, done=True))
            self.n_done += 1
            self._cur = None
            self._streamed = []
            self._pending = []
        return out

    def _stray_text(self, final: bool = False) -> List[ParsedDelta]:
        """Stream the new part of the stray text (held back while it ends mid UTF-8)."""
        if self._decode is None or not self._stray:
            return []
        text = self._decode([t for t in self._stray if t < 199998])
        if not final and text.endswith("\ufffd"):
            return []
        new, self._stray_sent = text[self._stray_sent:], len(text)
        if not new:
            return []
        if self._cur is None:
            self._cur = ParsedDelta(self.n_done)
        self._streamed.append(new)
        return [ParsedDelta(self._cur.index, None, None, None, new)]

    def _fail(self, exc: BaseException, token: Optional[int]) -> List[ParsedDelta]:
        if self.error is None:
            self.error = exc
        self.errors += 1
        out: List[ParsedDelta] = []
        try:
            out += self._reconcile()
        except Exception:  # pragma: no cover - a parser that cannot even list its messages
            pass
        # Text the parser swallowed (e.g. a header that never got its <|message|>): the ids
        # after the last structural token of the unfinished message, when none of its body
        # was streamed yet.
        lost: List[int] = []
        if not self._streamed:
            cut = max((k for k, t in enumerate(self._pending) if t in _STRUCTURAL_IDS), default=-1)
            lost = [t for t in self._pending[cut + 1:] if t != token]
        out += self._close_current()
        self._stray, self._stray_sent = lost, 0
        self._pending = []
        if token is not None and self._resyncs_at(token):
            out += self._resync(token)
        elif token is not None:
            self._stray.append(token)
            out += self._stray_text()
        else:
            out += self._stray_text(final=True)
        return out

    def _resyncs_at(self, token: int) -> bool:
        """Whether stray text ends at ``token``: a ``<|start|>``, when there is a parser
        factory to start again with."""
        return token == _START_ID and self._factory is not None

    def _resync(self, token: int) -> List[ParsedDelta]:
        """End the stray text and restart a fresh parser at this ``<|start|>``."""
        out = self._stray_text(final=True) + self._close_current()
        self._stray = None
        assert self._factory is not None  # (callers check _resyncs_at)
        self.parser = self._factory()
        self._events = self._has_events(self.parser)
        self._base = self.n_done
        try:
            self.parser.process(token)
        except Exception as exc:  # pragma: no cover - a parser that rejects <|start|>
            out += self._fail(exc, None)
        return out

    # -- API -----------------------------------------------------------------------------------

    def process(self, token: int) -> List[ParsedDelta]:
        """Feed one id; the parsed steps it produced."""
        token = int(token)
        if self._stray is not None:
            if self._resyncs_at(token):
                return self._resync(token)
            self._stray.append(token)
            return self._stray_text()
        self._pending.append(token)
        try:
            if self._events:
                return self._from_events(self.parser.feed([token]))
            self.parser.process(token)
            out: List[ParsedDelta] = []
            delta = self.parser.last_content_delta
            if delta and token >= 199998 and self._decode is not None:
                name = self._decode([token])
                if name.startswith("<|") and delta.startswith(name):  # a special token kept as text
                    delta = delta[len(name):]
            if delta:
                out += self._emit_text(delta)
            elif token == _MESSAGE_ID and self._cur is None:
                self._cur = self._header()
            if token in _BOUNDARY_IDS:
                out += self._reconcile()
            return out
        except Exception as exc:
            return self._fail(exc, token)

    def process_eos(self, *, length: bool = False) -> List[ParsedDelta]:
        """End of the stream: finalize (a cut message is closed with what it has).
        ``length``: generation was cut by max_tokens (reported to the native parser)."""
        out: List[ParsedDelta] = []
        if self._stray is not None:
            out += self._stray_text(final=True)
            self._stray = None
        else:
            try:
                if self._events:
                    out += self._from_events(self.parser.finish(length=length))
                else:
                    self.parser.process_eos()
                    out += self._reconcile()
            except Exception as exc:
                out += self._fail(exc, None)
                self._stray = None
        out += self._close_current()
        return out
