"""Type stubs for the native module ``llama_harmony._core`` (Rust, PyO3)."""
from typing import Any, Dict, Iterable, List, Optional, Sequence, Type, TypeVar

__version__: str

class HarmonyError(RuntimeError):
    """Error raised by llama-harmony (a RuntimeError, like openai_harmony's)."""

class LimitExceeded(HarmonyError):
    """A size cap of :class:`Limits` was exceeded, before the large work: ``limit`` names what was
    measured, ``cap`` and ``actual`` the sizes (``llama_harmony.limits_text.describe`` words it)."""

    limit: str
    cap: int
    actual: int

class Limits:
    """Size caps checked before any large allocation (keyword-only; unset fields keep their defaults)."""

    def __init__(
        self,
        *,
        max_prompt_tokens: Optional[int] = ...,
        max_message_bytes: Optional[int] = ...,
        max_conversation_bytes: Optional[int] = ...,
        max_messages: Optional[int] = ...,
        max_schema_depth: Optional[int] = ...,
        max_header_bytes: Optional[int] = ...,
        max_parsed_message_bytes: Optional[int] = ...,
        max_parsed_total_bytes: Optional[int] = ...,
    ) -> None:
        """Caps as given; the others keep their defaults (README, Limits)."""
    @staticmethod
    def unlimited() -> "Limits":
        """Limits that never trigger."""
    @property
    def max_prompt_tokens(self) -> int:
        """Tokens of one rendered prompt (default 131,072)."""
    @property
    def max_message_bytes(self) -> int:
        """UTF-8 bytes of one message, every text field (default 8 MiB)."""
    @property
    def max_conversation_bytes(self) -> int:
        """Bytes of a whole conversation (default 32 MiB)."""
    @property
    def max_messages(self) -> int:
        """Messages in a conversation (default 100,000)."""
    @property
    def max_schema_depth(self) -> int:
        """Nesting depth of a tool's JSON Schema (default 64)."""
    @property
    def max_header_bytes(self) -> int:
        """Bytes of one message header while parsing (default 4,096)."""
    @property
    def max_parsed_message_bytes(self) -> int:
        """Content bytes one parsed message keeps (default 8 MiB)."""
    @property
    def max_parsed_total_bytes(self) -> int:
        """Bytes a parser keeps in finished messages (default 64 MiB)."""
    def replace(self, **kwargs: int) -> "Limits":
        """A copy with the given fields changed."""
    def as_dict(self) -> Dict[str, int]:
        """Field name -> cap."""

class NativeEncoding:
    """The native o200k_harmony encoding behind ``HarmonyEncoding`` (tokenizer and renderer)."""
    def __init__(self, limits: Optional[Limits] = None, render_cache: bool = True) -> None:
        """An encoding with these limits (default ones if None), with or without the render cache."""
    limits: Limits
    @property
    def n_vocab(self) -> int:
        """Number of token ids (201,089)."""
    def special_tokens(self) -> List[str]:
        """The names of the 1,091 special tokens."""
    def is_special_token(self, id: int) -> bool:
        """Whether ``id`` is a special token."""
    def special_token_id(self, name: str) -> Optional[int]:
        """The id of a special token name, or None."""
    def encode_ordinary(self, text: str) -> List[int]:
        """Ids of ``text`` with special-token strings as ordinary text."""
    def encode(self, text: str, allowed: Optional[List[int]] = None, disallowed: Optional[List[int]] = None, disallow_rest: bool = False) -> List[int]:
        """Ids of ``text``; special-token strings per the allowed / disallowed id sets (None = all)."""
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of ``ids`` (OverflowError outside 0..2^32, HarmonyError outside the vocabulary)."""
    def decode_utf8(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; HarmonyError on invalid UTF-8."""
    def token_bytes_table(self, n: int) -> List[bytes]:
        """Bytes of ids 0..n-1 (special tokens as their names)."""
    def render_conversation(self, conversation: Any, auto_drop_analysis: Optional[bool] = None, limits: Optional[Limits] = None) -> List[int]:
        """Ids of a conversation (or a list of messages)."""
    def render_conversation_for_completion(self, conversation: Any, next_turn_role: Any, auto_drop_analysis: Optional[bool] = None, limits: Optional[Limits] = None) -> List[int]:
        """Ids of a conversation followed by ``<|start|>{next_turn_role}``."""
    def render_conversation_for_training(self, conversation: Any, auto_drop_analysis: Optional[bool] = None, limits: Optional[Limits] = None) -> List[int]:
        """Ids of a conversation whose last final assistant message ends with ``<|return|>``."""
    def render(self, message: Any, conversation_has_function_tools: bool = False, limits: Optional[Limits] = None) -> List[int]:
        """Ids of one message."""
    def o200k_base_tiktoken_bytes(self) -> bytes:
        """The exact o200k_base.tiktoken file, rebuilt from the embedded ranks."""

