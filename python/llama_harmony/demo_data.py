"""A recorded, realistic gpt-oss exchange used by ``llama-harmony demo`` (and its tests).

The two completions below are written by hand in Harmony markup, the way gpt-oss emits them
after ``<|start|>assistant``: first an ``analysis`` message and a ``get_weather`` call on the
``commentary`` channel (recipient *after* the channel, ``<|constrain|>json`` content type,
ended by ``<|call|>``); then, after the tool result, an ``analysis`` message and the
``final`` answer ended by ``<|return|>``.

The demo encodes each text with ``enc.encode(text, allowed_special="all")``, forces the ids
through real llama.cpp on the tiny random-weight model with
:class:`llama_harmony.tiny_model.ForcedTokens`, and parses what comes out. The ``EXPECTED_*``
constants are written out separately (not derived from the texts), so tests can check that
the whole pipeline recovers them.
"""

from __future__ import annotations

from typing import Any, Dict, List

__all__ = [
    "MODEL_IDENTITY",
    "SYSTEM_PROMPT",
    "USER_PROMPT",
    "TOOLS",
    "TOOL_CALL_ID",
    "TOOL_RESULT",
    "TURN1_COMPLETION",
    "TURN2_COMPLETION",
    "EXPECTED_TURN1_ANALYSIS",
    "EXPECTED_TOOL_NAME",
    "EXPECTED_TOOL_ARGUMENTS",
    "EXPECTED_TURN2_ANALYSIS",
    "EXPECTED_FINAL",
    "openai_messages_turn1",
    "openai_messages_turn2",
]

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."

#: Instructions (an OpenAI ``system`` message; Harmony puts them in the developer message).
SYSTEM_PROMPT = "You are a concise weather assistant. Use the tools when you need live data."

USER_PROMPT = "What's the weather like in Tokyo right now?"

#: OpenAI-style function tools offered to the model.
TOOLS: List[Dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                },
                "required": ["location"],
            },
        },
    }
]

#: The id the OpenAI-shaped history uses for the recorded call (the engine makes its own).
TOOL_CALL_ID = "call_demo_0"

#: What the (pretend) weather service answered.
TOOL_RESULT = (
    '{"location": "Tokyo, Japan", "temperature": 18, "unit": "celsius", '
    '"condition": "partly cloudy", "humidity": 64, "wind_kph": 11}'
)

#: Turn 1, sampled after ``<|start|>assistant``: reasoning, then a function call.
TURN1_COMPLETION = (
    "<|channel|>analysis<|message|>"
    "The user wants the current weather in Tokyo. I have a get_weather tool that takes a "
    "location and an optional unit. I'll call it with \"Tokyo, Japan\" and use celsius."
    "<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    '{"location":"Tokyo, Japan","unit":"celsius"}'
    "<|call|>"
)

#: Turn 2, sampled after the tool result: reasoning, then the final answer.
TURN2_COMPLETION = (
    "<|channel|>analysis<|message|>"
    "The tool says 18 °C, partly cloudy, 64% humidity and an 11 km/h wind. "
    "Answer briefly with those numbers."
    "<|end|>"
    "<|start|>assistant<|channel|>final<|message|>"
    "It's currently 18 °C and partly cloudy in Tokyo, with 64% humidity and a light breeze "
    "(11 km/h)."
    "<|return|>"
)

# What the parser and the engine must recover (written out by hand).
EXPECTED_TURN1_ANALYSIS = (
    "The user wants the current weather in Tokyo. I have a get_weather tool that takes a "
    'location and an optional unit. I\'ll call it with "Tokyo, Japan" and use celsius.'
)
EXPECTED_TOOL_NAME = "get_weather"
EXPECTED_TOOL_ARGUMENTS = '{"location":"Tokyo, Japan","unit":"celsius"}'
EXPECTED_TURN2_ANALYSIS = (
    "The tool says 18 °C, partly cloudy, 64% humidity and an 11 km/h wind. "
    "Answer briefly with those numbers."
)
EXPECTED_FINAL = (
    "It's currently 18 °C and partly cloudy in Tokyo, with 64% humidity and a light breeze (11 km/h)."
)


def openai_messages_turn1() -> List[Dict[str, Any]]:
    """The OpenAI chat messages of the first turn."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_PROMPT},
    ]


def openai_messages_turn2(tool_call_id: str = TOOL_CALL_ID, arguments: str = EXPECTED_TOOL_ARGUMENTS,
                          reasoning: str = EXPECTED_TURN1_ANALYSIS) -> List[Dict[str, Any]]:
    """The history of the second turn: turn 1, the assistant's tool call and its result."""
    return openai_messages_turn1() + [
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": reasoning,
            "tool_calls": [
                {
                    "id": tool_call_id,
                    "type": "function",
                    "function": {"name": EXPECTED_TOOL_NAME, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": tool_call_id, "content": TOOL_RESULT},
    ]
