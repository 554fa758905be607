"""llama-harmony: exact, offline and fast Harmony for gpt-oss.

A drop-in superset of ``openai_harmony`` 0.0.8's public API (change the import line, keep
your code), backed by a Rust core that embeds the o200k_harmony vocabulary (no download, no
environment variable), releases the GIL while it works and enforces size limits.

    >>> from llama_harmony import load_harmony_encoding, HarmonyEncodingName, Conversation, Message, Role
    >>> enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    >>> convo = Conversation.from_messages([Message.from_role_and_content(Role.USER, "Hi")])
    >>> enc.decode(enc.render_conversation_for_completion(convo, Role.ASSISTANT))
    '<|start|>user<|message|>Hi<|end|><|start|>assistant'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import TYPE_CHECKING, AbstractSet, Any, Collection, Dict, Iterator, List, Literal, Optional, Sequence, Union, cast

from . import _core
from ._core import HarmonyError, LimitExceeded, Limits

__version__ = _core.__version__


# ---------------------------------------------------------------------------------------------
# Input checks: every wrong value gets a TypeError/ValueError naming the field and what was
# expected, when the object is built (not an AttributeError deep inside a render).
# ---------------------------------------------------------------------------------------------


_JSON_KINDS = ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (list, "array"),
               (tuple, "array"), (dict, "object"))


def _shown(value: Any) -> str:
    """A short description of a wrong value for an error message: its kind and its text, cut.
    Plain JSON values read as in JSON (``boolean true``, ``null``, ``number 5``: the same
    message serves Python callers and the JSON the CLI and the server take); anything else
    as its Python type and repr."""
    if value is None:
        return "null"
    kind = next((k for t, k in _JSON_KINDS if isinstance(value, t)), None)
    text = None
    if kind is not None:
        import json

        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            pass
    if text is None:
        kind, text = type(value).__name__, repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def _check_str(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field_name} must be a str, not {_shown(value)}")
    return value


def _check_opt_str(value: Any, field_name: str) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{field_name} must be a str or None, not {_shown(value)}")
    return value


def _check_bool(value: Any, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{field_name} must be a bool, not {_shown(value)}")
    return value


def _is_foreign(value: Any, class_name: str) -> bool:
    """An object of another library's class of the same name (openai_harmony's pydantic
    models): accepted as-is, the Rust core reads it by attribute."""
    cls = type(value)
    return cls.__name__ == class_name and not cls.__module__.startswith("llama_harmony")


# ---------------------------------------------------------------------------------------------
# Message model (same names, fields and builders as openai_harmony; standard dataclasses)
# ---------------------------------------------------------------------------------------------


class Role(str, Enum):
    """The author of a message."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    DEVELOPER = "developer"
    TOOL = "tool"

    @classmethod
    def _missing_(cls, value: object) -> "Role":
        raise ValueError(f"Unknown role: {value!r} (one of {', '.join(repr(r.value) for r in cls)})")


def _role(value: Any, field_name: str) -> Role:
    if isinstance(value, Role):
        return value
    if isinstance(value, Enum):
        value = value.value
    if not isinstance(value, str):
        raise TypeError(f"{field_name} must be a Role or a role name, not {_shown(value)}")
    try:
        return Role(value)
    except ValueError as e:
        raise ValueError(f"{field_name}: {e}") from None


class ReasoningEffort(str, Enum):
    """Reasoning effort announced in the system message (``Reasoning: low|medium|high``)."""

    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


def _effort(value: Any, field_name: str) -> ReasoningEffort:
    if isinstance(value, ReasoningEffort):
        return value
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        for e in ReasoningEffort:
            if value.lower() == e.value.lower():
                return e
        raise ValueError(f"{field_name} must be low, medium or high, not {value!r}")
    raise TypeError(f"{field_name} must be a ReasoningEffort, not {_shown(value)}")