def builtin_tool_namespace(name: str) -> Dict[str, Any]:
    """The ``browser`` or ``python`` tool namespace as a dict, as the reference renders it."""
def _debug_panic() -> None: ...

# -- streaming parser (src/python/parser.rs) ---------------------------------------------------

class MessageStart:
    """Parser event: a message header is complete (its role, name, channel, recipient, content type)."""
    index: int
    role: str
    name: Optional[str]
    channel: Optional[str]
    recipient: Optional[str]
    content_type: Optional[str]
    raw_header: Optional[str]
    type: str

class ContentDelta:
    """Parser event: text appended to message ``index``."""
    index: int
    text: str
    type: str

class MessageDone:
    """Parser event: message ``index`` ended (``stop_token``: the id that ended it, if any)."""
    index: int
    stop_token: Optional[int]
    type: str

class ToolCallStart:
    """Parser event: message ``index`` is a tool call to ``recipient`` (``name`` without the namespace)."""
    index: int
    call_index: int
    name: str
    recipient: str
    type: str

class ToolCallDelta:
    """Parser event: argument text appended to tool call ``call_index``."""
    index: int
    call_index: int
    arguments: str
    type: str

class ToolCallDone:
    """Parser event: tool call ``call_index`` is complete."""
    index: int
    call_index: int
    type: str

class Repair:
    """Parser event (lenient mode): malformed output was repaired; ``kind`` says how, ``detail`` what."""
    index: Optional[int]
    kind: str
    detail: str
    type: str

class Done:
    """Parser event: the stream ended cleanly (``reason``: return, call, end, end_of_text)."""
    reason: str
    type: str

class Incomplete:
    """Parser event: the stream ended early (``reason``: truncated or length)."""
    reason: str
    type: str

_P = TypeVar("_P", bound="NativeParser")

class NativeParser:
    """The native streaming parser (``StreamableParser`` subclasses it)."""
    def __new__(cls: Type[_P], role: Optional[str] = None, mode: str = "strict", limits: Optional[Limits] = None, token_history: Optional[int] = None) -> _P:
        """A parser whose header for ``role`` is open (None: expect ``<|start|>``), in ``mode``
        (the native class takes its arguments in ``__new__``)."""
    def process(self: _P, token: int) -> _P:
        """Feeds one id (the reference's API); returns the parser."""
    def process_eos(self: _P) -> _P:
        """Signals the end of the stream; returns the parser."""
    def feed(self, ids: Iterable[int]) -> List[Any]:
        """Feeds ids; returns their events."""
    def finish(self, length: bool = False) -> List[Any]:
        """Ends the stream (``length``: the caller cut it); returns the last events."""
    def reset(self) -> Any:
        """Back to the initial state (same role, mode and limits)."""
    def copy_state(self) -> "NativeParser":
        """A copy of the whole parser state."""
    def restore_state(self, snapshot: "NativeParser") -> None:
        """Restores a state taken by :meth:`copy_state`."""
    def set_token_history(self, n: int) -> None:
        """Keeps the last ``n`` ids in ``tokens``."""
    mode: str
    current_content: str
    current_role_name: Optional[str]
    current_channel: Optional[str]
    current_recipient: Optional[str]
    current_content_type: Optional[str]
    current_index: Optional[int]
    last_content_delta: Optional[str]
    state_name: str
    state_data: Dict[str, Any]
    tokens: List[int]
    tokens_dropped: int
    header_tokens: List[int]
    first_message_index: int
    n_messages: int
    def messages_since(self, start: int = 0) -> List[Any]:
        """Finished messages from stream index ``start`` on, as tuples (role, name, channel, recipient,
        content_type, text, repaired)."""

def parse_completion(ids: Sequence[int], role: Optional[str] = None, mode: str = "strict", limits: Optional[Limits] = None) -> List[Any]:
    """Parses a whole completion; returns message tuples (role, name, channel, recipient,
    content_type, text)."""
