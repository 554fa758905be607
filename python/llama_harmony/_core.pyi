"""Type stubs for the native module ``llama_harmony._core`` (Rust, PyO3)."""
from typing import Any, Dict, Iterable, List, Optional, Sequence, TypeVar

__version__: str

class HarmonyError(RuntimeError): ...

class LimitExceeded(HarmonyError):
    limit: str
    cap: int
    actual: int

class Limits:
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
    ) -> None: ...
    @staticmethod
    def unlimited() -> "Limits": ...
    @property
    def max_prompt_tokens(self) -> int: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def max_conversation_bytes(self) -> int: ...
    @property
    def max_messages(self) -> int: ...
    @property
    def max_schema_depth(self) -> int: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_parsed_message_bytes(self) -> int: ...
    @property
    def max_parsed_total_bytes(self) -> int: ...
    def replace(self, **kwargs: int) -> "Limits": ...
    def as_dict(self) -> Dict[str, int]: ...

class NativeEncoding:
    def __init__(self, limits: Optional[Limits] = None, render_cache: bool = True) -> None: ...
    limits: Limits
    @property
    def n_vocab(self) -> int: ...
    def special_tokens(self) -> List[str]: ...
    def is_special_token(self, id: int) -> bool: ...
    def special_token_id(self, name: str) -> Optional[int]: ...
    def encode_ordinary(self, text: str) -> List[int]: ...
    def encode(self, text: str, allowed: Optional[List[int]] = None, disallowed: Optional[List[int]] = None, disallow_rest: bool = False) -> List[int]: ...
    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...
    def decode_utf8(self, ids: Iterable[int]) -> str: ...
    def token_bytes_table(self, n: int) -> List[bytes]: ...
    def render_conversation(self, conversation: Any, auto_drop_analysis: Optional[bool] = None, limits: Optional[Limits] = None) -> List[int]: ...
    def render_conversation_for_completion(self, conversation: Any, next_turn_role: Any, auto_drop_analysis: Optional[bool] = None, limits: Optional[Limits] = None) -> List[int]: ...
    def render_conversation_for_training(self, conversation: Any, auto_drop_analysis: Optional[bool] = None, limits: Optional[Limits] = None) -> List[int]: ...
    def render(self, message: Any, conversation_has_function_tools: bool = False, limits: Optional[Limits] = None) -> List[int]: ...
    def o200k_base_tiktoken_bytes(self) -> bytes: ...

def builtin_tool_namespace(name: str) -> Dict[str, Any]: ...
def _debug_panic() -> None: ...

# -- streaming parser (src/python/parser.rs) ---------------------------------------------------

class MessageStart:
    index: int
    role: str
    name: Optional[str]
    channel: Optional[str]
    recipient: Optional[str]
    content_type: Optional[str]
    raw_header: Optional[str]
    type: str

class ContentDelta:
    index: int
    text: str
    type: str

class MessageDone:
    index: int
    stop_token: Optional[int]
    type: str

class ToolCallStart:
    index: int
    call_index: int
    name: str
    recipient: str
    type: str

class ToolCallDelta:
    index: int
    call_index: int
    arguments: str
    type: str

class ToolCallDone:
    index: int
    call_index: int
    type: str

class Repair:
    index: Optional[int]
    kind: str
    detail: str
    type: str

class Done:
    reason: str
    type: str

class Incomplete:
    reason: str
    type: str

_P = TypeVar("_P", bound="NativeParser")

class NativeParser:
    """The native streaming parser (``StreamableParser`` subclasses it)."""
    def __init__(self, role: Optional[str] = None, mode: str = "strict", limits: Optional[Limits] = None, token_history: Optional[int] = None) -> None: ...
    def process(self: _P, token: int) -> _P: ...
    def process_eos(self: _P) -> _P: ...
    def feed(self, ids: Iterable[int]) -> List[Any]: ...
    def finish(self, length: bool = False) -> List[Any]: ...
    def reset(self) -> Any: ...
    def copy_state(self) -> "NativeParser": ...
    def restore_state(self, snapshot: "NativeParser") -> None: ...
    def set_token_history(self, n: int) -> None: ...
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
    def messages_since(self, start: int = 0) -> List[Any]: ...

def parse_completion(ids: Sequence[int], role: Optional[str] = None, mode: str = "strict", limits: Optional[Limits] = None) -> List[Any]: ...
