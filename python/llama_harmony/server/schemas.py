"""Pydantic models of the request bodies (they also make ``/openapi.json`` and ``/docs``).

Types are strict (``"5"`` is not a number, ``1`` is not a boolean); unknown fields are
accepted and ignored, as OpenAI's own clients send some. Shapes inside messages (content
parts, tool calls, tool results) are checked again by :mod:`llama_harmony.openai_request`,
whose errors name the field the same way.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..sampling import MAX_TOP_LOGPROBS

__all__ = ["ChatMessage", "ChatCompletionRequest", "EFFORTS", "ResponseRequest"]

EFFORTS = ("low", "medium", "high")
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class FunctionCall(_Model):
    """The function of a tool call in an assistant message."""
    name: str = Field(min_length=1)
    arguments: Optional[Union[str, Dict[str, Any]]] = None


class ToolCall(_Model):
    """A tool call in an assistant message."""
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Model):
    """One message of a chat request (OpenAI's shape; ``reasoning_content``/``reasoning`` on
    assistant messages carry earlier reasoning back)."""

    role: Role
    content: Optional[Union[str, List[Dict[str, Any]]]] = None
    name: Optional[str] = None
    tool_calls: Optional[List[ToolCall]] = None
    tool_call_id: Optional[str] = None
    reasoning_content: Optional[str] = None
    reasoning: Optional[Union[str, Dict[str, Any]]] = None
    refusal: Optional[str] = None


class FunctionDef(_Model):
    """A function tool's definition (``parameters``: a JSON Schema)."""
    name: str = Field(min_length=1)
    description: Optional[str] = None
    parameters: Optional[Dict[str, Any]] = None
    strict: Optional[bool] = None


#: Built-in tool types accepted in a chat request's ``tools`` (the Responses API's names).
BUILTIN_TOOL_TYPES = {"code_interpreter": "python", "web_search_preview": "browser", "web_search": "browser"}


class Tool(_Model):
    """A function tool, or a built-in one (``code_interpreter``: python; ``web_search_preview``:
    the browser) that the server runs itself when started with the tool enabled."""

    type: Literal["function", "code_interpreter", "web_search_preview", "web_search"] = "function"
    function: Optional[FunctionDef] = None

    @model_validator(mode="after")
    def _function_needed(self) -> "Tool":
        if self.type == "function" and self.function is None:
            raise ValueError("a function tool needs 'function' ({\"name\": ..., \"parameters\": ...})")
        return self


class StreamOptions(_Model):
    """``stream_options`` (``include_usage``: a last chunk with the usage)."""
    include_usage: Optional[bool] = None


def _check_effort(v: Optional[str]) -> Optional[str]:
    if v is None:
        return v
    low = v.strip().lower()
    if low == "minimal":
        low = "low"
    if low not in EFFORTS:
        raise ValueError(f"must be one of {', '.join(EFFORTS)}")
    return low


class ReasoningOptions(_Model):
    """``reasoning`` (``effort``: low, medium or high)."""
    effort: Optional[str] = None

    _effort = field_validator("effort")(classmethod(lambda cls, v: _check_effort(v)))


class ChatCompletionRequest(_Model):
    """``POST /v1/chat/completions``."""

    model: Optional[str] = None
    messages: List[ChatMessage] = Field(min_length=1)
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = Field(default=None, ge=1, le=1, description="only 1 is supported")
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    top_k: Optional[int] = Field(default=None, ge=0)
    min_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: Optional[float] = Field(default=None, ge=0.0, le=10.0)
    presence_penalty: Optional[float] = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2.0, le=2.0)
    seed: Optional[int] = None
    stop: Optional[Union[str, List[str]]] = None
    tools: Optional[List[Tool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], Dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[Dict[str, Any]] = None
    reasoning_effort: Optional[str] = None
    reasoning: Optional[ReasoningOptions] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    logit_bias: Optional[Dict[str, float]] = None
    user: Optional[str] = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop strings")
        return v

    _effort = field_validator("reasoning_effort")(classmethod(lambda cls, v: _check_effort(v)))

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
        for key, value in (v or {}).items():
            if not key.isdigit() or int(key) > 201087:
                raise ValueError(f"keys must be token ids (0..201087), got {key!r}")
            if not -100.0 <= value <= 100.0:
                raise ValueError(f"values must be between -100 and 100, got {value!r}")
        return v

    def effort(self) -> Optional[str]:
        """``reasoning_effort``, or ``reasoning.effort`` (validated the same way)."""
        if self.reasoning_effort is not None:
            return self.reasoning_effort
        if self.reasoning is not None:
            return self.reasoning.effort
        return None

    def messages_as_dicts(self) -> List[Dict[str, Any]]:
        """The messages as the client sent them (unknown keys kept)."""
        return [m.model_dump(exclude_unset=True) for m in self.messages]


class ResponseReasoning(_Model):
    """``reasoning`` of a Responses request (``effort``; ``summary`` is accepted and ignored)."""
    effort: Optional[str] = None
    summary: Optional[str] = None

    _effort = field_validator("effort")(classmethod(lambda cls, v: _check_effort(v)))


class ResponseRequest(_Model):
    """``POST /v1/responses`` (the Responses API). Item shapes inside ``input`` and ``tools``
    are checked by :mod:`llama_harmony.openai_responses`, whose errors name the field."""

    model: Optional[str] = None
    input: Union[str, List[Dict[str, Any]]]
    instructions: Optional[str] = None
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], Dict[str, Any]]] = None
    reasoning: Optional[ResponseReasoning] = None
    text: Optional[Dict[str, Any]] = None
    max_output_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    store: Optional[bool] = True
    stream: Optional[bool] = False
    previous_response_id: Optional[str] = None
    metadata: Optional[Dict[str, str]] = None
    parallel_tool_calls: Optional[bool] = None
    user: Optional[str] = None
    truncation: Optional[Literal["auto", "disabled"]] = None
    include: Optional[List[str]] = None
