"""OpenAI chat-completions <-> Harmony: requests in, ``chat.completion`` objects out.

Pure Python (no :mod:`llama_cpp`): the engine, the CLI and the HTTP server share it.

Input: :func:`messages_to_conversation` turns OpenAI ``messages`` (+ ``tools``,
``tool_choice``, ``reasoning_effort``, ``response_format``) into a Harmony
:class:`~llama_harmony.Conversation`; :func:`render_prompt` renders it to prompt ids with the
render config its chain-of-thought policy needs.

Output: :func:`chat_completion` turns parsed Harmony messages into a ``chat.completion``
dict; :class:`ChunkStream` shapes the same output as ``chat.completion.chunk`` dicts while
the model writes, fed by :class:`ParserTracker` (which watches a streaming parser token by
token) or by any source of :class:`ParsedDelta` values.

Policies
--------
* **System and developer messages.** The OpenAI ``system``/``developer`` messages that open
  the conversation become the ``# Instructions`` of one Harmony developer message (joined by a
  blank line), which also carries ``tools`` as the ``functions`` namespace. The Harmony
  system message is always generated (identity, knowledge cutoff, optional date, reasoning
  effort, channels). A system/developer message that appears later, between other messages,
  is kept at its place as its own developer message (``# Instructions`` + text).
* **reasoning_effort**: ``low``/``medium``/``high`` (any case, or a
  :class:`~llama_harmony.ReasoningEffort`); ``minimal`` is read as ``low``; default medium.
* **tool_choice**: ``"none"`` renders no tools at all; ``"auto"``/``None`` renders every
  tool; ``"required"`` renders every tool and appends to the instructions
  ``You must call at least one of the available functions before you answer.``;
  ``{"type": "function", "function": {"name": N}}`` renders only tool ``N`` and appends
  ``You must call the function `N` before you answer.`` (an unknown ``N`` is an
  :class:`OpenAIFormatError`). Tools whose ``parameters`` is an object schema without any
  property render as ``type f = () => any;`` (the Harmony convention for argument-less
  functions).
* **response_format**: ``{"type": "json_schema", "json_schema": {"name", "schema",
  "description"?}}`` appends a ``# Response Formats`` section at the END of the developer
  message, as the Harmony guide prescribes::

      # Response Formats

      ## {name}

      // {description}            (only when a description is given)
      {compact JSON schema}

  ``{"type": "json_object"}`` renders the same section with name ``json_object``, the
  comment ``// Respond with a single JSON object.`` and schema ``{"type":"object"}``.
  ``{"type": "text"}`` renders nothing. The model answers on the ``final`` channel; with
  ``HarmonyEngine(constrained=True)`` a grammar enforces the schema on that body.
* **Assistant history**: reasoning (``reasoning_content``, else ``reasoning``, else
  ``thinking``) becomes an ``analysis`` message; ``content`` becomes a ``final`` message, or a
  ``commentary`` preamble when the message also has ``tool_calls``; each tool call becomes a
  ``commentary`` message to ``functions.{name}`` with content type ``<|constrain|>json`` and
  the arguments text as body. ``refusal`` stands in for an empty ``content``.
* **Tool results**: a ``tool`` message's ``tool_call_id`` is matched to the call that
  produced it; the result is rendered as ``functions.{name} to=assistant`` on ``commentary``.
  An unknown id raises :class:`OpenAIFormatError`. (Legacy ``function`` role messages and
  ``function_call`` fields are accepted too.)
* **Chain of thought** (``cot_policy``): ``"spec"`` (default, the Harmony guide's intent)
  drops the reasoning of every completed turn (an assistant turn followed by a later user
  message) and keeps the reasoning of the turn in progress, so a tool-call chain gets its
  reasoning back after every tool result; rendered with ``auto_drop_analysis=False``.
  ``"reference"`` keeps every message and renders with ``auto_drop_analysis=True``
  (openai-harmony's own rule: drop the analysis before the first ``final`` only when the
  last assistant message is on ``final``). ``"keep"`` keeps and renders all reasoning.
  :func:`render_config` gives the matching render config.

Output policies
---------------
* ``analysis`` messages -> ``reasoning_content`` and ``reasoning`` (the same text).
* ``final`` messages, messages without a channel (stray text the lenient parser rescued) and
  ``commentary`` messages without a recipient (preambles) -> ``content``. Preambles are
  user-facing by design, and an assistant message ``{content, tool_calls}`` sent back in the
  next request renders again as preamble + calls, so the round trip is exact.
* A message with a recipient other than ``assistant``/``user``/``all``/``system``/
  ``developer`` (on any channel: gpt-oss often calls functions from ``analysis``) is a tool
  call: ``function.name`` is the recipient without its ``functions.`` prefix and
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

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import (
    Author,
    Conversation,
    DeveloperContent,
    LimitExceeded,
    Limits,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    Role,
    SystemContent,
    TextContent,
    ToolDescription,
)

__all__ = [
    "OpenAIFormatError",
    "COT_POLICIES",
    "messages_to_conversation",
    "render_config",
    "render_prompt",
    "tool_schemas",
    "response_format_schema",
    "ParsedDelta",
    "ParserTracker",
    "ChunkStream",
    "CompletionBuilder",
    "chat_completion",
    "message_kind",
    "new_tool_call_id",
    "new_completion_id",
]

COT_POLICIES = ("spec", "reference", "keep")

#: Recipients that do not make a message a tool call.
NOT_CALL_RECIPIENTS = frozenset({"assistant", "user", "all", "system", "developer"})

REQUIRED_TOOL_TEXT = "You must call at least one of the available functions before you answer."
NAMED_TOOL_TEXT = "You must call the function `{name}` before you answer."
JSON_OBJECT_COMMENT = "Respond with a single JSON object."


class OpenAIFormatError(ValueError):
    """The OpenAI request cannot be turned into Harmony (bad message, unknown tool_call_id...).

    ``param`` names the offending field (``messages[3].tool_call_id``) when known.
    """

    def __init__(self, message: str, *, param: Optional[str] = None):
        super().__init__(message)
        self.param = param


# =============================================================================================
# Input: OpenAI request -> Harmony conversation
# =============================================================================================

def _text_of(content: Any, where: str) -> Optional[str]:
    """The text of an OpenAI ``content`` (a string, a list of text parts, or None)."""
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if isinstance(content, (list, tuple)):
        parts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
                continue
            if not isinstance(part, Mapping):
                raise OpenAIFormatError(f"{where}.content[{i}] must be an object", param=f"{where}.content")
            kind = part.get("type", "text")
            if kind in ("text", "input_text", "output_text"):
                text = part.get("text")
                if not isinstance(text, str):
                    raise OpenAIFormatError(f"{where}.content[{i}].text must be a string", param=f"{where}.content")
                parts.append(text)
            elif kind == "refusal" and isinstance(part.get("refusal"), str):
                parts.append(part["refusal"])
            else:
                raise OpenAIFormatError(
                    f"{where}.content[{i}] has unsupported type {kind!r} (gpt-oss takes text only)",
                    param=f"{where}.content")
        return "".join(parts)
    raise OpenAIFormatError(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")


def _effort(value: Any) -> ReasoningEffort:
    if value is None:
        return ReasoningEffort.MEDIUM
    if isinstance(value, ReasoningEffort):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "minimal":
            v = "low"
        for e in ReasoningEffort:
            if e.value.lower() == v:
                return e
    raise OpenAIFormatError(f"reasoning_effort must be low, medium or high; got {value!r}",
                            param="reasoning_effort")


def _empty_object_schema(params: Any) -> bool:
    return (isinstance(params, Mapping) and params.get("type", "object") == "object"
            and not params.get("properties") and set(params) <= {"type", "properties", "required",
                                                                  "additionalProperties", "$schema"})


def _tool_descriptions(tools: Optional[Sequence[Any]]) -> List[ToolDescription]:
    out: List[ToolDescription] = []
    seen = set()
    for i, tool in enumerate(tools or []):
        if isinstance(tool, ToolDescription):
            desc = tool
        else:
            if not isinstance(tool, Mapping):
                raise OpenAIFormatError(f"tools[{i}] must be an object", param=f"tools[{i}]")
            kind = tool.get("type", "function")
            if kind != "function":
                raise OpenAIFormatError(f"tools[{i}].type {kind!r} is not supported (only 'function')",
                                        param=f"tools[{i}].type")
            fn = tool.get("function", tool)
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise OpenAIFormatError(f"tools[{i}].function.name must be a non-empty string",
                                        param=f"tools[{i}].function.name")
            params = fn.get("parameters")
            if params is not None and not isinstance(params, Mapping):
                raise OpenAIFormatError(f"tools[{i}].function.parameters must be a JSON Schema object",
                                        param=f"tools[{i}].function.parameters")
            if params is not None and _empty_object_schema(params):
                params = None
            desc = ToolDescription.new(fn["name"], fn.get("description") or "",
                                       dict(params) if params is not None else None)
        if desc.name in seen:
            raise OpenAIFormatError(f"tool {desc.name!r} is defined twice", param="tools")
        seen.add(desc.name)
        out.append(desc)
    return out


def _apply_tool_choice(tools: List[ToolDescription], tool_choice: Any) -> Tuple[List[ToolDescription], Optional[str]]:
    if tool_choice is None or tool_choice == "auto":
        return tools, None
    if tool_choice == "none":
        return [], None
    if tool_choice == "required":
        if not tools:
            raise OpenAIFormatError("tool_choice 'required' needs at least one tool", param="tool_choice")
        return tools, REQUIRED_TOOL_TEXT
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else tool_choice.get("name")
        if not isinstance(name, str) or not name:
            raise OpenAIFormatError("tool_choice must name a function: {'type': 'function', "
                                    "'function': {'name': ...}}", param="tool_choice")
        chosen = [t for t in tools if t.name == name]
        if not chosen:
            raise OpenAIFormatError(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
        return chosen, NAMED_TOOL_TEXT.format(name=name)
    raise OpenAIFormatError(f"tool_choice must be 'none', 'auto', 'required' or a function object; "
                            f"got {tool_choice!r}", param="tool_choice")


def tool_schemas(tools: Optional[Sequence[Any]], tool_choice: Any = None) -> Dict[str, Optional[dict]]:
    """``{tool name: parameters JSON Schema or None}`` of the tools the model is shown."""
    chosen, _ = _apply_tool_choice(_tool_descriptions(tools), tool_choice)
    return {t.name: t.parameters for t in chosen}


def response_format_schema(response_format: Optional[Mapping[str, Any]]) -> Optional[Tuple[str, dict, Optional[str]]]:
    """``(name, schema, description)`` of a JSON response format, or None for text/none."""
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise OpenAIFormatError("response_format must be an object", param="response_format")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json_object", {"type": "object"}, JSON_OBJECT_COMMENT
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise OpenAIFormatError("response_format.json_schema must be an object with a 'schema'",
                                    param="response_format.json_schema")
        schema = spec.get("schema")
        if schema is None:
            schema = {"type": "object"}
        if not isinstance(schema, Mapping):
            raise OpenAIFormatError("response_format.json_schema.schema must be an object",
                                    param="response_format.json_schema.schema")
        name = spec.get("name") or "response"
        desc = spec.get("description")
        return str(name), dict(schema), (desc if isinstance(desc, str) and desc else None)
    raise OpenAIFormatError(f"response_format.type must be text, json_object or json_schema; got {kind!r}",
                            param="response_format.type")


def _response_format_text(response_format: Optional[Mapping[str, Any]]) -> Optional[str]:
    spec = response_format_schema(response_format)
    if spec is None:
        return None
    name, schema, desc = spec
    body = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    comment = "".join(f"// {line}\n" for line in desc.splitlines()) if desc else ""
    return f"# Response Formats\n\n## {name}\n\n{comment}{body}"


def _assistant(content: str, channel: str) -> Message:
    return Message.from_role_and_content(Role.ASSISTANT, content).with_channel(channel)


def _arguments_text(args: Any) -> str:
    if args is None:
        return "{}"
    if isinstance(args, str):
        return args
    return json.dumps(args, ensure_ascii=False)


def _check_limits(messages: Sequence[Any], limits: Optional[Limits]) -> None:
    if limits is None:
        return
    if len(messages) > limits.max_messages:
        raise LimitExceeded(f"max_messages exceeded: {len(messages)} messages > {limits.max_messages}")


def messages_to_conversation(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Optional[Sequence[Any]] = None,
    tool_choice: Any = None,
    reasoning_effort: Any = None,
    response_format: Optional[Mapping[str, Any]] = None,
    model_identity: Optional[str] = None,
    conversation_start_date: Optional[str] = None,
    cot_policy: str = "spec",
    limits: Optional[Limits] = None,
) -> Conversation:
    """Turn an OpenAI chat request into a Harmony conversation (see the module docstring for
    every policy). Raises :class:`OpenAIFormatError` on malformed input and
    :class:`~llama_harmony.LimitExceeded` when ``limits.max_messages`` is exceeded."""
    if cot_policy not in COT_POLICIES:
        raise OpenAIFormatError(f"cot_policy must be one of {COT_POLICIES}; got {cot_policy!r}")
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise OpenAIFormatError("messages must be a list of message objects", param="messages")
    _check_limits(messages, limits)

    descs, extra_instruction = _apply_tool_choice(_tool_descriptions(tools), tool_choice)

    system = SystemContent.new().with_reasoning_effort(_effort(reasoning_effort))
    if model_identity is not None:
        system = system.with_model_identity(model_identity)
    if conversation_start_date is not None:
        system = system.with_conversation_start_date(conversation_start_date)
    out: List[Message] = [Message.from_role_and_content(Role.SYSTEM, system)]

    def role_of(i: int, m: Any) -> str:
        if not isinstance(m, Mapping):
            raise OpenAIFormatError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise OpenAIFormatError(f"messages[{i}].role must be system, developer, user, assistant or tool; "
                                    f"got {role!r}", param=f"messages[{i}].role")
        return role

    # Leading system/developer messages -> the developer message's instructions.
    start = 0
    instructions: List[str] = []
    while start < len(messages) and role_of(start, messages[start]) in ("system", "developer"):
        text = _text_of(messages[start].get("content"), f"messages[{start}]")
        if text:
            instructions.append(text)
        start += 1
    if extra_instruction:
        instructions.append(extra_instruction)

    contents: List[Any] = []
    if instructions or descs:
        dev = DeveloperContent.new()
        if instructions:
            dev = dev.with_instructions("\n\n".join(instructions))
        if descs:
            dev = dev.with_function_tools(descs)
        contents.append(dev)
    rf_text = _response_format_text(response_format)
    if rf_text:
        contents.append(TextContent(text=("\n\n" if contents else "") + rf_text))
    if contents:
        out.append(Message.from_role_and_contents(Role.DEVELOPER, contents))

    call_names: Dict[str, str] = {}
    last_user = -1
    for i in range(start, len(messages)):
        m = messages[i]
        role = role_of(i, m)
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            text = _text_of(m.get("content"), where) or ""
            out.append(Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_instructions(text)))
        elif role == "user":
            text = _text_of(m.get("content"), where)
            if text is None:
                raise OpenAIFormatError(f"{where}.content is required for a user message", param=f"{where}.content")
            last_user = len(out)
            out.append(Message.from_role_and_content(Role.USER, text))
        elif role == "assistant":
            out.extend(_assistant_messages(m, where, call_names))
        else:  # tool / function
            out.append(_tool_message(m, where, role, call_names))

    if cot_policy == "spec" and last_user >= 0:
        out = [msg for k, msg in enumerate(out)
               if not (k < last_user and msg.author.role == Role.ASSISTANT and msg.channel == "analysis")]
    return Conversation.from_messages(out)


def _assistant_messages(m: Mapping[str, Any], where: str, call_names: Dict[str, str]) -> List[Message]:
    out: List[Message] = []
    reasoning = None
    for key in ("reasoning_content", "reasoning", "thinking"):
        value = m.get(key)
        if isinstance(value, Mapping):  # {"content": "..."} / {"text": "..."} shapes some clients send
            value = value.get("content", value.get("text"))
        if value:
            reasoning = _text_of(value, f"{where}.{key}")
            break
    content = _text_of(m.get("content"), where)
    if not content and isinstance(m.get("refusal"), str):
        content = m["refusal"]
    calls = m.get("tool_calls") or []
    if not isinstance(calls, (list, tuple)):
        raise OpenAIFormatError(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
    calls = list(calls)
    if not calls and isinstance(m.get("function_call"), Mapping):  # legacy functions API
        calls = [{"id": None, "type": "function", "function": m["function_call"]}]

    if reasoning:
        out.append(_assistant(reasoning, "analysis"))
    if content:
        out.append(_assistant(content, "commentary" if calls else "final"))
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise OpenAIFormatError(f"{where}.tool_calls[{j}].function.name must be a non-empty string",
                                    param=f"{where}.tool_calls[{j}]")
        name = fn["name"]
        out.append(_assistant(_arguments_text(fn.get("arguments")), "commentary")
                   .with_recipient(f"functions.{name}").with_content_type("<|constrain|>json"))
        call_id = call.get("id")
        if call_id:
            call_names[str(call_id)] = name
    return out


def _tool_message(m: Mapping[str, Any], where: str, role: str, call_names: Dict[str, str]) -> Message:
    call_id = m.get("tool_call_id")
    if call_id is not None:
        name = call_names.get(str(call_id))
        if name is None:
            known = ", ".join(repr(k) for k in call_names) or "none"
            raise OpenAIFormatError(
                f"{where} answers tool_call_id {call_id!r}, which no earlier assistant tool call has "
                f"(known ids: {known})", param=f"{where}.tool_call_id")
    else:
        name = m.get("name")
        if not isinstance(name, str) or not name:
            raise OpenAIFormatError(f"{where} needs a tool_call_id", param=f"{where}.tool_call_id")
        if name.startswith("functions."):
            name = name[len("functions."):]
    text = _text_of(m.get("content"), where) or ""
    return (Message(author=Author(role=Role.TOOL, name=f"functions.{name}"), content=[TextContent(text=text)])
            .with_channel("commentary").with_recipient("assistant"))


def render_config(cot_policy: str = "spec") -> RenderConversationConfig:
    """The render config a chain-of-thought policy needs (see the module docstring)."""
    if cot_policy not in COT_POLICIES:
        raise OpenAIFormatError(f"cot_policy must be one of {COT_POLICIES}; got {cot_policy!r}")
    return RenderConversationConfig(auto_drop_analysis=(cot_policy == "reference"))


def render_prompt(encoding: Any, messages: Sequence[Mapping[str, Any]], *, cot_policy: str = "spec",
                  limits: Optional[Limits] = None, **kwargs: Any) -> List[int]:
    """Convert and render for completion (``...<|start|>assistant``) in one call."""
    convo = messages_to_conversation(messages, cot_policy=cot_policy, limits=limits, **kwargs)
    return encoding.render_conversation_for_completion(convo, Role.ASSISTANT, render_config(cot_policy),
                                                       limits=limits)


# =============================================================================================
# Output: parsed Harmony -> OpenAI objects
# =============================================================================================

def new_tool_call_id() -> str:
    """``call_`` + 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def message_kind(channel: Optional[str], recipient: Optional[str]) -> Tuple[str, Optional[str]]:
    """``("reasoning" | "content" | "tool", tool name or None)`` for a message header."""
    if (recipient and recipient.strip() and recipient.strip() not in NOT_CALL_RECIPIENTS
            and "<|" not in recipient):  # a special-token name is a misparsed header, not a tool
        r = recipient.strip()
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


