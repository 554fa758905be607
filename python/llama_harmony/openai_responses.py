"""The OpenAI Responses API <-> Harmony: request items -> a Harmony conversation, parsed model
output -> ``Response`` objects and streaming events.

Pure Python (no :mod:`llama_cpp`, no web framework): the ``/v1/responses`` endpoint calls it.
Two halves:

* :func:`responses_to_conversation` turns the request (``input``, ``instructions``, ``tools``,
  ``tool_choice``, ``reasoning``, ``text``) plus the stored state of the previous response
  chain (:class:`ChainState`, for ``previous_response_id``) into the Harmony
  :class:`~llama_harmony.Conversation` to render, and the state to store after this response.
* :class:`ResponseStream` (the Responses counterpart of
  :class:`~llama_harmony.openai_output.ChunkStream`) takes :class:`ParsedDelta` steps (from
  :class:`~llama_harmony.openai_output.ParserTracker`) and returns the streaming events; its
  :meth:`~ResponseStream.response` is the ``Response`` object (the non-streamed answer).

Input policies
--------------
* ``input`` is a string (one user message) or a list of items:

  - ``message`` (``type`` may be omitted), roles ``user`` / ``system`` / ``developer`` /
    ``assistant``, content a string or ``input_text`` / ``output_text`` / ``text`` parts
    (anything else, e.g. ``input_image``, is an error naming ``input[i].content[j].type``).
    ``system`` and ``developer`` messages that open the chain join ``instructions`` in the
    developer message's ``# Instructions`` (``instructions`` first, blank-line separated);
    later ones stay in place as developer messages. An ``assistant`` message goes on
    ``final``, or on ``commentary`` (a preamble) when its ``phase`` is ``commentary`` or, with
    no ``phase``, when the next item is a ``function_call``.
  - ``reasoning``: its ``reasoning_text`` content (else its ``summary_text`` summary, parts
    joined by a blank line) -> an ``analysis`` message.
  - ``function_call`` (``call_id``, ``name``, ``arguments``) -> a ``commentary`` message to
    ``functions.{name}`` with content type ``<|constrain|>json``.
  - ``function_call_output`` (``call_id``, ``output``: a string or text parts) -> the
    function's result (``functions.{name} to=assistant`` on ``commentary``); the name comes
    from the call with that ``call_id`` in the input or the stored chain (unknown: an error
    naming ``input[i].call_id``).
  - ``code_interpreter_call`` (``code``, ``outputs`` of type ``logs``) -> the python call
    (``analysis``, to ``python``, content type ``code``) and its result (author ``python``).
  - ``web_search_call`` items are accepted and skipped: they do not carry the page text the
    model was shown, so they cannot be rendered back.
  - ``item_reference`` and any other type: an error naming ``input[i].type``.

* ``tools``: function tools in the Responses shape (``{"type": "function", "name",
  "description", "parameters", "strict"}``; the chat shape is accepted too) -> the developer
  message's ``functions`` namespace; ``code_interpreter`` -> the built-in ``python`` tool and
  ``web_search_preview`` / ``web_search`` (and their dated variants) -> the built-in
  ``browser`` tool, both declared in the system message's ``# Tools`` section exactly as
  openai-harmony renders ``ToolNamespaceConfig.python()`` / ``.browser()``. Other types are
  an error naming ``tools[i].type``.
* ``tool_choice``: ``none`` (no tools rendered, built-in ones included), ``auto``,
  ``required`` (an instruction to use a tool), ``{"type": "function", "name"}`` (only that
  function, and an instruction to call it), ``{"type": "code_interpreter"}`` /
  ``{"type": "web_search_preview"}`` (only that built-in tool, and an instruction to use it).
* ``reasoning.effort``: ``low`` / ``medium`` (default) / ``high`` (``minimal`` reads as low).
* ``text.format``: ``json_schema`` (``name``, ``schema``, ``description``) / ``json_object``
  -> the developer message's ``# Response Formats`` section; ``text`` -> nothing.
* Chain of thought: ``cot_policy`` as in :mod:`llama_harmony.openai_request` (``spec``, the
  default, drops the reasoning of completed turns and keeps the current tool chain's).

Output policies
---------------
Items in the model's order: an ``analysis`` message without a tool recipient -> ``reasoning``
(content ``[{"type": "reasoning_text", "text"}]``, empty ``summary``); ``final``, channel-less
or ``commentary`` text -> ``message`` (one ``output_text`` part; ``phase`` ``commentary`` for a
commentary preamble, else ``final_answer``); a message to ``functions.{name}`` (or to any tool
that is not a built-in one in use) -> ``function_call`` (``call_id``, ``name``, ``arguments``,
``"{}"`` when the model wrote none); to ``python`` -> ``code_interpreter_call``; to
``browser.search`` / ``browser.open`` / ``browser.find`` -> ``web_search_call`` with ``action``
``search`` / ``open_page`` / ``find_in_page`` read from the JSON arguments. Built-in calls stay
open until the endpoint runs the tool and calls :meth:`ResponseStream.tool_result`.

A typical streamed turn (reasoning, then an answer)::

    response.created, response.in_progress,
    response.output_item.added (reasoning), response.content_part.added (reasoning_text),
    response.reasoning_text.delta..., response.reasoning_text.done,
    response.content_part.done, response.output_item.done,
    response.output_item.added (message), response.content_part.added (output_text),
    response.output_text.delta..., response.output_text.done,
    response.content_part.done, response.output_item.done,
    response.completed            (or response.incomplete / response.failed)

A function call: ``output_item.added`` (``arguments: ""``),
``function_call_arguments.delta``..., ``function_call_arguments.done``, ``output_item.done``.
A python call: ``output_item.added``, ``code_interpreter_call.in_progress``,
``code_interpreter_call_code.delta``..., ``code_interpreter_call_code.done``,
``code_interpreter_call.interpreting``, then after :meth:`~ResponseStream.tool_result`
``code_interpreter_call.completed`` and ``output_item.done`` (with ``outputs``). A browser call
(its arguments are not streamed, as OpenAI does not stream web searches): when its message ends,
``output_item.added`` (with the ``action``), ``web_search_call.in_progress``,
``web_search_call.searching``; after the tool ran, ``web_search_call.completed`` and
``output_item.done``. Every event has a strictly increasing ``sequence_number``; the deltas of
an item concatenate to its ``.done`` text and to the item in :meth:`ResponseStream.response`.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import (
    Author,
    Conversation,
    DeveloperContent,
    Limits,
    Message,
    RenderConversationConfig,
    Role,
    TextContent,
    ToolDescription,
    ToolNamespaceConfig,
)
from .openai_output import ParsedDelta, message_kind, new_tool_call_id
from .openai_request import (
    COT_POLICIES,
    OpenAIFormatError,
    _apply_tool_choice,
    _check_limits,
    _effort,
    _tool_descriptions,
    developer_message,
    drop_completed_reasoning,
    function_result_message,
    render_config,
    response_format_schema,
    system_message,
)

__all__ = [
    "BUILTIN_TOOLS",
    "BuiltinCall",
    "ChainState",
    "ResponseStream",
    "ResponsesInput",
    "browser_action",
    "new_response_id",
    "responses_to_conversation",
]

#: The built-in tools gpt-oss was trained with, by their Harmony namespace name.
BUILTIN_TOOLS = ("python", "browser")
_BUILTIN_TOOL_TYPES = {
    "code_interpreter": "python",
    "web_search_preview": "browser",
    "web_search_preview_2025_03_11": "browser",
    "web_search": "browser",
    "web_search_2025_08_26": "browser",
}
_NAMESPACES: Dict[str, Callable[[], ToolNamespaceConfig]] = {
    "python": ToolNamespaceConfig.python,
    "browser": ToolNamespaceConfig.browser,
}
#: Appended to the instructions for ``tool_choice: "required"`` when built-in tools are shown.
REQUIRED_ANY_TOOL_TEXT = "You must use at least one of the available tools before you answer."
#: Appended to the instructions for ``tool_choice: {"type": "code_interpreter"}`` and the like.
NAMED_BUILTIN_TEXT = "You must use the `{name}` tool before you answer."
_TEXT_PARTS = ("input_text", "output_text", "text")


def new_response_id() -> str:
    """``resp_`` + 48 random hex digits."""
    return "resp_" + secrets.token_hex(24)


def _new_item_id(prefix: str) -> str:
    return new_tool_call_id() if prefix == "call" else f"{prefix}_{secrets.token_hex(24)}"


def _error(message: str, param: str) -> OpenAIFormatError:
    return OpenAIFormatError(message, param=param)


# =============================================================================================
# State kept between the responses of a chain (previous_response_id)
# =============================================================================================

@dataclass
class ChainState:
    """What a stored response keeps so that ``previous_response_id`` can continue it.

    ``messages``: the Harmony messages of the chain after its system/developer header (the
    ``system``/``developer`` input messages that opened the chain come first, as developer
    messages; ``instructions`` are not kept, as the OpenAI API specifies), every input and
    output, tool calls and results included; no reasoning is dropped here (the
    chain-of-thought policy applies when rendering). ``call_names``: ``call_id`` -> function
    name of the chain's function calls, to resolve a later ``function_call_output``.
    :meth:`to_dict` / :meth:`from_dict` give a JSON-safe form for a persistent store.
    """

    messages: List[Message] = field(default_factory=list)
    call_names: Dict[str, str] = field(default_factory=dict)

    def extended(self, messages: Iterable[Message], call_names: Optional[Mapping[str, str]] = None) -> "ChainState":
        """A new state with ``messages`` appended and ``call_names`` added."""
        return ChainState(list(self.messages) + list(messages), {**self.call_names, **(call_names or {})})

    def to_dict(self) -> Dict[str, Any]:
        """``{"messages": [Message.to_dict()...], "call_names": {...}}`` (JSON-safe)."""
        return {"messages": [m.to_dict() for m in self.messages], "call_names": dict(self.call_names)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ChainState":
        """The inverse of :meth:`to_dict`."""
        return cls([Message.from_dict(m) for m in raw.get("messages", [])], dict(raw.get("call_names", {})))


@dataclass
class ResponsesInput:
    """The result of :func:`responses_to_conversation`.

    ``conversation``: what to render (``render_conversation_for_completion(conversation,
    Role.ASSISTANT, render_config)``). ``state``: the chain so far with this request's input
    (store ``state.extended(stream.output_messages(), stream.call_names)``, or
    :meth:`ResponseStream.chain_state`). ``builtin_tools``: the built-in tools declared
    (``"python"``, ``"browser"``): give them to :class:`ResponseStream`. ``tool_schemas``:
    ``{function name: parameters schema or None}`` of the functions shown.
    ``response_format``: ``(name, schema, description)`` of a JSON ``text.format``, or None.
    """

    conversation: Conversation
    state: ChainState
    builtin_tools: FrozenSet[str]
    tool_schemas: Dict[str, Optional[dict]]
    response_format: Optional[Tuple[str, dict, Optional[str]]]
    render_config: RenderConversationConfig

    def continued(self, output_messages: Sequence[Message]) -> Conversation:
        """The conversation for the next generation of the same response, after a built-in
        tool ran: this conversation + the output so far (:meth:`ResponseStream.output_messages`)."""
        return Conversation.from_messages(list(self.conversation.messages) + list(output_messages))


# =============================================================================================
# Input: request -> Harmony
# =============================================================================================

def _parts_text(content: Any, where: str, key: str, allowed: Sequence[str], text_key: str = "text") -> str:
    """The text of ``content`` (a string or a list of parts of the ``allowed`` types)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, (list, tuple)):
        raise _error(f"{where}.{key} must be a string or a list of parts", f"{where}.{key}")
    texts = []
    for j, part in enumerate(content):
        at = f"{where}.{key}[{j}]"
        if not isinstance(part, Mapping):
            raise _error(f"{at} must be an object", at)
        kind = part.get("type")
        if kind not in allowed:
            raise _error(f"{at}.type {kind!r} is not supported here (accepted: {', '.join(allowed)}; "
                         "gpt-oss takes text only)", f"{at}.type")
        text = part.get(text_key)
        if not isinstance(text, str):
            raise _error(f"{at}.{text_key} must be a string", f"{at}.{text_key}")
        texts.append(text)
    return "".join(texts)


