"""The OpenAI chat-completions mapping, in one import (kept for existing code).

The mapping lives in two modules, one per direction:

* :mod:`llama_harmony.openai_request`: OpenAI requests -> Harmony conversations (the input
  policies: system/developer messages, tools, ``tool_choice``, ``reasoning_effort``,
  ``response_format``, assistant history, tool results, chain of thought);
* :mod:`llama_harmony.openai_output`: parsed model output -> ``chat.completion`` objects and
  ``chat.completion.chunk`` streams (the output policies).
"""

from .openai_output import (  # noqa: F401
    ChunkStream,
    CompletionBuilder,
    ParsedDelta,
    ParserTracker,
    chat_completion,
    message_kind,
    new_completion_id,
    new_tool_call_id,
)
from .openai_request import (  # noqa: F401
    COT_POLICIES,
    OpenAIFormatError,
    messages_to_conversation,
    render_config,
    render_prompt,
    response_format_schema,
    tool_schemas,
)

from . import openai_output as _out, openai_request as _req  # noqa: E402

__all__ = _req.__all__ + _out.__all__
