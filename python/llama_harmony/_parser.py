"""Streaming parser of gpt-oss output: the openai_harmony-compatible ``StreamableParser`` and
the native event API for engines.

``StreamableParser(encoding, role, strict=True)`` behaves like openai_harmony 0.0.8's (same
messages, same accessor values after every token, same errors at the same token).
``strict=False`` selects the *lenient* mode instead of the reference's non-strict mode: it
never raises on model output, loses no text, and reports every repair (``repaired``,
``Repair`` events). ``mode="non_strict"`` gives the reference's ``strict=False`` exactly.

Engines use the event API: ``feed(ids) -> [Event]`` and ``finish()``; events are small native
classes (``MessageStart``, ``ContentDelta``, ``MessageDone``, ``ToolCallStart``,
``ToolCallDelta``, ``ToolCallDone``, ``Repair``, ``Done``, ``Incomplete``), each with a
``type`` tag, fields as attributes and ``__match_args__`` for ``match`` statements.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Dict, List, Optional, Sequence, Union

from . import _core
from . import Author, Message, Role, TextContent

__all__ = [
    "StreamableParser",
    "StreamState",
    "ParserSnapshot",
    "parse_messages_from_completion_tokens",
    "MessageStart",
    "ContentDelta",
    "MessageDone",
    "ToolCallStart",
    "ToolCallDelta",
    "ToolCallDone",
    "Repair",
    "Done",
    "Incomplete",
    "Event",
    "MODES",
]

MODES = ("strict", "non_strict", "lenient", "raw")


class StreamState(Enum):
    """The parser's state (as in openai_harmony)."""

    EXPECT_START = "ExpectStart"
    HEADER = "Header"
    CONTENT = "Content"


from ._core import (  # noqa: E402  (the native event classes)
    ContentDelta,
    Done,
    Incomplete,
    MessageDone,
    MessageStart,
    Repair,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
)
from ._core import NativeParser as _NativeParser  # noqa: E402

Event = Union[MessageStart, ContentDelta, MessageDone, ToolCallStart, ToolCallDelta, ToolCallDone, Repair, Done, Incomplete]


def _role_str(role: Any) -> Optional[str]:
    if role is None:
        return None
    return Role(role.value if isinstance(role, Enum) else role).value


def _message(t: Sequence[Any]) -> Message:
    role, name, channel, recipient, content_type, text = t[:6]
    return Message(
        author=Author(role=Role(role), name=name),
        content=[TextContent(text=text)],
        channel=channel,
        recipient=recipient,
        content_type=content_type,
    )


def _limits_of(encoding: Any, limits: Any) -> Any:
    if limits is not None:
        return limits
    lim = getattr(encoding, "limits", None)
    return lim if isinstance(lim, _core.Limits) else None


class ParserSnapshot:
    """An opaque copy of a parser's state (``StreamableParser.snapshot``)."""

    __slots__ = ("_native", "_msgs", "_msg_base", "_repaired")

    def __init__(self, native: Any, msgs: List[Message], msg_base: int, repaired: List[bool]) -> None:
        """(Built by :meth:`StreamableParser.snapshot`.)"""
        self._native = native
        self._msgs = msgs
        self._msg_base = msg_base
        self._repaired = repaired