class CompletionBuilder:
    """Holds the per-response constants (model, id, created, stop strings, id factory) and
    builds the non-streamed object (:meth:`chat_completion`) or a :class:`ChunkStream`."""

    def __init__(self, model: str, *, id: Optional[str] = None, created: Optional[int] = None,
                 stop: Any = None, tool_call_id_factory: Optional[Callable[[], str]] = None):
        self.model = model
        self.id = id or new_completion_id()
        self.created = int(created if created is not None else time.time())
        self.stop = stop
        self.tool_call_id_factory = tool_call_id_factory

    def chat_completion(self, messages_parsed: Iterable[Any], *, prompt_tokens: int, completion_tokens: int,
                        finish_reason: Optional[str], **extra: Any) -> Dict[str, Any]:
        return chat_completion(messages_parsed, model=self.model, prompt_tokens=prompt_tokens,
                               completion_tokens=completion_tokens, finish_reason=finish_reason,
                               created=self.created, id=self.id, stop=self.stop,
                               tool_call_id_factory=self.tool_call_id_factory, **extra)

    def chunk_stream(self, *, include_usage: bool = False) -> "ChunkStream":
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
    """

    def __init__(self, *, model: str, id: Optional[str] = None, created: Optional[int] = None,
                 include_usage: bool = False, stop: Any = None,
                 tool_call_id_factory: Optional[Callable[[], str]] = None):
        self.model = model
        self.id = id or new_completion_id()
        self.created = int(created if created is not None else time.time())
        self.include_usage = include_usage
        self._acc = _Accumulator(stop, tool_call_id_factory)
        self._finished = False
        self._finish_reason: Optional[str] = None
        self._usage: Optional[Dict[str, Any]] = None

    def _chunk(self, delta: Dict[str, Any], finish_reason: Optional[str] = None) -> Dict[str, Any]:
        chunk: Dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
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
        return bool(self._acc.tool_calls)

    @property
    def reasoning_deltas(self) -> int:
        return self._acc.reasoning_deltas

    @property
    def message(self) -> Dict[str, Any]:
        """The assistant message accumulated so far (what the deltas add up to)."""
        return self._acc.message()

    def start(self) -> Dict[str, Any]:
        """The first chunk: the role."""
        return self._chunk({"role": "assistant", "content": ""})

    def update(self, delta: ParsedDelta) -> List[Dict[str, Any]]:
        """Chunks for one parsed step."""
        return [self._chunk(d) for d in self._acc.push(delta)]

    def feed(self, deltas: Union[ParsedDelta, Iterable[ParsedDelta]]) -> List[Dict[str, Any]]:
        """Chunks for one or more parsed steps (e.g. what :meth:`ParserTracker.process` returns)."""
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
        out = [self._chunk(d) for d in self._acc.close()]
        self._finish_reason = self._acc.finish_reason(finish_reason)
        self._usage = _usage(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)
        out.append(self._chunk({}, self._finish_reason))
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
                         "logprobs": None}],
            "usage": dict(self._usage or {}),
        }


# =============================================================================================
# Watching a streaming parser
# =============================================================================================

_END_IDS = frozenset({200002, 200007, 200012, 199999})
_BOUNDARY_IDS = _END_IDS | {200006}
_MESSAGE_ID = 200008
#: <|start|>, <|channel|>, <|message|>, <|constrain|>
_STRUCTURAL_IDS = frozenset({200006, 200005, 200008, 200003})


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
        if token is not None and token != 200006:
            self._stray.append(token)
            out += self._stray_text()
        elif token == 200006:
            out += self._resync(token)
        else:
            out += self._stray_text(final=True)
        return out

    def _resync(self, token: int) -> List[ParsedDelta]:
        """End the stray text and restart a fresh parser at this ``<|start|>``."""
        out = self._stray_text(final=True) + self._close_current()
        self._stray = None
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
            if token == 200006 and self._factory is not None:
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