def _assistant(text: str, channel: str) -> Message:
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel(channel)


def _developer(text: str) -> Message:
    return Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_instructions(text))


def _developer_text(msg: Message) -> str:
    texts = []
    for c in msg.content:
        if isinstance(c, DeveloperContent):
            texts.append(c.instructions or "")
        elif isinstance(c, TextContent):
            texts.append(c.text)
    return "".join(texts)


def _function_call(name: str, arguments: str) -> Message:
    return (_assistant(arguments, "commentary").with_recipient(f"functions.{name}")
            .with_content_type("<|constrain|>json"))


def _python_call(code: str, channel: str = "analysis") -> Message:
    return _assistant(code, channel).with_recipient("python").with_content_type("code")


def _builtin_result(recipient: str, text: str, channel: str) -> Message:
    return (Message(author=Author(role=Role.TOOL, name=recipient), content=[TextContent(text=text)])
            .with_channel(channel).with_recipient("assistant"))


def _str_field(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise _error(f"{where}.{key} must be a non-empty string", f"{where}.{key}")
    return value


def _input_messages(input: Any, call_names: Dict[str, str]) -> List[Message]:
    """The new ``input`` as Harmony messages; ``call_names`` gains the input's function calls."""
    if isinstance(input, str):
        return [Message.from_role_and_content(Role.USER, input)]
    if not isinstance(input, (list, tuple)):
        raise _error("input must be a string or a list of items", "input")
    out: List[Message] = []
    for i, item in enumerate(input):
        where = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise _error(f"{where} must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise _error(f"{where}.role must be user, system, developer or assistant; got {role!r}",
                             f"{where}.role")
            text = _parts_text(item.get("content"), where, "content", _TEXT_PARTS)
            if role == "user":
                out.append(Message.from_role_and_content(Role.USER, text))
            elif role in ("system", "developer"):
                out.append(_developer(text))
            elif text:
                phase = item.get("phase")
                if phase is None:
                    nxt = input[i + 1] if i + 1 < len(input) else None
                    preamble = isinstance(nxt, Mapping) and nxt.get("type") == "function_call"
                else:
                    preamble = phase == "commentary"
                out.append(_assistant(text, "commentary" if preamble else "final"))
        elif kind == "reasoning":
            content = item.get("content")
            text = _parts_text(content, where, "content", ("reasoning_text",)) if content else ""
            if not text and item.get("summary"):
                summary = item["summary"]
                if not isinstance(summary, (list, tuple)):
                    raise _error(f"{where}.summary must be a list of parts", f"{where}.summary")
                text = "\n\n".join(_parts_text([p], where, "summary", ("summary_text",)) for p in summary)
            if text:
                out.append(_assistant(text, "analysis"))
        elif kind == "function_call":
            call_id = _str_field(item, "call_id", where)
            name = _str_field(item, "name", where)
            if name.startswith("functions.") and len(name) > len("functions."):
                name = name[len("functions."):]
            args = item.get("arguments", "")
            if isinstance(args, Mapping):
                args = json.dumps(args, ensure_ascii=False)
            if not isinstance(args, str):
                raise _error(f"{where}.arguments must be a JSON string", f"{where}.arguments")
            call_names[call_id] = name
            out.append(_function_call(name, args or "{}"))
        elif kind == "function_call_output":
            output_call_id = item.get("call_id")
            if not isinstance(output_call_id, str) or output_call_id not in call_names:
                known = ", ".join(repr(k) for k in call_names) or "none"
                raise _error(f"{where}.call_id {output_call_id!r} matches no earlier function_call in the input or "
                             f"the previous response (known call ids: {known})", f"{where}.call_id")
            text = _parts_text(item.get("output", ""), where, "output", _TEXT_PARTS)
            out.append(function_result_message(call_names[output_call_id], text))
        elif kind == "code_interpreter_call":
            code = item.get("code") or ""
            if not isinstance(code, str):
                raise _error(f"{where}.code must be a string", f"{where}.code")
            logs = _parts_text(item.get("outputs") or [], where, "outputs", ("logs",), text_key="logs")
            out.append(_python_call(code))
            out.append(_builtin_result("python", logs, "analysis"))
        elif kind == "web_search_call":
            continue  # the page text the model saw is not in the item: nothing to render
        elif kind == "item_reference":
            raise _error(f"{where}: item_reference is not supported; send the item itself, or continue a "
                         "stored response with previous_response_id", f"{where}.type")
        else:
            raise _error(f"{where}.type {kind!r} is not supported (message, reasoning, function_call, "
                         "function_call_output, code_interpreter_call, web_search_call)", f"{where}.type")
    return out


def _function_tool(tool: Mapping[str, Any], i: int) -> ToolDescription:
    """One function tool, validated by the chat-completions code; its error params are renamed
    from ``tools[0]`` (and, for the flat Responses shape, ``tools[0].function``) to ``tools[i]``."""
    def rename(text: str) -> str:
        if "function" not in tool:
            text = text.replace("tools[0].function", f"tools[{i}]")
        return text.replace("tools[0]", f"tools[{i}]")

    try:
        return _tool_descriptions([tool])[0]
    except OpenAIFormatError as exc:
        raise _error(rename(str(exc)), rename(exc.param or "tools[0]")) from None


def _tools_and_choice(tools: Any, tool_choice: Any, available: Optional[Collection[str]]
                      ) -> Tuple[List[ToolDescription], List[str], Optional[str]]:
    """(function tools shown, built-in tools shown, extra instruction)."""
    if tools is None:
        tools = []
    if not isinstance(tools, (list, tuple)):
        raise _error("tools must be a list", "tools")
    functions: List[ToolDescription] = []
    builtins: List[str] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise _error(f"tools[{i}] must be an object", f"tools[{i}]")
        kind = tool.get("type")
        if kind == "function":
            desc = _function_tool(tool, i)
            if any(d.name == desc.name for d in functions):
                raise _error(f"tool {desc.name!r} is defined twice", "tools")
            functions.append(desc)
        elif kind in _BUILTIN_TOOL_TYPES:
            name = _BUILTIN_TOOL_TYPES[kind]
            if available is not None and name not in available:
                raise _error(f"tools[{i}].type {kind!r}: this server does not run the built-in {name} tool",
                             f"tools[{i}].type")
            if name not in builtins:
                builtins.append(name)
        else:
            raise _error(f"tools[{i}].type {kind!r} is not supported (function, code_interpreter, "
                         "web_search_preview, web_search)", f"tools[{i}].type")

    if tool_choice is None or tool_choice == "auto":
        return functions, builtins, None
    if tool_choice == "none":
        return [], [], None
    if tool_choice == "required":
        if builtins:
            return functions, builtins, REQUIRED_ANY_TOOL_TEXT
        chosen, text = _apply_tool_choice(functions, "required")
        return chosen, [], text
    if isinstance(tool_choice, Mapping):
        kind = tool_choice.get("type")
        if kind == "function":
            chosen, text = _apply_tool_choice(functions, tool_choice)
            return chosen, [], text
        if kind in _BUILTIN_TOOL_TYPES:
            name = _BUILTIN_TOOL_TYPES[kind]
            if name not in builtins:
                raise _error(f"tool_choice names the built-in {kind!r} tool, which is not in tools",
                             "tool_choice")
            return [], [name], NAMED_BUILTIN_TEXT.format(name=name)
        raise _error(f"tool_choice.type {kind!r} is not supported (function, code_interpreter, "
                     "web_search_preview)", "tool_choice.type")
    raise _error(f"tool_choice must be 'none', 'auto', 'required' or an object; got {tool_choice!r}",
                 "tool_choice")


def _reasoning_effort(reasoning: Any) -> Any:
    if reasoning is None:
        return _effort(None)
    if not isinstance(reasoning, Mapping):
        raise _error("reasoning must be an object like {'effort': 'low'}", "reasoning")
    try:
        return _effort(reasoning.get("effort"))
    except OpenAIFormatError as exc:
        raise _error(str(exc).replace("reasoning_effort", "reasoning.effort"), "reasoning.effort") from None


def _text_format(text: Any) -> Optional[Dict[str, Any]]:
    """``text.format`` -> the chat ``response_format`` shape the developer message takes."""
    if text is None:
        return None
    if not isinstance(text, Mapping):
        raise _error("text must be an object like {'format': {...}}", "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping):
        raise _error("text.format must be an object", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, Mapping):
            raise _error("text.format.schema must be a JSON Schema object", "text.format.schema")
        name = fmt.get("name", "response")
        if not isinstance(name, str) or not name:
            raise _error("text.format.name must be a non-empty string", "text.format.name")
        desc = fmt.get("description")
        if desc is not None and not isinstance(desc, str):
            raise _error("text.format.description must be a string", "text.format.description")
        return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "description": desc}}
    raise _error(f"text.format.type must be text, json_object or json_schema; got {kind!r}", "text.format.type")


