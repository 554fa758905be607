"""OpenAI chat-completions requests -> Harmony conversations.

Pure Python (no :mod:`llama_cpp`): the engine, the CLI and the HTTP server share it.
:func:`messages_to_conversation` turns OpenAI ``messages`` (+ ``tools``, ``tool_choice``,
``reasoning_effort``, ``response_format``) into a Harmony :class:`~llama_harmony.Conversation`;
:func:`render_prompt` renders it to prompt ids with the render config its chain-of-thought
policy needs. The other direction (parsed model output -> ``chat.completion`` objects) is
:mod:`llama_harmony.openai_output`.

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
  message; built-in ``python``/``browser`` calls and results on ``analysis`` count as
  reasoning, function calls do not) and keeps the reasoning of the turn in progress, so a
  tool-call chain gets its reasoning back after every tool result; rendered with
  ``auto_drop_analysis=False`` (:func:`drop_completed_reasoning`).
  ``"reference"`` keeps every message and renders with ``auto_drop_analysis=True``
  (openai-harmony's own rule: drop the analysis before the first ``final`` only when the
  last assistant message is on ``final``). ``"keep"`` keeps and renders all reasoning.
  :func:`render_config` gives the matching render config.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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
    ToolNamespaceConfig,
)

__all__ = [
    "OpenAIFormatError",
    "COT_POLICIES",
    "messages_to_conversation",
    "render_config",
    "render_prompt",
    "tool_schemas",
    "response_format_schema",
]

COT_POLICIES = ("spec", "reference", "keep")

REQUIRED_TOOL_TEXT = "You must call at least one of the available functions before you answer."
NAMED_TOOL_TEXT = "You must call the function `{name}` before you answer."
JSON_OBJECT_COMMENT = "Respond with a single JSON object."


def _js(value: Any) -> str:
    """A value as it reads in JSON (``true``, ``null``, ``"text"``), cut to 60 characters, for
    error messages: requests are JSON, so is what their errors quote."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    """The JSON type of a value (``number``, ``string``, ``object``...), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _check_array(value: Any, name: str) -> Sequence[Any]:
    """``value`` if it is a JSON array, else an :class:`OpenAIFormatError` naming ``name``."""
    if not isinstance(value, (list, tuple)):
        raise OpenAIFormatError(f"{name} must be an array, not {_kind(value)} {_js(value)}", param=name)
    return value


class OpenAIFormatError(ValueError):
    """The OpenAI request cannot be turned into Harmony (bad message, unknown tool_call_id...).

    ``param`` names the offending field (``messages[3].tool_call_id``) when known.
    """

    def __init__(self, message: str, *, param: Optional[str] = None):
        """``message``: what is wrong; ``param``: the field (``messages[3].content``), if known."""
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
                raise OpenAIFormatError(f"{where}.content[{i}] must be an object, not {_kind(part)} {_js(part)}",
                                        param=f"{where}.content")
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
                    f"{where}.content[{i}] has unsupported type {_js(kind)} (gpt-oss takes text only)",
                    param=f"{where}.content")
        return "".join(parts)
    raise OpenAIFormatError(f"{where}.content must be a string or an array of text parts, not "
                            f"{_kind(content)} {_js(content)}", param=f"{where}.content")


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
    raise OpenAIFormatError(f"reasoning_effort must be low, medium or high; got {_js(value)}",
                            param="reasoning_effort")


def _empty_object_schema(params: Any) -> bool:
    return (isinstance(params, Mapping) and params.get("type", "object") == "object"
            and not params.get("properties") and set(params) <= {"type", "properties", "required",
                                                                  "additionalProperties", "$schema"})