class StreamableParser(_NativeParser):
    """Incremental parser over completion tokens.

    ``encoding``: a ``HarmonyEncoding`` (its ``limits`` apply unless ``limits=`` is given).
    ``role``: the role whose header the prompt opened (``Role.ASSISTANT`` after
    ``render_conversation_for_completion``), or None to expect ``<|start|>``.
    ``strict``: True = the reference's behaviour; False = lenient (never raises on model
    output). ``mode`` overrides ``strict`` (``strict``, ``non_strict``, ``lenient``, ``raw``).
    ``token_history``: how many recent ids ``tokens`` keeps (default 1,048,576; 0 = none).

    The class subclasses the native parser: ``process`` (returns the parser),
    ``process_eos``, ``current_content``, ``current_channel``, ``current_recipient``,
    ``current_content_type``, ``current_index``, ``last_content_delta``, ``tokens``,
    ``state_data``, ``mode``, ``first_message_index`` and the event API ``feed(ids)`` /
    ``finish(length=False)`` run in Rust with no Python frame in between.
    """

    __slots__ = ("_msgs", "_msg_base", "_repaired")
    _msgs: List[Message]  # finished messages as Message objects (built once)
    _msg_base: int  # stream index of self._msgs[0]
    _repaired: List[bool]

    def __new__(
        cls,
        encoding: Any,
        role: Optional[Role],
        *,
        strict: bool = True,
        mode: Optional[str] = None,
        limits: Any = None,
        token_history: Optional[int] = None,
    ) -> "StreamableParser":
        if mode is None:
            mode = "strict" if strict else "lenient"
        if mode not in MODES:
            raise ValueError(f"unknown parser mode {mode!r} (one of {', '.join(MODES)})")
        self = super().__new__(cls, _role_str(role), mode, _limits_of(encoding, limits), token_history)
        self._msgs = []
        self._msg_base = 0
        self._repaired = []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """(The arguments were taken by ``__new__``; a subclass may call
        ``super().__init__(encoding, role, ...)`` as with the reference's class.)"""

    # -- the reference's API (the rest is native) ------------------------------------------------

    @property
    def current_role(self) -> Optional[Role]:
        """The role of the message being parsed, or None between messages."""
        r = self.current_role_name
        return None if r is None else Role(r)

    def _sync(self) -> None:
        n = self.n_messages
        if n == self._msg_base + len(self._msgs):
            return
        first = self.first_message_index
        if first > self._msg_base:  # evicted by the parser's memory cap
            drop = min(first - self._msg_base, len(self._msgs))
            del self._msgs[:drop]
            del self._repaired[:drop]
            self._msg_base = first if not self._msgs else self._msg_base + drop
        for t in self.messages_since(self._msg_base + len(self._msgs)):
            self._msgs.append(_message(t))
            self._repaired.append(bool(t[6]))

    @property
    def messages(self) -> List[Message]:
        """Finished messages (the same objects on every access; a new list)."""
        self._sync()
        return list(self._msgs)

    @property
    def state(self) -> StreamState:
        """Where the parser is: expecting ``<|start|>``, in a header, or in content."""
        return StreamState(self.state_name)

    # -- extensions ----------------------------------------------------------------------------

    @property
    def repaired(self) -> List[bool]:
        """For each of ``messages``: whether the lenient parser repaired it."""
        self._sync()
        return list(self._repaired)

    def reset(self) -> "StreamableParser":
        """Back to the initial state (same role, mode and limits)."""
        super().reset()
        self._msgs, self._msg_base, self._repaired = [], 0, []
        return self

    def snapshot(self) -> ParserSnapshot:
        """A copy of the parser's state, for :meth:`restore` (e.g. speculative decoding)."""
        return ParserSnapshot(self.copy_state(), list(self._msgs), self._msg_base, list(self._repaired))

    def restore(self, snapshot: ParserSnapshot) -> "StreamableParser":
        """Return to a state taken by :meth:`snapshot` (which stays reusable)."""
        self.restore_state(snapshot._native)
        self._msgs, self._msg_base, self._repaired = list(snapshot._msgs), snapshot._msg_base, list(snapshot._repaired)
        return self

    def __repr__(self) -> str:
        return f"StreamableParser(mode={self.mode!r}, state={self.state_name!r}, messages={self.n_messages})"


def parse_messages_from_completion_tokens(
    encoding: Any,
    tokens: Sequence[int],
    role: Optional[Role] = None,
    *,
    strict: bool = True,
    mode: Optional[str] = None,
    limits: Any = None,
) -> List[Message]:
    """Parse a whole completion into messages (the GIL is released for long inputs).
    ``strict=False``: lenient mode (never raises on model output)."""
    if mode is None:
        mode = "strict" if strict else "lenient"
    parse = _core.parse_completion
    return [_message(t) for t in parse(tokens, _role_str(role), mode, _limits_of(encoding, limits))]