def _as_state(history: Union[None, ChainState, Sequence[Message]]) -> ChainState:
    if history is None:
        return ChainState()
    if isinstance(history, ChainState):
        return history
    return ChainState(list(history), {})


def responses_to_conversation(
    input: Any,
    *,
    instructions: Optional[str] = None,
    tools: Optional[Sequence[Any]] = None,
    tool_choice: Any = None,
    reasoning: Optional[Mapping[str, Any]] = None,
    text: Optional[Mapping[str, Any]] = None,
    history: Union[None, ChainState, Sequence[Message]] = None,
    builtin_tools_available: Optional[Collection[str]] = None,
    model_identity: Optional[str] = None,
    conversation_start_date: Optional[str] = None,
    cot_policy: str = "spec",
    limits: Optional[Limits] = None,
) -> ResponsesInput:
    """Turn a Responses API request into a Harmony conversation (policies: module docstring).

    Takes the request's fields as plain JSON values. ``history``: the :class:`ChainState` of
    the response named by ``previous_response_id`` (or a plain list of its Harmony messages,
    then without call ids). ``builtin_tools_available``: the built-in tools this server runs
    (``"python"``, ``"browser"``; None: any); asking for another one is an error naming
    ``tools[i].type``. Raises :class:`~llama_harmony.openai_request.OpenAIFormatError`
    (``param`` names the field, e.g. ``input[3].call_id``, ``tools[1].type``,
    ``text.format.schema``) and :class:`~llama_harmony.LimitExceeded` (``limits.max_messages``).
    """
    if cot_policy not in COT_POLICIES:
        raise OpenAIFormatError(f"cot_policy must be one of {COT_POLICIES}; got {cot_policy!r}")
    if instructions is not None and not isinstance(instructions, str):
        raise _error("instructions must be a string", "instructions")
    state = _as_state(history)
    functions, builtins, extra = _tools_and_choice(tools, tool_choice, builtin_tools_available)
    effort = _reasoning_effort(reasoning)
    response_format = _text_format(text)

    call_names = dict(state.call_names)
    chain = list(state.messages) + _input_messages(input, call_names)
    _check_limits(chain, limits)

    lead = 0
    while lead < len(chain) and chain[lead].author.role == Role.DEVELOPER:
        lead += 1
    texts = [t for t in [instructions or ""] + [_developer_text(m) for m in chain[:lead]] + [extra or ""] if t]
    head = [system_message(effort, model_identity=model_identity, conversation_start_date=conversation_start_date,
                           builtin_tools=[_NAMESPACES[name]() for name in sorted(builtins)])]
    dev = developer_message(texts, functions, response_format)
    if dev is not None:
        head.append(dev)
    rest = chain[lead:]
    if cot_policy == "spec":
        rest = drop_completed_reasoning(rest)
    return ResponsesInput(
        conversation=Conversation.from_messages(head + rest),
        state=ChainState(chain, call_names),
        builtin_tools=frozenset(builtins),
        tool_schemas={d.name: d.parameters for d in functions},
        response_format=response_format_schema(response_format),
        render_config=render_config(cot_policy),
    )


