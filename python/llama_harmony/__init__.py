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
from enum import Enum
from typing import AbstractSet, Any, Collection, Dict, Iterator, List, Literal, Optional, Sequence, Union

from . import _core
from ._core import HarmonyError, LimitExceeded, Limits

__version__ = _core.__version__


# ---------------------------------------------------------------------------------------------
# A small record decorator (like dataclasses, without importing it: `import llama_harmony`
# stays cheap): keyword/positional __init__ with defaults, __eq__, __repr__, __match_args__.
# ---------------------------------------------------------------------------------------------

_MISSING = object()


class _Factory:
    """A default built anew for every instance (like ``dataclasses.field(default_factory=...)``)."""

    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make


def _record(cls: Any) -> Any:
    names = tuple(cls.__dict__.get("__annotations__", {}))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    for n, d in defaults.items():
        if isinstance(d, _Factory):
            delattr(cls, n)
    qual = cls.__name__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{qual}() takes at most {len(names)} positional arguments ({len(args)} given)")
        for n, v in zip(names, args):
            if n in kwargs:
                raise TypeError(f"{qual}() got multiple values for argument {n!r}")
            kwargs[n] = v
        for n in names:
            if n in kwargs:
                object.__setattr__(self, n, kwargs.pop(n))
            else:
                d = defaults.get(n, _MISSING)
                if d is _MISSING:
                    raise TypeError(f"{qual}() missing required argument: {n!r}")
                object.__setattr__(self, n, d.make() if isinstance(d, _Factory) else d)
        if kwargs:
            raise TypeError(f"{qual}() got an unexpected keyword argument {next(iter(kwargs))!r}")
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    def __repr__(self: Any) -> str:
        return f"{qual}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    cls.__init__ = __init__
    cls.__eq__ = __eq__
    cls.__hash__ = None
    cls.__repr__ = __repr__
    cls.__match_args__ = names
    cls._fields = names
    return cls


# ---------------------------------------------------------------------------------------------
# Message model (same names, fields and builders as openai_harmony; plain Python objects)
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
        raise ValueError(f"Unknown role: {value!r}")


class ReasoningEffort(str, Enum):
    """Reasoning effort announced in the system message (``Reasoning: low|medium|high``)."""

    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


def _value(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


@_record
class Author:
    """A role and an optional name (for tool messages: the tool, e.g. ``functions.get_weather``)."""

    role: Role
    name: Optional[str] = None

    def __post_init__(self) -> None:
        self.role = Role(_value(self.role))

    @classmethod
    def new(cls, role: Role, name: str) -> "Author":
        return cls(role=role, name=name)


class Content:
    """Base class of message contents."""

    def to_dict(self) -> Dict[str, Any]:
        raise NotImplementedError


@_record
class TextContent(Content):
    """Plain text."""

    text: str

    def to_dict(self) -> Dict[str, Any]:
        return {"type": "text", "text": self.text}


@_record
class ToolDescription:
    """A tool: its name, description and JSON Schema for its arguments (or None)."""

    name: str
    description: str
    parameters: Optional[dict] = None

    @classmethod
    def new(cls, name: str, description: str, parameters: Optional[dict] = None) -> "ToolDescription":
        return cls(name=name, description=description, parameters=parameters)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "description": self.description}
        if self.parameters is not None:
            out["parameters"] = self.parameters
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "ToolDescription":
        return cls(name=raw["name"], description=raw.get("description", ""), parameters=raw.get("parameters"))


@_record
class ChannelConfig:
    """The channels the system message declares valid."""

    valid_channels: List[str]
    channel_required: bool

    @classmethod
    def require_channels(cls, channels: List[str]) -> "ChannelConfig":
        return cls(valid_channels=list(channels), channel_required=True)

    def to_dict(self) -> Dict[str, Any]:
        return {"valid_channels": list(self.valid_channels), "channel_required": self.channel_required}


@_record
class ToolNamespaceConfig:
    """A namespace of tools (``functions``, ``browser``, ``python``...)."""

    name: str
    description: Optional[str] = None
    tools: List[ToolDescription] = _Factory(list)

    @staticmethod
    def browser() -> "ToolNamespaceConfig":
        """The built-in browsing tool namespace, exactly as the reference renders it."""
        return ToolNamespaceConfig.from_dict(_core.builtin_tool_namespace("browser"))

    @staticmethod
    def python() -> "ToolNamespaceConfig":
        """The built-in python tool namespace, exactly as the reference renders it."""
        return ToolNamespaceConfig.from_dict(_core.builtin_tool_namespace("python"))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out["tools"] = [t.to_dict() for t in self.tools]
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "ToolNamespaceConfig":
        return cls(
            name=raw["name"],
            description=raw.get("description"),
            tools=[t if isinstance(t, ToolDescription) else ToolDescription.from_dict(t) for t in raw.get("tools", [])],
        )