def _value(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


@dataclass
class Author:
    """A role and an optional name (for tool messages: the tool, e.g. ``functions.get_weather``)."""

    role: Role
    name: Optional[str] = None

    def __post_init__(self) -> None:
        self.role = _role(self.role, "Author.role")
        _check_opt_str(self.name, "Author.name")

    @classmethod
    def new(cls, role: Role, name: str) -> "Author":
        """An author with a name (e.g. ``Author.new(Role.TOOL, "functions.get_weather")``)."""
        return cls(role=role, name=name)


class Content:
    """Base class of message contents (:class:`TextContent`, :class:`SystemContent`,
    :class:`DeveloperContent`)."""

    def to_dict(self) -> Dict[str, Any]:
        """The openai_harmony JSON shape of this content (with its ``type`` tag)."""
        raise NotImplementedError


@dataclass
class TextContent(Content):
    """Plain text."""

    text: str

    def __post_init__(self) -> None:
        _check_str(self.text, "TextContent.text")

    def to_dict(self) -> Dict[str, Any]:
        """``{"type": "text", "text": ...}``."""
        return {"type": "text", "text": self.text}


@dataclass
class ToolDescription:
    """A tool: its name, description and JSON Schema for its arguments (or None)."""

    name: str
    description: str
    parameters: Optional[dict] = None

    def __post_init__(self) -> None:
        _check_str(self.name, "ToolDescription.name")
        _check_str(self.description, "ToolDescription.description")
        # (any JSON value is taken, as by the reference: shapes that are not a schema render as `any`)
        if not isinstance(self.parameters, (dict, list, tuple, str, int, float, type(None))):
            raise TypeError(f"ToolDescription.parameters must be a JSON Schema dict or None, "
                            f"not {_shown(self.parameters)}")

    @classmethod
    def new(cls, name: str, description: str, parameters: Optional[dict] = None) -> "ToolDescription":
        """A tool description (``parameters``: a JSON Schema dict, or None for no arguments)."""
        return cls(name=name, description=description, parameters=parameters)

    def to_dict(self) -> Dict[str, Any]:
        """``{"name", "description", "parameters"?}``."""
        out: Dict[str, Any] = {"name": self.name, "description": self.description}
        if self.parameters is not None:
            out["parameters"] = self.parameters
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "ToolDescription":
        """Inverse of :meth:`to_dict` (``description`` defaults to "")."""
        _check_dict(raw, "ToolDescription")
        return cls(name=_required(raw, "name", "ToolDescription"), description=raw.get("description", ""),
                   parameters=raw.get("parameters"))


def _check_dict(raw: Any, what: str) -> Dict[str, Any]:
    if not isinstance(raw, dict):
        raise TypeError(f"{what} must be a dict (a JSON object), not {_shown(raw)}")
    return raw


def _required(raw: Dict[str, Any], key: str, what: str) -> Any:
    try:
        return raw[key]
    except KeyError:
        raise ValueError(f"{what}: missing required field {key!r}") from None


@dataclass
class ChannelConfig:
    """The channels the system message declares valid."""

    valid_channels: List[str]
    channel_required: bool

    def __post_init__(self) -> None:
        if isinstance(self.valid_channels, str) or not isinstance(self.valid_channels, (list, tuple)):
            raise TypeError(f"ChannelConfig.valid_channels must be a list of str, not {_shown(self.valid_channels)}")
        self.valid_channels = [_check_str(c, f"ChannelConfig.valid_channels[{i}]")
                               for i, c in enumerate(self.valid_channels)]
        _check_bool(self.channel_required, "ChannelConfig.channel_required")

    @classmethod
    def require_channels(cls, channels: List[str]) -> "ChannelConfig":
        """These channels, required (what ``SystemContent`` declares by default)."""
        return cls(valid_channels=list(channels), channel_required=True)

    def to_dict(self) -> Dict[str, Any]:
        """``{"valid_channels", "channel_required"}``."""
        return {"valid_channels": list(self.valid_channels), "channel_required": self.channel_required}


def _tool(value: Any, field_name: str) -> Any:
    if isinstance(value, ToolDescription) or _is_foreign(value, "ToolDescription"):
        return value
    if isinstance(value, dict):
        return ToolDescription.from_dict(value)
    raise TypeError(f"{field_name} must be a ToolDescription or a dict, not {_shown(value)}")


@dataclass
class ToolNamespaceConfig:
    """A namespace of tools (``functions``, ``browser``, ``python``...)."""

    name: str
    description: Optional[str] = None
    tools: List[ToolDescription] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_str(self.name, "ToolNamespaceConfig.name")
        _check_opt_str(self.description, "ToolNamespaceConfig.description")
        if isinstance(self.tools, (str, bytes, dict)) or not isinstance(self.tools, (list, tuple)):
            raise TypeError(f"ToolNamespaceConfig.tools must be a list of ToolDescription, not {_shown(self.tools)}")
        self.tools = [_tool(t, f"ToolNamespaceConfig.tools[{i}]") for i, t in enumerate(self.tools)]

    @staticmethod
    def browser() -> "ToolNamespaceConfig":
        """The built-in browsing tool namespace, exactly as the reference renders it."""
        return ToolNamespaceConfig.from_dict(_core.builtin_tool_namespace("browser"))

    @staticmethod
    def python() -> "ToolNamespaceConfig":
        """The built-in python tool namespace, exactly as the reference renders it."""
        return ToolNamespaceConfig.from_dict(_core.builtin_tool_namespace("python"))

    def to_dict(self) -> Dict[str, Any]:
        """``{"name", "description"?, "tools": [...]}``."""
        out: Dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out["tools"] = [t.to_dict() for t in self.tools]
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "ToolNamespaceConfig":
        """Inverse of :meth:`to_dict`."""
        _check_dict(raw, "ToolNamespaceConfig")
        return cls(name=_required(raw, "name", "ToolNamespaceConfig"), description=raw.get("description"),
                   tools=raw.get("tools", []))


def _tools_from_raw(raw: Any, field_name: str) -> Optional[Dict[str, ToolNamespaceConfig]]:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TypeError(f"{field_name} must be a dict of namespace name -> ToolNamespaceConfig, not {_shown(raw)}")
    out = {}
    for k, v in raw.items():
        _check_str(k, f"{field_name} key")
        if isinstance(v, ToolNamespaceConfig) or _is_foreign(v, "ToolNamespaceConfig"):
            out[k] = v
        elif isinstance(v, dict):
            out[k] = ToolNamespaceConfig.from_dict(v)
        else:
            raise TypeError(f"{field_name}[{k!r}] must be a ToolNamespaceConfig or a dict, not {_shown(v)}")
    return out


_DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."


def _default_channels() -> "ChannelConfig":
    return ChannelConfig.require_channels(["analysis", "commentary", "final"])


@dataclass
class SystemContent(Content):
    """The system message: identity, knowledge cutoff, date, reasoning effort, channels, built-in tools."""

    model_identity: Optional[str] = _DEFAULT_IDENTITY
    reasoning_effort: Optional[ReasoningEffort] = ReasoningEffort.MEDIUM
    conversation_start_date: Optional[str] = None
    knowledge_cutoff: Optional[str] = "2024-06"
    channel_config: Optional[ChannelConfig] = field(default_factory=_default_channels)
    tools: Optional[Dict[str, ToolNamespaceConfig]] = None

    def __post_init__(self) -> None:
        _check_opt_str(self.model_identity, "SystemContent.model_identity")
        if self.reasoning_effort is not None:
            self.reasoning_effort = _effort(self.reasoning_effort, "SystemContent.reasoning_effort")
        _check_opt_str(self.conversation_start_date, "SystemContent.conversation_start_date")
        _check_opt_str(self.knowledge_cutoff, "SystemContent.knowledge_cutoff")
        cc = self.channel_config
        if isinstance(cc, dict):
            self.channel_config = ChannelConfig(**cc)
        elif cc is not None and not (isinstance(cc, ChannelConfig) or _is_foreign(cc, "ChannelConfig")):
            raise TypeError(f"SystemContent.channel_config must be a ChannelConfig or None, not {_shown(cc)}")
        self.tools = _tools_from_raw(self.tools, "SystemContent.tools")

    @classmethod
    def new(cls) -> "SystemContent":
        """The default system content (the reference's defaults)."""
        return cls()

    def with_model_identity(self, model_identity: str) -> "SystemContent":
        """Sets the identity line (returns self)."""
        self.model_identity = _check_str(model_identity, "model_identity")
        return self

    def with_reasoning_effort(self, reasoning_effort: ReasoningEffort) -> "SystemContent":
        """Sets the reasoning effort (returns self)."""
        self.reasoning_effort = _effort(reasoning_effort, "reasoning_effort")
        return self

    def with_conversation_start_date(self, conversation_start_date: str) -> "SystemContent":
        """Sets the ``Current date:`` line (returns self)."""
        self.conversation_start_date = _check_str(conversation_start_date, "conversation_start_date")
        return self

    def with_knowledge_cutoff(self, knowledge_cutoff: str) -> "SystemContent":
        """Sets the ``Knowledge cutoff:`` line (returns self)."""
        self.knowledge_cutoff = _check_str(knowledge_cutoff, "knowledge_cutoff")
        return self

    def with_channel_config(self, channel_config: ChannelConfig) -> "SystemContent":
        """Sets the declared channels (returns self)."""
        if not (isinstance(channel_config, ChannelConfig) or _is_foreign(channel_config, "ChannelConfig")):
            raise TypeError(f"channel_config must be a ChannelConfig, not {_shown(channel_config)}")
        self.channel_config = channel_config
        return self

    def with_required_channels(self, channels: List[str]) -> "SystemContent":
        """Declares these channels, required (returns self)."""
        self.channel_config = ChannelConfig.require_channels(channels)
        return self

    def with_tools(self, ns_config: ToolNamespaceConfig) -> "SystemContent":
        """Adds a built-in tool namespace (returns self)."""
        self.tools = _add_namespace(self.tools, ns_config)
        return self

    def with_browser_tool(self) -> "SystemContent":
        """Adds the built-in ``browser`` namespace (returns self)."""
        return self.with_tools(ToolNamespaceConfig.browser())

    def with_python_tool(self) -> "SystemContent":
        """Adds the built-in ``python`` namespace (returns self)."""
        return self.with_tools(ToolNamespaceConfig.python())

    def to_dict(self) -> Dict[str, Any]:
        """The openai_harmony JSON shape (``"type": "system_content"``; None fields left out)."""
        out: Dict[str, Any] = {}
        for k in ("model_identity", "reasoning_effort", "conversation_start_date", "knowledge_cutoff"):
            v = getattr(self, k)
            if v is not None:
                out[k] = _value(v)
        if self.channel_config is not None:
            out["channel_config"] = self.channel_config.to_dict()
        if self.tools is not None:
            out["tools"] = {k: v.to_dict() for k, v in self.tools.items()}
        out["type"] = "system_content"
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "SystemContent":
        """Inverse of :meth:`to_dict`."""
        return cls(**_fields_of(cls, raw))


def _add_namespace(tools: Optional[Dict[str, Any]], ns_config: Any) -> Dict[str, Any]:
    if not (isinstance(ns_config, ToolNamespaceConfig) or _is_foreign(ns_config, "ToolNamespaceConfig")):
        raise TypeError(f"ns_config must be a ToolNamespaceConfig, not {_shown(ns_config)}")
    tools = {} if tools is None else tools
    tools[ns_config.name] = ns_config
    return tools


def _fields_of(cls: Any, raw: Any) -> Dict[str, Any]:
    """The keyword arguments of ``cls`` in a ``to_dict`` dict (its ``type`` tag dropped); an
    unknown key is a ValueError naming it."""
    _check_dict(raw, cls.__name__)
    known = {f.name for f in fields(cls)}
    out = {k: v for k, v in raw.items() if k != "type"}
    unknown = sorted(set(out) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return out


@dataclass
class DeveloperContent(Content):
    """The developer message: instructions and tool namespaces (function tools)."""

    instructions: Optional[str] = None
    tools: Optional[Dict[str, ToolNamespaceConfig]] = None

    def __post_init__(self) -> None:
        _check_opt_str(self.instructions, "DeveloperContent.instructions")
        self.tools = _tools_from_raw(self.tools, "DeveloperContent.tools")

    @classmethod
    def new(cls) -> "DeveloperContent":
        """Empty developer content."""
        return cls()

    def with_instructions(self, instructions: str) -> "DeveloperContent":
        """Sets the ``# Instructions`` text (returns self)."""
        self.instructions = _check_str(instructions, "instructions")
        return self

    def with_tools(self, ns_config: ToolNamespaceConfig) -> "DeveloperContent":
        """Adds a tool namespace (returns self)."""
        self.tools = _add_namespace(self.tools, ns_config)
        return self

    def with_function_tools(self, tools: Sequence[ToolDescription]) -> "DeveloperContent":
        """Adds these tools as the ``functions`` namespace (returns self)."""
        if isinstance(tools, (str, bytes, dict)) or not isinstance(tools, (list, tuple)):
            raise TypeError(f"tools must be a list of ToolDescription, not {_shown(tools)}")
        return self.with_tools(ToolNamespaceConfig(name="functions", description=None, tools=list(tools)))

    def to_dict(self) -> Dict[str, Any]:
        """The openai_harmony JSON shape (``"type": "developer_content"``; None fields left out)."""
        out: Dict[str, Any] = {}
        if self.instructions is not None:
            out["instructions"] = self.instructions
        if self.tools is not None:
            out["tools"] = {k: v.to_dict() for k, v in self.tools.items()}
        out["type"] = "developer_content"
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "DeveloperContent":
        """Inverse of :meth:`to_dict`."""
        return cls(**_fields_of(cls, raw))


_CONTENT_CLASSES = ("TextContent", "SystemContent", "DeveloperContent")


def _content_from_dict(raw: Any, where: str = "content") -> Content:
    if isinstance(raw, Content):
        return raw
    _check_dict(raw, where)
    kind = raw.get("type")
    if kind == "text":
        return TextContent(text=_check_str(_required(raw, "text", where), f"{where}.text"))
    if kind == "system_content":
        return SystemContent.from_dict(raw)
    if kind == "developer_content":
        return DeveloperContent.from_dict(raw)
    raise ValueError(f"{where}: unknown content type {kind!r} (expected 'text', 'system_content' or "
                     f"'developer_content')")


def _content_item(value: Any, field_name: str) -> Any:
    if isinstance(value, Content):
        return value
    if isinstance(value, str):
        return TextContent(text=value)
    if isinstance(value, dict):
        return _content_from_dict(value, field_name)
    if any(_is_foreign(value, n) for n in _CONTENT_CLASSES):
        return value
    raise TypeError(f"{field_name} must be a str or a Content (TextContent, SystemContent, DeveloperContent), "
                    f"not {_shown(value)}")


@dataclass
class Message:
    """One Harmony message: author, contents, and the optional channel, recipient and content type."""

    author: Author
    content: List[Content] = field(default_factory=list)
    channel: Optional[str] = None
    recipient: Optional[str] = None
    content_type: Optional[str] = None

    def __post_init__(self) -> None:
        if not (isinstance(self.author, Author) or _is_foreign(self.author, "Author")):
            raise TypeError(f"Message.author must be an Author (e.g. Author(Role.USER)), not {_shown(self.author)}")
        if isinstance(self.content, (str, bytes, dict)) or not isinstance(self.content, (list, tuple)):
            raise TypeError(f"Message.content must be a list of Content, not {_shown(self.content)}")
        self.content = [_content_item(c, f"Message.content[{i}]") for i, c in enumerate(self.content)]
        _check_opt_str(self.channel, "Message.channel")
        _check_opt_str(self.recipient, "Message.recipient")
        _check_opt_str(self.content_type, "Message.content_type")

    @classmethod
    def from_author_and_content(cls, author: Author, content: Union[str, Content]) -> "Message":
        """A message with one content (a str becomes a :class:`TextContent`)."""
        if isinstance(content, (list, tuple)):
            raise TypeError("content must be a str or one Content; use from_role_and_contents for a list")
        return cls(author=author, content=[_content_item(content, "content")])

    @classmethod
    def from_role_and_content(cls, role: Role, content: Union[str, Content]) -> "Message":
        """A message with an unnamed author of ``role`` and one content."""
        return cls.from_author_and_content(Author(role=_role(role, "role")), content)

    @classmethod
    def from_role_and_contents(cls, role: Role, contents: Sequence[Content]) -> "Message":
        """A message with an unnamed author of ``role`` and several contents."""
        if isinstance(contents, (str, bytes, dict)):
            raise TypeError(f"contents must be a list of Content, not {_shown(contents)}")
        return cls(author=Author(role=_role(role, "role")), content=list(contents))

    def adding_content(self, content: Union[str, Content]) -> "Message":
        """Appends a content (returns self)."""
        self.content.append(_content_item(content, "content"))
        return self

    def with_channel(self, channel: str) -> "Message":
        """Sets the channel (``analysis``, ``commentary``, ``final``...; returns self)."""
        self.channel = _check_str(channel, "channel")
        return self

    def with_recipient(self, recipient: str) -> "Message":
        """Sets the recipient (``functions.get_weather``, ``assistant``...; returns self)."""
        self.recipient = _check_str(recipient, "recipient")
        return self

    def with_content_type(self, content_type: str) -> "Message":
        """Sets the content type (``<|constrain|>json``, ``json``, ``code``...; returns self)."""
        self.content_type = _check_str(content_type, "content_type")
        return self

    def text(self) -> str:
        """All text contents joined (a convenience the reference lacks)."""
        return "".join(c.text for c in self.content if isinstance(c, TextContent))

    def to_dict(self) -> Dict[str, Any]:
        """The openai_harmony JSON shape: ``{"role", "name", "content": [...], "channel"?, ...}``."""
        out: Dict[str, Any] = {
            "role": _value(self.author.role),
            "name": self.author.name,
            "content": [c.to_dict() for c in self.content],
        }
        if self.channel is not None:
            out["channel"] = self.channel
        if self.recipient is not None:
            out["recipient"] = self.recipient
        if self.content_type is not None:
            out["content_type"] = self.content_type
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        import json

        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Message":
        """Inverse of :meth:`to_dict` (``content`` may also be a plain string)."""
        return _message_from_dict(data, "message")

    @classmethod
    def from_json(cls, payload: str) -> "Message":
        """Inverse of :meth:`to_json`."""
        import json

        return cls.from_dict(json.loads(payload))


def _message_from_dict(data: Any, where: str) -> Message:
    _check_dict(data, where)
    raw = data.get("content", [])
    if isinstance(raw, str):
        raw = [{"type": "text", "text": raw}]
    if isinstance(raw, (bytes, dict)) or not isinstance(raw, (list, tuple)):
        raise TypeError(f"{where}.content must be a string or a list of content objects, not {_shown(raw)}")
    return Message(
        author=Author(role=_role(_required(data, "role", where), f"{where}.role"),
                      name=_check_opt_str(data.get("name"), f"{where}.name")),
        content=[_content_item(c, f"{where}.content[{i}]") for i, c in enumerate(raw)],
        channel=_check_opt_str(data.get("channel"), f"{where}.channel"),
        recipient=_check_opt_str(data.get("recipient"), f"{where}.recipient"),
        content_type=_check_opt_str(data.get("content_type"), f"{where}.content_type"),
    )


def _message_item(value: Any, i: int) -> Any:
    if isinstance(value, Message) or _is_foreign(value, "Message"):
        return value
    if isinstance(value, dict):
        return _message_from_dict(value, f"messages[{i}]")
    # (the wording of pydantic's error in the reference, so code matching it keeps working)
    raise TypeError(f"messages[{i}]: Input should be a valid dictionary or instance of Message, "
                    f"not {_shown(value)}")


def _message_list(messages: Any) -> List[Any]:
    if isinstance(messages, (str, bytes, dict)) or not hasattr(messages, "__iter__"):
        raise TypeError(f"messages must be a list of Message, not {_shown(messages)}")
    return [_message_item(m, i) for i, m in enumerate(messages)]


@dataclass
class Conversation:
    """An ordered list of messages."""

    messages: List[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.messages = _message_list(self.messages)

    @classmethod
    def from_messages(cls, messages: Sequence[Message]) -> "Conversation":
        """A conversation of these messages (dicts in the :meth:`Message.to_dict` shape are
        converted; anything else is a TypeError naming its index)."""
        return cls(messages=_message_list(messages))

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def to_dict(self) -> Dict[str, Any]:
        """``{"messages": [Message.to_dict(), ...]}``."""
        return {"messages": [m.to_dict() for m in self.messages]}

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        import json

        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Conversation":
        """Inverse of :meth:`to_dict`."""
        _check_dict(data, "conversation")
        raw = _required(data, "messages", "conversation")
        if isinstance(raw, (str, bytes, dict)) or not isinstance(raw, (list, tuple)):
            raise TypeError(f"messages must be a list of message objects, not {_shown(raw)}")
        return cls(messages=[_message_from_dict(m, f"messages[{i}]") for i, m in enumerate(raw)])

    @classmethod
    def from_json(cls, payload: str) -> "Conversation":
        """Inverse of :meth:`to_json`."""
        import json

        return cls.from_dict(json.loads(payload))


@dataclass
class RenderConversationConfig:
    """``auto_drop_analysis``: the reference's rule for dropping earlier reasoning (default True)."""

    auto_drop_analysis: bool = True

    def __post_init__(self) -> None:
        _check_bool(self.auto_drop_analysis, "RenderConversationConfig.auto_drop_analysis")


@dataclass
class RenderOptions:
    """``conversation_has_function_tools``: adds the 'functions' line to a rendered system message."""

    conversation_has_function_tools: bool = False

    def __post_init__(self) -> None:
        _check_bool(self.conversation_has_function_tools, "RenderOptions.conversation_has_function_tools")


class HarmonyEncodingName(str, Enum):
    """The encodings :func:`load_harmony_encoding` knows (one: ``HarmonyGptOss``)."""

    HARMONY_GPT_OSS = "HarmonyGptOss"

    def __str__(self) -> str:
        return str(self.value)


from ._parser import (  # noqa: E402
    ContentDelta,
    Done,
    Event,
    Incomplete,
    MessageDone,
    MessageStart,
    ParserSnapshot,
    Repair,
    StreamableParser,
    StreamState,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    parse_messages_from_completion_tokens,
)

# ---------------------------------------------------------------------------------------------
# The encoding
# ---------------------------------------------------------------------------------------------


def _conversation_arg(conversation: Any) -> Any:
    """The conversation argument of the render methods, checked: a :class:`Conversation` (or
    openai_harmony's) whose messages are messages, or a list of messages."""
    if isinstance(conversation, Conversation) or _is_foreign(conversation, "Conversation"):
        for i, m in enumerate(conversation.messages):
            if not (isinstance(m, Message) or _is_foreign(m, "Message")):
                raise TypeError(f"conversation.messages[{i}] must be a Message, not {_shown(m)}")
        return conversation
    if isinstance(conversation, dict):
        raise TypeError("conversation must be a Conversation, not a dict (build one with "
                        "Conversation.from_dict(...))")
    if isinstance(conversation, (list, tuple)):
        return _message_list(conversation)
    raise TypeError(f"conversation must be a Conversation, not {_shown(conversation)}")


def _extra_disallowed_regex(tokens: AbstractSet[str]) -> Any:
    import re

    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


class HarmonyEncoding:
    """The o200k_harmony encoding: tokenizer, renderer and parser entry points.

    Every render method takes an optional ``limits=`` (a :class:`Limits`) overriding
    :attr:`limits` for that call.
    """

    def __init__(self, name: str = "HarmonyGptOss", limits: Optional[Limits] = None, *, render_cache: bool = True):
        """Use :func:`load_harmony_encoding`; ``limits``: the caps (default :class:`Limits`),
        ``render_cache``: keep the ids of rendered messages for re-renders."""
        self._name = name
        self._inner = _core.NativeEncoding(limits, render_cache)
        self._names = frozenset(self._inner.special_tokens())

    @property
    def name(self) -> str:
        """The encoding's name (``HarmonyGptOss``)."""
        return self._name

    @property
    def limits(self) -> Limits:
        """The caps this encoding applies (see :class:`Limits`)."""
        return self._inner.limits

    @limits.setter
    def limits(self, value: Limits) -> None:
        """Replaces the caps of this encoding."""
        self._inner.limits = value

    @property
    def n_vocab(self) -> int:
        """Number of token ids (201,089)."""
        return self._inner.n_vocab

    @functools.cached_property
    def special_tokens_set(self) -> set:
        """The names of the 1,091 special tokens."""
        return set(self._names)

    # -- rendering ------------------------------------------------------------------------------

    @staticmethod
    def _drop(config: Optional[RenderConversationConfig]) -> bool:
        if config is None:
            return True
        drop = getattr(config, "auto_drop_analysis", None)
        if not isinstance(drop, bool):
            raise TypeError(f"config must be a RenderConversationConfig or None, not {_shown(config)}")
        return drop

    def render_conversation_for_completion(
        self,
        conversation: Conversation,
        next_turn_role: Role,
        config: Optional[RenderConversationConfig] = None,
        *,
        limits: Optional[Limits] = None,
    ) -> List[int]:
        """Render a conversation and open the next turn (``<|start|>{role}``) for sampling."""
        return self._inner.render_conversation_for_completion(
            _conversation_arg(conversation), _role(next_turn_role, "next_turn_role"), self._drop(config), limits)

    def render_conversation(
        self, conversation: Conversation, config: Optional[RenderConversationConfig] = None, *, limits: Optional[Limits] = None
    ) -> List[int]:
        """Render a conversation without opening a new turn."""
        return self._inner.render_conversation(_conversation_arg(conversation), self._drop(config), limits)

    def render_conversation_for_training(
        self, conversation: Conversation, config: Optional[RenderConversationConfig] = None, *, limits: Optional[Limits] = None
    ) -> List[int]:
        """Render for training: a last assistant ``final`` message ends with ``<|return|>``."""
        return self._inner.render_conversation_for_training(_conversation_arg(conversation), self._drop(config), limits)

    def render(self, message: Message, render_options: Optional[RenderOptions] = None, *, limits: Optional[Limits] = None) -> List[int]:
        """Render one message."""
        fn = False if render_options is None else getattr(render_options, "conversation_has_function_tools", None)
        if not isinstance(fn, bool):
            raise TypeError(f"render_options must be a RenderOptions or None, not {_shown(render_options)}")
        if not (isinstance(message, Message) or _is_foreign(message, "Message")):
            raise TypeError(f"message must be a Message, not {_shown(message)}")
        return self._inner.render(message, fn, limits)

    # -- parsing --------------------------------------------------------------------------------

    def parse_messages_from_completion_tokens(
        self,
        tokens: Sequence[int],
        role: Optional[Role] = None,
        *,
        strict: bool = True,
        mode: Optional[str] = None,
        limits: Optional[Limits] = None,
    ) -> List[Message]:
        """Parse sampled tokens into messages.

        ``strict=True`` behaves like the reference (raises HarmonyError on malformed output);
        ``strict=False`` is the lenient mode: never raises on model output, loses nothing.
        ``mode`` overrides ``strict``: ``"strict"``, ``"non_strict"`` (the reference's
        ``strict=False``, exactly), ``"lenient"`` or ``"raw"``."""
        return parse_messages_from_completion_tokens(self, tokens, role, strict=strict, mode=mode, limits=limits)

    # -- tokenizer ------------------------------------------------------------------------------

    def encode(
        self,
        text: str,
        *,
        allowed_special: Union[Literal["all"], AbstractSet[str]] = set(),
        disallowed_special: Union[Literal["all"], Collection[str]] = "all",
    ) -> List[int]:
        """Encode text. Special-token strings raise HarmonyError unless allowed (then they become
        special ids) or removed from ``disallowed_special`` (then they are ordinary text)."""
        # (the common cases, "all" and the empty set, cross as None / [] without a lookup)
        allowed_ids: Optional[List[int]] = None
        if allowed_special != "all":
            allowed_ids = self._ids_of(allowed_special) if allowed_special else []
        disallowed_ids: Optional[List[int]] = None
        disallow_rest = disallowed_special == "all"
        if not disallow_rest:
            disallowed = frozenset(disallowed_special)  # as given (even names also allowed, like tiktoken)
            disallowed_ids = self._ids_of(disallowed)
            extra = disallowed - self._names
            if extra:
                m = _extra_disallowed_regex(extra).search(text)
                if m:
                    raise HarmonyError(f"Encountered text corresponding to disallowed special token {m.group()!r}.")
        try:
            return self._inner.encode(text, allowed_ids, disallowed_ids, disallow_rest)
        except UnicodeEncodeError:
            # Lone surrogates: pair what pairs, replace the rest (the reference does the same).
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._inner.encode(text, allowed_ids, disallowed_ids, disallow_rest)

    @functools.cached_property
    def _special_ids(self) -> Dict[str, int]:
        """Special token name -> id (built on first use)."""
        # (every name in _names came from special_tokens(), so each has an id)
        return {n: cast(int, self._inner.special_token_id(n)) for n in self._names}

    def _ids_of(self, names: Collection[str]) -> List[int]:
        """The ids of the special-token names among ``names`` (other strings are left out)."""
        ids = self._special_ids
        return [ids[n] for n in names if n in ids]

    def encode_ordinary(self, text: str) -> List[int]:
        """Encode text with every special-token string treated as ordinary text."""
        try:
            return self._inner.encode_ordinary(text)
        except UnicodeEncodeError:
            return self._inner.encode_ordinary(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """The raw bytes of ``tokens`` (special tokens as their names)."""
        return self._inner.decode_bytes(tokens)

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        """Decode to text; invalid UTF-8 handled per ``errors`` (default: U+FFFD)."""
        return self._inner.decode_bytes(tokens).decode("utf-8", errors=errors)

    def decode_utf8(self, tokens: Sequence[int]) -> str:
        """Decode to text, raising HarmonyError on invalid UTF-8."""
        return self._inner.decode_utf8(tokens)

    def is_special_token(self, token: int) -> bool:
        """Whether ``token`` is a special token (``<|start|>``, ``<|reserved_200013|>``...)."""
        return self._inner.is_special_token(token)

    def stop_tokens(self) -> List[int]:
        """Tokens that end a message when parsing: ``<|return|>``, ``<|end|>``, ``<|call|>``."""
        return [200002, 200007, 200012]

    def stop_tokens_for_assistant_actions(self) -> List[int]:
        """Tokens that end sampling: ``<|call|>``, ``<|return|>``."""
        return [200012, 200002]

    def token_bytes_table(self, n: int = 201089) -> List[bytes]:
        """Bytes of ids 0..n-1 (special tokens as their names); used to build GGUF vocabularies."""
        return self._inner.token_bytes_table(n)

    def __repr__(self) -> str:
        return f"HarmonyEncoding({self._name!r})"


def load_harmony_encoding(
    name: Union[str, HarmonyEncodingName] = HarmonyEncodingName.HARMONY_GPT_OSS,
    *,
    limits: Optional[Limits] = None,
    render_cache: bool = True,
) -> HarmonyEncoding:
    """Load the o200k_harmony encoding. Offline and cheap: the vocabulary is embedded in the
    wheel and built once per process; each call returns an encoding with its own limits.

    ``render_cache`` keeps the token ids of rendered messages (bounded: 32 MB of text) so a
    chat loop that re-renders its growing conversation tokenizes each message once."""
    name = str(name)
    if name != HarmonyEncodingName.HARMONY_GPT_OSS.value:
        raise HarmonyError(f"unknown encoding {name!r} (known: {HarmonyEncodingName.HARMONY_GPT_OSS.value!r})")
    return HarmonyEncoding(name, limits, render_cache=render_cache)


def o200k_base_tiktoken_bytes() -> bytes:
    """The exact bytes of ``o200k_base.tiktoken``, rebuilt from the embedded table (SHA-256
    ``446a9538…1a2d``): lets the reference or tiktoken run offline from our copy."""
    return _core.NativeEncoding().o200k_base_tiktoken_bytes()


# ---------------------------------------------------------------------------------------------
# The llama.cpp engine's names, loaded on first use: `import llama_harmony` never imports
# llama_cpp (nor the engine module).
# ---------------------------------------------------------------------------------------------

#: Names of :mod:`llama_harmony.engine` that ``llama_harmony`` exports lazily.
ENGINE_NAMES = frozenset({
    "HarmonyEngine",
    "HarmonyChatHandler",
    "register_chat_format",
    "ModelError",
    "ModelNotFoundError",
    "ContextOverflowError",
    "OpenAIFormatError",
    "CHAT_FORMAT_NAME",
    "install_llama_log_filter",
})

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .engine import (  # noqa: F401
        CHAT_FORMAT_NAME,
        ContextOverflowError,
        HarmonyChatHandler,
        HarmonyEngine,
        ModelError,
        ModelNotFoundError,
        OpenAIFormatError,
        install_llama_log_filter,
        register_chat_format,
    )


def __getattr__(name: str) -> Any:
    """Loads the engine's names on first use (PEP 562); a missing llama-cpp-python is an
    ImportError naming the ``[llama]`` extra."""
    if name not in ENGINE_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "OpenAIFormatError":  # pure Python: no llama.cpp needed
        from .openai_request import OpenAIFormatError

        return OpenAIFormatError
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(f"llama_harmony.{name} needs llama-cpp-python, which is not installed: "
                          f"pip install 'llama-harmony[llama]'", name="llama_cpp")
    from . import engine

    value = getattr(engine, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | ENGINE_NAMES)


__all__ = [
    "Role",
    "Author",
    "Content",
    "TextContent",
    "DeveloperContent",
    "ToolDescription",
    "ToolNamespaceConfig",
    "SystemContent",
    "ChannelConfig",
    "ReasoningEffort",
    "Message",
    "Conversation",
    "RenderConversationConfig",
    "RenderOptions",
    "HarmonyEncoding",
    "HarmonyEncodingName",
    "load_harmony_encoding",
    "StreamableParser",
    "StreamState",
    "ParserSnapshot",
    "Event",
    "MessageStart",
    "ContentDelta",
    "MessageDone",
    "ToolCallStart",
    "ToolCallDelta",
    "ToolCallDone",
    "Repair",
    "Done",
    "Incomplete",
    "HarmonyError",
    "LimitExceeded",
    "Limits",
    "o200k_base_tiktoken_bytes",
]