# =============================================================================================
# Output: parsed model output -> Response object and streaming events
# =============================================================================================

@dataclass
class BuiltinCall:
    """A built-in tool call the model finished writing and the endpoint has to run.

    ``tool``: ``"python"`` or ``"browser"``; ``recipient``: as the model wrote it (``python``,
    ``browser.search``...); ``text``: the code or the JSON arguments; ``channel``: the call's
    channel (the tool's result goes back on it).
    """

    item_id: str
    tool: str
    recipient: str
    channel: str
    text: str


def browser_action(recipient: str, arguments: str) -> Dict[str, Any]:
    """The ``web_search_call.action`` for a ``browser.*`` call: ``browser.search`` ->
    ``{"type": "search", "query"}``, ``browser.open`` -> ``{"type": "open_page", "url"}`` (the
    ``id`` when it is a URL, else None: a link number, known to the tool only),
    ``browser.find`` -> ``{"type": "find_in_page", "pattern", "url": ""}``. Malformed
    arguments give the action with empty fields; any other function reads as a search."""
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        args = {}
    if not isinstance(args, dict):
        args = {}
    function = recipient.strip().partition(".")[2]
    if function == "open":
        link = args.get("id")
        return {"type": "open_page", "url": link if isinstance(link, str) else None}
    if function == "find":
        pattern = args.get("pattern")
        return {"type": "find_in_page", "pattern": pattern if isinstance(pattern, str) else "", "url": ""}
    query = args.get("query")
    return {"type": "search", "query": query if isinstance(query, str) else None}