def _tools_from_raw(raw: Optional[Dict[str, Any]]) -> Optional[Dict[str, ToolNamespaceConfig]]:
    if raw is None:
        return None
    return {k: v if isinstance(v, ToolNamespaceConfig) else ToolNamespaceConfig.from_dict(v) for k, v in raw.items()}


_DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."


@_record
class SystemContent(Content):
    """The system message: identity, knowledge cutoff, date, reasoning effort, channels, built-in tools."""

    model_identity: Optional[str] = _DEFAULT_IDENTITY
    reasoning_effort: Optional[ReasoningEffort] = ReasoningEffort.MEDIUM
    conversation_start_date: Optional[str] = None
    knowledge_cutoff: Optional[str] = "2024-06"
    channel_config: Optional[ChannelConfig] = _Factory(
        lambda: ChannelConfig.require_channels(["analysis", "commentary", "final"])
    )
    tools: Optional[Dict[str, ToolNamespaceConfig]] = None

    def __post_init__(self) -> None:
        if self.reasoning_effort is not None and not isinstance(self.reasoning_effort, ReasoningEffort):
            self.reasoning_effort = ReasoningEffort(self.reasoning_effort)
        if isinstance(self.channel_config, dict):
            self.channel_config = ChannelConfig(**self.channel_config)
        self.tools = _tools_from_raw(self.tools)

    @classmethod
    def new(cls) -> "SystemContent":
        return cls()

    def with_model_identity(self, model_identity: str) -> "SystemContent":
        self.model_identity = model_identity
        return self

    def with_reasoning_effort(self, reasoning_effort: ReasoningEffort) -> "SystemContent":
        self.reasoning_effort = ReasoningEffort(_value(reasoning_effort))
        return self

    def with_conversation_start_date(self, conversation_start_date: str) -> "SystemContent":
        self.conversation_start_date = conversation_start_date
        return self

    def with_knowledge_cutoff(self, knowledge_cutoff: str) -> "SystemContent":
        self.knowledge_cutoff = knowledge_cutoff
        return self

    def with_channel_config(self, channel_config: ChannelConfig) -> "SystemContent":
        self.channel_config = channel_config
        return self

    def with_required_channels(self, channels: List[str]) -> "SystemContent":
        self.channel_config = ChannelConfig.require_channels(channels)
        return self

    def with_tools(self, ns_config: ToolNamespaceConfig) -> "SystemContent":
        if self.tools is None:
            self.tools = {}
        self.tools[ns_config.name] = ns_config
        return self

    def with_browser_tool(self) -> "SystemContent":
        return self.with_tools(ToolNamespaceConfig.browser())

    def with_python_tool(self) -> "SystemContent":
        return self.with_tools(ToolNamespaceConfig.python())

    def to_dict(self) -> Dict[str, Any]:
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
        raw = {k: v for k, v in raw.items() if k != "type"}
        return cls(**raw)


@_record
class DeveloperContent(Content):
    """The developer message: instructions and tool namespaces (function tools)."""

    instructions: Optional[str] = None
    tools: Optional[Dict[str, ToolNamespaceConfig]] = None

    def __post_init__(self) -> None:
        self.tools = _tools_from_raw(self.tools)

    @classmethod
    def new(cls) -> "DeveloperContent":
        return cls()

    def with_instructions(self, instructions: str) -> "DeveloperContent":
        self.instructions = instructions
        return self

    def with_tools(self, ns_config: ToolNamespaceConfig) -> "DeveloperContent":
        if self.tools is None:
            self.tools = {}
        self.tools[ns_config.name] = ns_config
        return self

    def with_function_tools(self, tools: Sequence[ToolDescription]) -> "DeveloperContent":
        return self.with_tools(ToolNamespaceConfig(name="functions", description=None, tools=list(tools)))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.instructions is not None:
            out["instructions"] = self.instructions
        if self.tools is not None:
            out["tools"] = {k: v.to_dict() for k, v in self.tools.items()}
        out["type"] = "developer_content"
        return out

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "DeveloperContent":
        raw = {k: v for k, v in raw.items() if k != "type"}
        return cls(**raw)


def _content_from_dict(raw: Any) -> Content:
    if isinstance(raw, Content):
        return raw
    kind = raw.get("type")
    if kind == "text":
        return TextContent(text=raw["text"])
    if kind == "system_content":
        return SystemContent.from_dict(raw)
    if kind == "developer_content":
        return DeveloperContent.from_dict(raw)
    raise ValueError(f"Unknown content variant: {raw!r}")