def _tool_descriptions(tools: Optional[Sequence[Any]]) -> List[ToolDescription]:
    out: List[ToolDescription] = []
    seen = set()
    for i, tool in enumerate(_check_array(tools, "tools") if tools is not None else []):
        if isinstance(tool, ToolDescription):
            desc = tool
        else:
            if not isinstance(tool, Mapping):
                raise OpenAIFormatError(f"tools[{i}] must be an object, not {_kind(tool)} {_js(tool)}",
                                        param=f"tools[{i}]")
            kind = tool.get("type", "function")
            if kind != "function":
                raise OpenAIFormatError(f"tools[{i}].type {_js(kind)} is not supported (only 'function')",
                                        param=f"tools[{i}].type")
            fn = tool.get("function", tool)
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise OpenAIFormatError(f"tools[{i}].function.name must be a non-empty string",
                                        param=f"tools[{i}].function.name")
            params = fn.get("parameters")
            if params is not None and not isinstance(params, Mapping):
                raise OpenAIFormatError(f"tools[{i}].function.parameters must be a JSON Schema object, not "
                                        f"{_kind(params)} {_js(params)}", param=f"tools[{i}].function.parameters")
            if params is not None and _empty_object_schema(params):
                params = None
            desc = ToolDescription.new(fn["name"], fn.get("description") or "",
                                       dict(params) if params is not None else None)
        if desc.name in seen:
            raise OpenAIFormatError(f"tool {_js(desc.name)} is defined twice", param="tools")
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
            raise OpenAIFormatError(f"tool_choice names {_js(name)}, which is not in tools", param="tool_choice")
        return chosen, NAMED_TOOL_TEXT.format(name=name)
    raise OpenAIFormatError(f"tool_choice must be 'none', 'auto', 'required' or a function object; "
                            f"got {_js(tool_choice)}", param="tool_choice")


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
    raise OpenAIFormatError(f"response_format.type must be text, json_object or json_schema; got {_js(kind)}",
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
        err = LimitExceeded(f"limit exceeded: messages is {len(messages)}, over the cap of {limits.max_messages}")
        err.limit, err.cap, err.actual = "messages", limits.max_messages, len(messages)
        raise err


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
    builtin_tools: Sequence[str] = (),
) -> Conversation:
    """Turn an OpenAI chat request into a Harmony conversation (see the module docstring for
    every policy). ``builtin_tools``: gpt-oss's built-in tools to declare in the system message
    (``"python"``, ``"browser"``; run by the caller). Raises :class:`OpenAIFormatError` on
    malformed input and :class:`~llama_harmony.LimitExceeded` when ``limits.max_messages`` is
    exceeded."""
    if cot_policy not in COT_POLICIES:
        raise OpenAIFormatError(f"cot_policy must be one of {COT_POLICIES}; got {cot_policy!r}")
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise OpenAIFormatError(f"messages must be an array of message objects, not {_kind(messages)} "
                                f"{_js(messages)}", param="messages")
    if not messages:
        raise OpenAIFormatError("messages must contain at least one message", param="messages")
    _check_limits(messages, limits)

    descs, extra_instruction = _apply_tool_choice(_tool_descriptions(tools), tool_choice)

    namespaces = {"python": ToolNamespaceConfig.python, "browser": ToolNamespaceConfig.browser}
    for name in builtin_tools:
        if name not in namespaces:
            raise OpenAIFormatError(f"unknown built-in tool {name!r} (python, browser)", param="tools")
    out: List[Message] = [system_message(reasoning_effort, model_identity=model_identity,
                                         conversation_start_date=conversation_start_date,
                                         builtin_tools=[namespaces[n]() for n in sorted(set(builtin_tools))])]

    def role_of(i: int, m: Any) -> str:
        if not isinstance(m, Mapping):
            raise OpenAIFormatError(f"messages[{i}] must be an object, not {_kind(m)} {_js(m)}",
                                    param=f"messages[{i}]")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise OpenAIFormatError(f"messages[{i}].role must be system, developer, user, assistant or tool; "
                                    f"got {_js(role)}", param=f"messages[{i}].role")
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
    dev = developer_message(instructions, descs, response_format)
    if dev is not None:
        out.append(dev)

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
        out = drop_completed_reasoning(out)
    return Conversation.from_messages(out)


def system_message(reasoning_effort: Any = None, *, model_identity: Optional[str] = None,
                   conversation_start_date: Optional[str] = None,
                   builtin_tools: Sequence[ToolNamespaceConfig] = ()) -> Message:
    """The Harmony system message: identity, date, reasoning effort and the built-in tool
    namespaces (``ToolNamespaceConfig.python()`` / ``.browser()``) in its ``# Tools`` section."""
    system = SystemContent.new().with_reasoning_effort(_effort(reasoning_effort))
    if model_identity is not None:
        system = system.with_model_identity(model_identity)
    if conversation_start_date is not None:
        system = system.with_conversation_start_date(conversation_start_date)
    for namespace in builtin_tools:
        system = system.with_tools(namespace)
    return Message.from_role_and_content(Role.SYSTEM, system)


def developer_message(instructions: Sequence[str], tools: Sequence[ToolDescription],
                      response_format: Optional[Mapping[str, Any]] = None) -> Optional[Message]:
    """The Harmony developer message: ``# Instructions`` (the texts joined by a blank line),
    the ``functions`` namespace and the ``# Response Formats`` section (chat
    ``response_format`` shape); None when there is nothing to say."""
    contents: List[Any] = []
    if instructions or tools:
        dev = DeveloperContent.new()
        if instructions:
            dev = dev.with_instructions("\n\n".join(instructions))
        if tools:
            dev = dev.with_function_tools(list(tools))
        contents.append(dev)
    rf_text = _response_format_text(response_format)
    if rf_text:
        contents.append(TextContent(text=("\n\n" if contents else "") + rf_text))
    return Message.from_role_and_contents(Role.DEVELOPER, contents) if contents else None


def _is_function_message(msg: Message) -> bool:
    name = msg.recipient if msg.author.role == Role.ASSISTANT else msg.author.name
    return name is not None and name.startswith("functions.")


def drop_completed_reasoning(messages: Sequence[Message]) -> List[Message]:
    """The ``spec`` chain-of-thought rule: drop the ``analysis`` messages before the last user
    message (the reasoning of completed turns, with the built-in tool calls and results the
    model made on ``analysis`` while thinking: ``python``, ``browser.*``), keep the rest.
    Function calls and their results stay, whatever their channel."""
    last_user = max((k for k, m in enumerate(messages) if m.author.role == Role.USER), default=-1)
    return [m for k, m in enumerate(messages)
            if not (k < last_user and m.channel == "analysis" and m.author.role in (Role.ASSISTANT, Role.TOOL)
                    and not _is_function_message(m))]


def function_result_message(name: str, text: str) -> Message:
    """A function tool's result: ``functions.{name} to=assistant`` on ``commentary``."""
    return (Message(author=Author(role=Role.TOOL, name=f"functions.{name}"), content=[TextContent(text=text)])
            .with_channel("commentary").with_recipient("assistant"))


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
    _check_array(calls, f"{where}.tool_calls")
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
                f"{where} answers tool_call_id {_js(call_id)}, which no earlier assistant tool call has "
                f"(known ids: {known})", param=f"{where}.tool_call_id")
    else:
        name = m.get("name")
        if not isinstance(name, str) or not name:
            raise OpenAIFormatError(f"{where} needs a tool_call_id", param=f"{where}.tool_call_id")
        if name.startswith("functions."):
            name = name[len("functions."):]
    return function_result_message(name, _text_of(m.get("content"), where) or "")


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