class _Item:
    """One output item while it is built."""

    def __init__(self, kind: str, item_id: str, channel: Optional[str], recipient: str,
                 content_type: Optional[str]):
        self.kind = kind
        self.id = item_id
        self.channel = channel
        self.recipient = recipient
        self.content_type = content_type
        self.output_index = -1  # set when the item is announced
        self.parts: List[str] = []
        self.status = "in_progress"
        self.closed = False     # the model finished (or stopped) writing it
        self.finished = False   # output_item.done was sent
        self.phase = "commentary" if channel == "commentary" else "final_answer"
        self.name = ""
        self.call_id = ""
        self.container_id = ""
        self.action: Dict[str, Any] = {}
        self.outputs: Optional[List[Dict[str, Any]]] = None
        self.result: Optional[Message] = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def call_channel(self) -> str:
        """The channel of a built-in call and of its result."""
        return self.channel if self.channel in ("analysis", "commentary") else "analysis"

    def part(self) -> Dict[str, Any]:
        if self.kind == "reasoning":
            return {"type": "reasoning_text", "text": self.text}
        return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}

    def to_dict(self, *, with_content: bool = True) -> Dict[str, Any]:
        base: Dict[str, Any] = {"id": self.id, "type": self.kind, "status": self.status}
        if self.kind == "reasoning":
            base.update(summary=[], content=[self.part()] if with_content else [])
        elif self.kind == "message":
            base.update(role="assistant", content=[self.part()] if with_content else [], phase=self.phase)
        elif self.kind == "function_call":
            base.update(call_id=self.call_id, name=self.name, arguments=self.text)
        elif self.kind == "code_interpreter_call":
            base.update(code=self.text, container_id=self.container_id, outputs=copy.deepcopy(self.outputs))
        else:
            base.update(action=copy.deepcopy(self.action))
        return base

    def history(self) -> List[Message]:
        """The item as Harmony messages for the next turn (empty for a call that never ran)."""
        if self.kind == "reasoning":
            return [_assistant(self.text, "analysis")]
        if self.kind == "message":
            return [_assistant(self.text, "commentary" if self.phase == "commentary" else "final")]
        if self.kind == "function_call":
            return [_function_call(self.name, self.text)] if self.status == "completed" else []
        if self.result is None:
            return []
        if self.kind == "code_interpreter_call":
            call = _python_call(self.text, self.call_channel)
        else:
            call = _assistant(self.text, self.call_channel).with_recipient(self.recipient)
            if self.content_type:
                call = call.with_content_type(self.content_type)
        return [call, self.result]


_ECHOED = ("instructions", "max_output_tokens", "max_tool_calls", "metadata", "previous_response_id",
           "temperature", "top_p", "top_logprobs", "truncation", "user", "background")