@_record
class Message:
    """One Harmony message: author, contents, and the optional channel, recipient and content type."""

    author: Author
    content: List[Content] = _Factory(list)
    channel: Optional[str] = None
    recipient: Optional[str] = None
    content_type: Optional[str] = None

    @classmethod
    def from_author_and_content(cls, author: Author, content: Union[str, Content]) -> "Message":
        if isinstance(content, str):
            content = TextContent(text=content)
        return cls(author=author, content=[content])

    @classmethod
    def from_role_and_content(cls, role: Role, content: Union[str, Content]) -> "Message":
        return cls.from_author_and_content(Author(role=role), content)

    @classmethod
    def from_role_and_contents(cls, role: Role, contents: Sequence[Content]) -> "Message":
        return cls(author=Author(role=role), content=list(contents))

    def adding_content(self, content: Union[str, Content]) -> "Message":
        if isinstance(content, str):
            content = TextContent(text=content)
        self.content.append(content)
        return self

    def with_channel(self, channel: str) -> "Message":
        self.channel = channel
        return self

    def with_recipient(self, recipient: str) -> "Message":
        self.recipient = recipient
        return self

    def with_content_type(self, content_type: str) -> "Message":
        self.content_type = content_type
        return self

    def text(self) -> str:
        """All text contents joined (a convenience the reference lacks)."""
        return "".join(c.text for c in self.content if isinstance(c, TextContent))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "role": self.author.role.value,
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
        import json

        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Message":
        raw = data["content"]
        if isinstance(raw, str):
            raw = [{"type": "text", "text": raw}]
        return cls(
            author=Author(role=Role(data["role"]), name=data.get("name")),
            content=[_content_from_dict(c) for c in raw],
            channel=data.get("channel"),
            recipient=data.get("recipient"),
            content_type=data.get("content_type"),
        )

    @classmethod
    def from_json(cls, payload: str) -> "Message":
        import json

        return cls.from_dict(json.loads(payload))


@_record
class Conversation:
    """An ordered list of messages."""

    messages: List[Message] = _Factory(list)

    @classmethod
    def from_messages(cls, messages: Sequence[Message]) -> "Conversation":
        return cls(messages=list(messages))

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def to_dict(self) -> Dict[str, Any]:
        return {"messages": [m.to_dict() for m in self.messages]}

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Conversation":
        return cls(messages=[Message.from_dict(m) for m in data["messages"]])

    @classmethod
    def from_json(cls, payload: str) -> "Conversation":
        import json

        return cls.from_dict(json.loads(payload))


@_record
class RenderConversationConfig:
    """``auto_drop_analysis``: the reference's rule for dropping earlier reasoning (default True)."""

    auto_drop_analysis: bool = True


@_record
class RenderOptions:
    """``conversation_has_function_tools``: adds the 'functions' line to a rendered system message."""

    conversation_has_function_tools: bool = False


class HarmonyEncodingName(str, Enum):
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


def _extra_disallowed_regex(tokens: AbstractSet[str]) -> Any:
    import re

    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


class HarmonyEncoding:
    """The o200k_harmony encoding: tokenizer, renderer and parser entry points.

    Every render method takes an optional ``limits=`` (a :class:`Limits`) overriding
    :attr:`limits` for that call.
    """

    def __init__(self, name: str = "HarmonyGptOss", limits: Optional[Limits] = None, *, render_cache: bool = True):
        self._name = name
        self._inner = _core.NativeEncoding(limits, render_cache)
        self._names = frozenset(self._inner.special_tokens())

    @property
    def name(self) -> str:
        return self._name

    @property
    def limits(self) -> Limits:
        """The caps this encoding applies (see :class:`Limits`)."""
        return self._inner.limits

    @limits.setter
    def limits(self, value: Limits) -> None:
        self._inner.limits = value

    @property
    def n_vocab(self) -> int:
        """Number of token ids (201,089)."""
        return self._inner.n_vocab

    @functools.cached_property
    def special_tokens_set(self) -> set:
        return set(self._names)

    # -- rendering ------------------------------------------------------------------------------

    @staticmethod
    def _drop(config: Optional[RenderConversationConfig]) -> bool:
        return True if config is None else bool(config.auto_drop_analysis)

    def render_conversation_for_completion(
        self,
        conversation: Conversation,
        next_turn_role: Role,
        config: Optional[RenderConversationConfig] = None,
        *,
        limits: Optional[Limits] = None,
    ) -> List[int]:
        """Render a conversation and open the next turn (``<|start|>{role}``) for sampling."""
        return self._inner.render_conversation_for_completion(conversation, next_turn_role, self._drop(config), limits)

    def render_conversation(
        self, conversation: Conversation, config: Optional[RenderConversationConfig] = None, *, limits: Optional[Limits] = None
    ) -> List[int]:
        """Render a conversation without opening a new turn."""
        return self._inner.render_conversation(conversation, self._drop(config), limits)

    def render_conversation_for_training(
        self, conversation: Conversation, config: Optional[RenderConversationConfig] = None, *, limits: Optional[Limits] = None
    ) -> List[int]:
        """Render for training: a last assistant ``final`` message ends with ``<|return|>``."""
        return self._inner.render_conversation_for_training(conversation, self._drop(config), limits)

    def render(self, message: Message, render_options: Optional[RenderOptions] = None, *, limits: Optional[Limits] = None) -> List[int]:
        """Render one message."""
        fn = bool(render_options.conversation_has_function_tools) if render_options is not None else False
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
        return {n: self._inner.special_token_id(n) for n in self._names}

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