class ResponseStream:
    """Builds one ``Response`` from parsed model output, as streaming events and as an object.

    ::

        rs = ResponseStream(model, request=body, builtin_tools=prepared.builtin_tools)
        events = rs.start()                                   # response.created, .in_progress
        while True:
            for tok in generated_ids:                         # one generation
                events += rs.feed(tracker.process(tok))
            events += rs.end_generation(tracker.process_eos(length=cut), length=cut)
            calls = rs.pending_calls()                        # built-in calls to run
            if cut or not calls or too_many_rounds:
                break
            for call in calls:
                events += rs.tool_result(call.item_id, run(call))
            prompt = render(prepared.continued(rs.output_messages()))   # generate again
        events += rs.finish(input_tokens=..., cached_tokens=..., output_tokens=..., reasoning_tokens=...)
        rs.response()                                          # the Response object
        store(rs.id, rs.chain_state(prepared.state))           # for previous_response_id

    ``request``: the request body; the Response echoes ``instructions``, ``tools``,
    ``tool_choice``, ``reasoning``, ``text``, ``temperature``, ``top_p``,
    ``max_output_tokens``, ``previous_response_id``, ``store``, ``metadata``,
    ``parallel_tool_calls``... ``builtin_tools``: the built-in tools in use (``"python"``,
    ``"browser"``; default: those the request's ``tools`` name, none with ``tool_choice:
    "none"``); a call to a built-in tool that is not in use becomes a ``function_call``.
    ``container_id``: the ``code_interpreter_call.container_id``. ``id_factory(prefix)``
    makes item ids (prefixes ``rs``, ``msg``, ``fc``, ``ci``, ``ws``, and ``call`` for call
    ids). Malformed input (text with no header, stray messages, deltas out of order) never
    raises: every piece of text lands in some item. Events and objects are fresh dicts.
    """

    def __init__(self, model: str, *, id: Optional[str] = None, created_at: Optional[float] = None,
                 request: Optional[Mapping[str, Any]] = None, builtin_tools: Optional[Iterable[str]] = None,
                 container_id: Optional[str] = None, id_factory: Optional[Callable[[str], str]] = None):
        """Set up the ResponseStream (the parameters are described in the class docstring)."""
        self.model = model
        self.id = id or new_response_id()
        self.created_at = int(created_at if created_at is not None else time.time())
        self.request: Dict[str, Any] = dict(request or {})
        self.builtin_tools = frozenset(builtin_tools) if builtin_tools is not None else self._requested_builtins()
        self._new_id = id_factory or _new_item_id
        self.container_id = container_id or "cntr_" + secrets.token_hex(24)
        self.status = "in_progress"
        self._items: List[_Item] = []
        self._cur: Optional[_Item] = None
        self._cur_key: Any = None
        self._closed_keys: set = set()
        self._gen = 0
        self._seq = 0
        self._cutting = False
        self._cut = False
        self._done = False
        self._usage: Optional[Dict[str, Any]] = None
        self._error: Optional[Dict[str, Any]] = None
        self._incomplete: Optional[Dict[str, Any]] = None
        self._completed_at: Optional[int] = None
        #: Non-empty reasoning text deltas seen (the default ``reasoning_tokens``).
        self.reasoning_deltas = 0

    # -- request echo ----------------------------------------------------------------------------

    def _requested_builtins(self) -> FrozenSet[str]:
        tools = self.request.get("tools")
        if self.request.get("tool_choice") == "none" or not isinstance(tools, (list, tuple)):
            return frozenset()
        return frozenset(_BUILTIN_TOOL_TYPES[t["type"]] for t in tools
                         if isinstance(t, Mapping) and t.get("type") in _BUILTIN_TOOL_TYPES)

    @staticmethod
    def _echo_tool(tool: Any) -> Any:
        if not isinstance(tool, Mapping):
            return tool
        if tool.get("type") == "function":
            fn = tool.get("function", tool)
            return {"type": "function", "name": fn.get("name"), "description": fn.get("description"),
                    "parameters": fn.get("parameters"), "strict": fn.get("strict", tool.get("strict"))}
        if tool.get("type") == "code_interpreter":
            return {**tool, "container": tool.get("container") or {"type": "auto"}}
        return dict(tool)

    def _echo_tool_choice(self) -> Any:
        choice = self.request.get("tool_choice") or "auto"
        if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):  # chat shape
            return {"type": "function", "name": choice["function"].get("name")}
        return copy.deepcopy(choice)

    def _echo_reasoning(self) -> Dict[str, Any]:
        raw = self.request.get("reasoning")
        raw = raw if isinstance(raw, Mapping) else {}
        try:
            effort: Optional[str] = _effort(raw.get("effort")).value.lower()
        except OpenAIFormatError:
            effort = None
        return {"effort": effort, "summary": raw.get("summary")}

    # -- events ----------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _item_event(self, kind: str, item: _Item, **fields: Any) -> Dict[str, Any]:
        return self._event(kind, item_id=item.id, output_index=item.output_index, **fields)

    def _announce(self, item: _Item, searching: bool = False) -> List[Dict[str, Any]]:
        item.output_index = len(self._items)
        self._items.append(item)
        out = [self._event("response.output_item.added", output_index=item.output_index,
                           item=item.to_dict(with_content=False))]
        if item.kind in ("reasoning", "message"):
            out.append(self._item_event("response.content_part.added", item, content_index=0, part=item.part()))
        elif item.kind == "code_interpreter_call":
            out.append(self._item_event("response.code_interpreter_call.in_progress", item))
        elif searching:
            out.append(self._item_event("response.web_search_call.in_progress", item))
            out.append(self._item_event("response.web_search_call.searching", item))
        return out

    def _item_done(self, item: _Item) -> List[Dict[str, Any]]:
        item.finished = True
        return [self._event("response.output_item.done", output_index=item.output_index, item=item.to_dict())]

    def _open(self, d: ParsedDelta) -> List[Dict[str, Any]]:
        recipient = (d.recipient or "").strip()
        kind, name = message_kind(d.channel, d.recipient)
        if kind == "tool" and recipient == "python" and "python" in self.builtin_tools:
            item = _Item("code_interpreter_call", self._new_id("ci"), d.channel, recipient, d.content_type)
            item.container_id = self.container_id
        elif kind == "tool" and recipient.split(".")[0] == "browser" and "browser" in self.builtin_tools:
            item = _Item("web_search_call", self._new_id("ws"), d.channel, recipient, d.content_type)
        elif kind == "tool":
            item = _Item("function_call", self._new_id("fc"), d.channel, recipient, d.content_type)
            item.name, item.call_id = name or recipient, self._new_id("call")
        elif kind == "reasoning":
            item = _Item("reasoning", self._new_id("rs"), d.channel, recipient, d.content_type)
        else:
            item = _Item("message", self._new_id("msg"), d.channel, recipient, d.content_type)
        self._cur = item
        # a browser call is announced when complete: its action comes from the whole arguments
        return [] if item.kind == "web_search_call" else self._announce(item)

    def _append(self, item: _Item, text: str) -> List[Dict[str, Any]]:
        item.parts.append(text)
        if item.kind == "reasoning":
            self.reasoning_deltas += 1
            return [self._item_event("response.reasoning_text.delta", item, content_index=0, delta=text)]
        if item.kind == "message":
            return [self._item_event("response.output_text.delta", item, content_index=0, delta=text, logprobs=[])]
        if item.kind == "function_call":
            return [self._item_event("response.function_call_arguments.delta", item, delta=text)]
        if item.kind == "code_interpreter_call":
            return [self._item_event("response.code_interpreter_call_code.delta", item, delta=text)]
        return []

    def _close(self, cut: bool) -> List[Dict[str, Any]]:
        """The model stopped writing the current item (``cut``: by the token limit)."""
        item, key, self._cur, self._cur_key = self._cur, self._cur_key, None, None
        if item is None:
            return []
        self._closed_keys.add(key)
        item.closed = True
        final = "incomplete" if cut else "completed"
        out: List[Dict[str, Any]] = []
        if item.kind in ("reasoning", "message"):
            done = "response.reasoning_text.done" if item.kind == "reasoning" else "response.output_text.done"
            extra: Dict[str, Any] = {} if item.kind == "reasoning" else {"logprobs": []}
            out.append(self._item_event(done, item, content_index=0, text=item.text, **extra))
            out.append(self._item_event("response.content_part.done", item, content_index=0, part=item.part()))
            item.status = final
            return out + self._item_done(item)
        if item.kind == "function_call":
            if not item.parts and not cut:
                out += self._append(item, "{}")
            out.append(self._item_event("response.function_call_arguments.done", item, arguments=item.text))
            item.status = final
            return out + self._item_done(item)
        if item.kind == "code_interpreter_call":
            out.append(self._item_event("response.code_interpreter_call_code.done", item, code=item.text))
            if cut:
                item.status = "incomplete"
                return out + self._item_done(item)
            item.status = "interpreting"
            return out + [self._item_event("response.code_interpreter_call.interpreting", item)]
        item.action = browser_action(item.recipient, item.text)
        out = self._announce(item, searching=not cut)
        if cut:
            item.status = "incomplete"
            return out + self._item_done(item)
        item.status = "searching"
        return out

    # -- API -------------------------------------------------------------------------------------

    def start(self) -> List[Dict[str, Any]]:
        """``response.created`` and ``response.in_progress``."""
        return [self._event("response.created", response=self.response()),
                self._event("response.in_progress", response=self.response())]

    def update(self, d: ParsedDelta) -> List[Dict[str, Any]]:
        """Events for one parsed step."""
        if self._done:
            return []
        key = (self._gen, d.index)
        out: List[Dict[str, Any]] = []
        if self._cur is not None and key != self._cur_key:
            out += self._close(self._cutting)
        text = d.text or ""
        if self._cur is None:
            if not text and ((d.channel is None and d.recipient is None) or key in self._closed_keys):
                return out  # nothing known about this message yet, an empty stray one, or a repeated end
            out += self._open(d)
            self._cur_key = key
        if text and self._cur is not None:
            out += self._append(self._cur, text)
        if d.done:
            out += self._close(self._cutting)
        return out

    def feed(self, deltas: Union[ParsedDelta, Iterable[ParsedDelta]]) -> List[Dict[str, Any]]:
        """Events for one or more parsed steps (e.g. what ``ParserTracker.process`` returns)."""
        return [event for d in ([deltas] if isinstance(deltas, ParsedDelta) else deltas)
                for event in self.update(d)]

    def end_generation(self, deltas: Iterable[ParsedDelta] = (), *, length: bool = False) -> List[Dict[str, Any]]:
        """End one generation: feed its last steps (``ParserTracker.process_eos``) and close
        what is still open. ``length``: the token limit cut it, so the item being written is
        closed with status ``incomplete`` (and :meth:`finish` defaults to ``incomplete``).
        The next :meth:`feed` starts a new generation (message indexes restart at 0)."""
        self._cutting = length
        try:
            out = self.feed(deltas) + self._close(length)
        finally:
            self._cutting = False
        self._cut = self._cut or length
        self._gen += 1
        return out

    def next_generation(self) -> List[Dict[str, Any]]:
        """Start a new generation without a cut (:meth:`end_generation` with no steps)."""
        return self.end_generation()

    def pending_calls(self) -> List[BuiltinCall]:
        """Built-in calls the model finished writing that await :meth:`tool_result`."""
        return [BuiltinCall(i.id, "python" if i.kind == "code_interpreter_call" else "browser", i.recipient,
                            i.call_channel, i.text)
                for i in self._items
                if i.kind in ("code_interpreter_call", "web_search_call") and i.closed and not i.finished]

    def tool_result(self, item_id: str, output: str, *, status: str = "completed", logs: Optional[str] = None,
                    action: Optional[Mapping[str, Any]] = None) -> List[Dict[str, Any]]:
        """Complete a built-in call after the endpoint ran the tool.

        ``output``: the text the model gets back (the tool's Harmony message, author
        ``python`` / ``browser.search``..., on the call's channel, to ``assistant``; part of
        :meth:`output_messages`). ``status``: ``completed`` or ``failed``. Python: the item's
        ``outputs`` become ``[{"type": "logs", "logs": logs or output}]``. Browser: ``action``
        replaces the action read from the arguments (e.g. with the URL a link id led to).
        Raises ``ValueError`` for an id that is not a pending built-in call.
        """
        item = next((i for i in self._items if i.id == item_id), None)
        if item is None or item.kind not in ("code_interpreter_call", "web_search_call") \
                or not item.closed or item.finished:
            raise ValueError(f"{item_id!r} is not a built-in tool call awaiting its result")
        if status not in ("completed", "failed"):
            raise ValueError(f"status must be 'completed' or 'failed'; got {status!r}")
        item.result = _builtin_result(item.recipient, output, item.call_channel)
        item.status = status
        out: List[Dict[str, Any]] = []
        if item.kind == "code_interpreter_call":
            item.outputs = [{"type": "logs", "logs": output if logs is None else logs}]
            if status == "completed":
                out.append(self._item_event("response.code_interpreter_call.completed", item))
        else:
            if action is not None:
                item.action = dict(action)
            if status == "completed":
                out.append(self._item_event("response.web_search_call.completed", item))
        return out + self._item_done(item)

    def _wrap_up(self, cut: bool) -> List[Dict[str, Any]]:
        out = self._close(cut)
        for item in self._items:
            if not item.finished:
                item.status = "incomplete"
                out += self._item_done(item)
        return out

    def finish(self, *, status: Optional[str] = None, incomplete_reason: Optional[str] = None,
               input_tokens: int = 0, cached_tokens: int = 0, output_tokens: int = 0,
               reasoning_tokens: Optional[int] = None) -> List[Dict[str, Any]]:
        """Close everything and send ``response.completed`` (or ``response.incomplete``).

        ``status``: ``completed`` or ``incomplete``; default ``incomplete`` when a generation
        was cut (:meth:`end_generation` with ``length``), else ``completed``.
        ``incomplete_reason`` defaults to ``max_output_tokens``. Items still open are closed
        with status ``incomplete`` (as are built-in calls that never got their result).
        ``reasoning_tokens`` defaults to the number of reasoning deltas (one per token when fed
        by a ``ParserTracker``). A second call returns ``[]``.
        """
        if self._done:
            return []
        status = status or ("incomplete" if self._cut else "completed")
        if status not in ("completed", "incomplete"):
            raise ValueError(f"status must be 'completed' or 'incomplete'; got {status!r} (use fail())")
        out = self._wrap_up(status == "incomplete")
        reasoning = self.reasoning_deltas if reasoning_tokens is None else int(reasoning_tokens)
        self._usage = {
            "input_tokens": int(input_tokens),
            "input_tokens_details": {"cached_tokens": int(cached_tokens), "cache_write_tokens": 0},
            "output_tokens": int(output_tokens),
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": int(input_tokens) + int(output_tokens),
        }
        self.status = status
        if status == "incomplete":
            self._incomplete = {"reason": incomplete_reason or "max_output_tokens"}
        else:
            self._completed_at = int(time.time())
        self._done = True
        return out + [self._event(f"response.{status}", response=self.response())]

    def fail(self, message: str, *, code: str = "server_error") -> List[Dict[str, Any]]:
        """Close everything (items ``incomplete``) and send ``response.failed`` with ``error``
        ``{"code", "message"}``. ``code`` is one of the client's ``ResponseError`` codes
        (``server_error``, ``invalid_prompt``, ``rate_limit_exceeded``...)."""
        if self._done:
            return []
        out = self._wrap_up(True)
        self.status = "failed"
        self._error = {"code": code, "message": message}
        self._done = True
        return out + [self._event("response.failed", response=self.response())]

    def response(self) -> Dict[str, Any]:
        """The ``Response`` object as it stands (complete after :meth:`finish` / :meth:`fail`)."""
        req = self.request
        text_field = req.get("text")
        text: Mapping[str, Any] = text_field if isinstance(text_field, Mapping) else {}
        out: Dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "completed_at": self._completed_at,
            "error": copy.deepcopy(self._error),
            "incomplete_details": copy.deepcopy(self._incomplete),
            "model": self.model,
            "output": [item.to_dict() for item in self._items],
            "parallel_tool_calls": bool(req.get("parallel_tool_calls", True)),
            "reasoning": self._echo_reasoning(),
            "store": bool(req.get("store", True)),
            "text": {**copy.deepcopy(dict(text)), "format": copy.deepcopy(text.get("format") or {"type": "text"})},
            "tool_choice": self._echo_tool_choice(),
            "tools": [self._echo_tool(t) for t in (req.get("tools") or [])],
            "usage": copy.deepcopy(self._usage),
        }
        for key in _ECHOED:
            out[key] = copy.deepcopy(req.get(key))
        if out["metadata"] is None:
            out["metadata"] = {}
        return out

    def output_messages(self) -> List[Message]:
        """The output as Harmony messages, in order, for the next generation (after a built-in
        tool ran) and for the chain's history: reasoning -> ``analysis``; a message ->
        ``final`` (``commentary`` for a preamble); a completed function call -> a
        ``commentary`` call to ``functions.{name}`` (``<|constrain|>json``), as the same item
        sent back as input renders; a built-in call with its result -> the call as written and
        the tool's message. Cut calls and built-in calls that never ran are left out."""
        return [m for item in self._items for m in item.history()]

    @property
    def call_names(self) -> Dict[str, str]:
        """``call_id`` -> function name of the completed function calls."""
        return {i.call_id: i.name for i in self._items if i.kind == "function_call" and i.status == "completed"}

    def chain_state(self, base: ChainState) -> ChainState:
        """The state to store for this response: ``base`` (``ResponsesInput.state``) + output."""
        return base.extended(self.output_messages(), self.call_names)
