"""The Responses API mapping (llama_harmony.openai_responses): request items -> Harmony, parsed
model output -> Response objects and streaming events.

Expected renders are written out by hand from the Harmony layout (REFERENCE.md sections 2-4) or
rendered by the reference (openai-harmony 0.0.8) from a conversation built with its own API.
Model output is rendered as Harmony text, tokenized, and parsed token by token by the real
lenient parser through ``ParserTracker`` (both its native-event and its openai_harmony-style
paths). Every event and every Response object is validated against the official ``openai``
client's types, with no field the client does not declare (``store`` aside: the API returns it,
the client type does not list it), and replayed through the client's own stream accumulator.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict

import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai._types import omit
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from llama_harmony import LimitExceeded, Limits, Role, StreamableParser
from llama_harmony.openai_output import ParserTracker
from llama_harmony.openai_request import OpenAIFormatError
from llama_harmony.openai_responses import (
    ChainState,
    ResponseStream,
    browser_action,
    responses_to_conversation,
)
from test_differential import ref  # noqa: F401  (the reference, offline)
from test_openai_format import TIME_TS, WEATHER_TS, CompatOnly, sys_msg, tools_block

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                          "required": ["city"]}, "strict": True}
TIME = {"type": "function", "name": "get_time", "description": "Current time.",
        "parameters": {"type": "object", "properties": {}}}
PYTHON = {"type": "code_interpreter", "container": {"type": "auto"}}
SEARCH = {"type": "web_search_preview"}
TAIL = "<|start|>assistant"
WRAPS = pytest.mark.parametrize("wrap", [lambda p: p, CompatOnly], ids=["events", "compat"])


def render(enc, prepared):
    return enc.decode(render_ids(enc, prepared))


def render_ids(enc, prepared, conversation=None):
    return enc.render_conversation_for_completion(conversation or prepared.conversation, Role.ASSISTANT,
                                                  prepared.render_config)


def dev(text):
    return f"<|start|>developer<|message|>{text}<|end|>"


def user(text):
    return f"<|start|>user<|message|>{text}<|end|>"


def asst(channel, text):
    return f"<|start|>assistant<|channel|>{channel}<|message|>{text}<|end|>"


def fcall(name, args):
    return (f"<|start|>assistant to=functions.{name}<|channel|>commentary <|constrain|>json<|message|>"
            f"{args}<|call|>")


def fresult(name, text):
    return f"<|start|>functions.{name} to=assistant<|channel|>commentary<|message|>{text}<|end|>"


# ============================================================================ input

def test_string_input_and_instructions(enc):
    assert render(enc, responses_to_conversation("Hi", instructions="Be brief.")) == (
        sys_msg() + dev("# Instructions\n\nBe brief.") + user("Hi") + TAIL)
    assert render(enc, responses_to_conversation("Hi", reasoning={"effort": "high"})) == (
        sys_msg("high") + user("Hi") + TAIL)
    assert render(enc, responses_to_conversation("Hi", reasoning={"effort": "minimal"})) == (
        sys_msg("low") + user("Hi") + TAIL)


def test_message_items_of_every_role(enc):
    items = [
        {"role": "system", "content": "S1"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "D1"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Hello "}, {"type": "text", "text": "there"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi!"}]},
        {"role": "developer", "content": "Later rule"},
        {"role": "user", "content": "Weather?"},
        {"type": "message", "role": "assistant", "content": "Let me check."},  # a function_call follows
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "sunny"}]},
        {"type": "message", "role": "assistant", "content": "Noted", "phase": "commentary"},
        {"type": "message", "role": "assistant", "content": "", "phase": "final_answer"},  # empty: nothing
    ]
    prepared = responses_to_conversation(items, instructions="I0", tools=[WEATHER])
    assert render(enc, prepared) == (
        sys_msg(fn=True) + dev("# Instructions\n\nI0\n\nS1\n\nD1\n\n" + tools_block(WEATHER_TS))
        + user("Hello there") + asst("final", "Hi!") + dev("# Instructions\n\nLater rule") + user("Weather?")
        + asst("commentary", "Let me check.") + fcall("get_weather", '{"city":"Paris"}')
        + fresult("get_weather", "sunny") + asst("commentary", "Noted") + TAIL)
    assert prepared.tool_schemas == {"get_weather": WEATHER["parameters"]}
    assert prepared.builtin_tools == frozenset() and prepared.response_format is None
    # the state keeps the input's system/developer messages (first) but not `instructions`
    assert [m.author.role for m in prepared.state.messages[:2]] == [Role.DEVELOPER, Role.DEVELOPER]
    assert prepared.state.call_names == {"c1": "get_weather"}


def test_reasoning_items_and_the_spec_chain_of_thought(enc):
    items = [
        {"role": "user", "content": "Q1"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "R1"}]},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "What time is it?"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "S2a"},
                                          {"type": "summary_text", "text": "S2b"}]},
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": ""},
        {"type": "function_call_output", "call_id": "c2", "output": "noon"},
    ]
    chain = (user("What time is it?") + asst("analysis", "S2a\n\nS2b") + fcall("get_time", "{}")
             + fresult("get_time", "noon") + TAIL)
    head = sys_msg(fn=True) + dev(tools_block(TIME_TS)) + user("Q1")
    # spec: the completed turn loses its reasoning, the tool chain in progress keeps its own
    assert render(enc, responses_to_conversation(items, tools=[TIME])) == head + asst("final", "A1") + chain
    kept = responses_to_conversation(items, tools=[TIME], cot_policy="keep")
    assert render(enc, kept) == head + asst("analysis", "R1") + asst("final", "A1") + chain


def test_builtin_tools_and_code_interpreter_items_render_like_the_reference(enc, ref):
    items = [
        {"role": "user", "content": "Compute 6*7"},
        {"type": "code_interpreter_call", "id": "ci_1", "code": "print(6*7)", "container_id": "cntr_1",
         "status": "completed", "outputs": [{"type": "logs", "logs": "42\n"}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed",  # skipped: no page text in it
         "action": {"type": "search", "query": "x"}},
    ]
    prepared = responses_to_conversation(items, tools=[PYTHON, SEARCH, WEATHER])
    assert prepared.builtin_tools == frozenset({"python", "browser"})
    oh = ref.lib
    expected = oh.Conversation.from_messages([
        oh.Message.from_role_and_content(oh.Role.SYSTEM, oh.SystemContent.new()
                                         .with_reasoning_effort(oh.ReasoningEffort.MEDIUM)
                                         .with_tools(oh.ToolNamespaceConfig.python())
                                         .with_tools(oh.ToolNamespaceConfig.browser())),
        oh.Message.from_role_and_content(oh.Role.DEVELOPER, oh.DeveloperContent.new().with_function_tools([
            oh.ToolDescription.new("get_weather", WEATHER["description"], WEATHER["parameters"])])),
        oh.Message.from_role_and_content(oh.Role.USER, "Compute 6*7"),
        oh.Message.from_role_and_content(oh.Role.ASSISTANT, "print(6*7)").with_channel("analysis")
        .with_recipient("python").with_content_type("code"),
        oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, "python"), "42\n")
        .with_channel("analysis").with_recipient("assistant"),
    ])
    want = ref.enc.render_conversation_for_completion(expected, oh.Role.ASSISTANT,
                                                      oh.RenderConversationConfig(auto_drop_analysis=False))
    assert render_ids(enc, prepared) == want
    text = enc.decode(want)
    assert "<|start|>assistant to=python<|channel|>analysis code<|message|>print(6*7)<|call|>" in text
    assert "<|start|>python to=assistant<|channel|>analysis<|message|>42\n<|end|>" in text


def test_builtin_calls_of_completed_turns_are_dropped_with_their_reasoning(enc):
    items = [{"role": "user", "content": "Q1"},
             {"type": "code_interpreter_call", "code": "1+1", "outputs": None},
             {"type": "function_call", "call_id": "c", "name": "get_time", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c", "output": "noon"},
             {"role": "assistant", "content": "A1"},
             {"role": "user", "content": "Q2"}]
    got = render(enc, responses_to_conversation(items, tools=[TIME]))
    assert got == (sys_msg(fn=True) + dev(tools_block(TIME_TS)) + user("Q1") + fcall("get_time", "{}")
                   + fresult("get_time", "noon") + asst("final", "A1") + user("Q2") + TAIL)


def test_tool_choice(enc, ref):
    hi = [{"role": "user", "content": "Hi"}]
    assert render(enc, responses_to_conversation(hi, tools=[PYTHON, WEATHER], tool_choice="none")) == (
        sys_msg() + user("Hi") + TAIL)
    assert render(enc, responses_to_conversation(hi, tools=[WEATHER], tool_choice="required")) == (
        sys_msg(fn=True) + dev("# Instructions\n\nYou must call at least one of the available functions before "
                               "you answer.\n\n" + tools_block(WEATHER_TS)) + user("Hi") + TAIL)
    named = responses_to_conversation(hi, tools=[WEATHER, TIME, PYTHON],
                                      tool_choice={"type": "function", "name": "get_time"})
    assert render(enc, named) == (
        sys_msg(fn=True) + dev("# Instructions\n\nYou must call the function `get_time` before you answer.\n\n"
                               + tools_block(TIME_TS)) + user("Hi") + TAIL)
    assert named.tool_schemas == {"get_time": None} and named.builtin_tools == frozenset()

    oh = ref.lib

    def with_python(instruction):
        convo = oh.Conversation.from_messages([
            oh.Message.from_role_and_content(oh.Role.SYSTEM, oh.SystemContent.new().with_tools(
                oh.ToolNamespaceConfig.python())),
            oh.Message.from_role_and_content(oh.Role.DEVELOPER, oh.DeveloperContent.new().with_instructions(
                instruction)),
            oh.Message.from_role_and_content(oh.Role.USER, "Hi")])
        return ref.enc.render_conversation_for_completion(convo, oh.Role.ASSISTANT)

    forced = responses_to_conversation(hi, tools=[WEATHER, PYTHON], tool_choice={"type": "code_interpreter"})
    assert render_ids(enc, forced) == with_python("You must use the `python` tool before you answer.")
    assert forced.builtin_tools == frozenset({"python"}) and forced.tool_schemas == {}
    required = responses_to_conversation(hi, tools=[PYTHON], tool_choice="required")
    assert render_ids(enc, required) == with_python(
        "You must use at least one of the available tools before you answer.")


def test_text_format(enc):
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}}}
    fmt = {"format": {"type": "json_schema", "name": "shopping_list", "description": "A shopping list",
                      "schema": schema, "strict": True}}
    prepared = responses_to_conversation("eggs", instructions="Be helpful.", text=fmt)
    assert render(enc, prepared) == (
        sys_msg() + dev("# Instructions\n\nBe helpful.\n\n# Response Formats\n\n## shopping_list\n\n"
                        "// A shopping list\n"
                        '{"type":"object","properties":{"items":{"type":"array","items":{"type":"string"}}}}')
        + user("eggs") + TAIL)
    assert prepared.response_format == ("shopping_list", schema, "A shopping list")
    assert render(enc, responses_to_conversation("eggs", text={"format": {"type": "json_object"}})) == (
        sys_msg() + dev('# Response Formats\n\n## json_object\n\n// Respond with a single JSON object.\n'
                        '{"type":"object"}') + user("eggs") + TAIL)
    assert render(enc, responses_to_conversation("eggs", text={"format": {"type": "text"}, "verbosity": "low"})) \
        == sys_msg() + user("eggs") + TAIL


@pytest.mark.parametrize("kwargs, param", [
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": ["hello"]}, "input[0]"),
    ({"input": 42}, "input"),
    ({"input": [{"role": "user", "content": "x"}, {"type": "function_call_output", "call_id": "nope", "output": "?"}]},
     "input[1].call_id"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}, "input[0].name"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": 3}]}, "input[0].arguments"),
    ({"input": [{"type": "reasoning", "content": [{"type": "text", "text": "x"}]}]}, "input[0].content[0].type"),
    ({"input": [{"type": "reasoning", "summary": [{"type": "note", "text": "x"}]}]}, "input[0].summary[0].type"),
    ({"input": [{"type": "code_interpreter_call", "code": "1", "outputs": [{"type": "image", "url": "u"}]}]},
     "input[0].outputs[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "file_search_call"}]}, "input[0].type"),
    ({"tools": [WEATHER, {"type": "file_search"}]}, "tools[1].type"),
    ({"tools": [{"type": "function", "parameters": {}}]}, "tools[0].name"),
    ({"tools": [{"type": "function", "name": "f", "parameters": "x"}]}, "tools[0].parameters"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": ["x"]}, "tools[0]"),
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [PYTHON], "builtin_tools_available": ()}, "tools[0].type"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "code_interpreter"}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "mcp", "server_label": "x"}}, "tool_choice.type"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"reasoning": "high"}, "reasoning"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"text": {"format": {"type": "json_schema", "name": "", "schema": {}}}}, "text.format.name"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"text": {"format": "json"}}, "text.format"),
    ({"text": "json"}, "text"),
    ({"instructions": ["a"]}, "instructions"),
])
def test_errors_name_the_field(kwargs, param):
    kwargs = {"input": "x", **kwargs}
    with pytest.raises(OpenAIFormatError) as info:
        responses_to_conversation(kwargs.pop("input"), **kwargs)
    assert info.value.param == param
    assert isinstance(info.value, ValueError)


def test_other_errors():
    with pytest.raises(OpenAIFormatError, match="cot_policy"):
        responses_to_conversation("x", cot_policy="forget")
    with pytest.raises(LimitExceeded):
        responses_to_conversation([{"role": "user", "content": "x"}] * 3, limits=Limits().replace(max_messages=2))
    with pytest.raises(OpenAIFormatError, match="known call ids: 'c1'"):
        responses_to_conversation([{"type": "function_call_output", "call_id": "c9", "output": "x"}],
                                  history=ChainState([], {"c1": "f"}))


# ============================================================================ output: helpers

_EVENTS = TypeAdapter(ResponseStreamEvent)


def _no_unknown_fields(obj, path="$"):
    """Every field is one the client declares (``store`` aside on the Response)."""
    if isinstance(obj, BaseModel):
        extra = set(obj.model_extra or {}) - ({"store"} if isinstance(obj, Response) else set())
        assert not extra, f"{path}: fields the openai client does not know: {sorted(extra)}"
        for name in type(obj).model_fields:
            _no_unknown_fields(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, (list, tuple)):
        for i, x in enumerate(obj):
            _no_unknown_fields(x, f"{path}[{i}]")


def valid_response(d):
    r = Response.model_validate(d)
    _no_unknown_fields(r)
    return r


def counter_ids():
    counters = defaultdict(itertools.count)
    return lambda prefix: f"{prefix}_{next(counters[prefix])}"


def stream(request=None, **kw):
    return ResponseStream("gpt-oss-test", id="resp_1", created_at=1_700_000_000, request=request,
                          container_id="cntr_1", id_factory=counter_ids(), **kw)


def generate(enc, rs, text, *, wrap=lambda p: p, length=False):
    """Parse a completion token by token into the stream (one generation); its events."""
    tracker = ParserTracker(wrap(StreamableParser(enc, Role.ASSISTANT, strict=False)), decode=enc.decode)
    events = []
    for tok in enc.encode(text, allowed_special="all"):
        events += rs.feed(tracker.process(tok))
    return events + rs.end_generation(tracker.process_eos(length=length), length=length)


def check(events, rs):
    """Validate every event and the final object; check the stream's invariants; replay the
    events through the openai client's own stream accumulator. Returns the validated events."""
    parsed = [_EVENTS.validate_python(e) for e in events]
    for p in parsed:
        _no_unknown_fields(p)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = rs.response()
    valid_response(final)
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed")
    assert events[-1]["response"] == final and final["status"] != "in_progress"
    assert sum(e["type"] in ("response.completed", "response.incomplete", "response.failed") for e in events) == 1

    output = final["output"]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["output_index"] for e in added] == list(range(len(output)))
    assert sorted(e["output_index"] for e in done) == list(range(len(output)))
    for e in done:
        assert e["item"] == output[e["output_index"]]
    streamed = defaultdict(str)
    for k, e in enumerate(events):
        if "item_id" in e:
            i = e["output_index"]
            assert e["item_id"] == output[i]["id"]
            first = events.index(added[i])
            last = events.index(next(d for d in done if d["output_index"] == i))
            assert first < k < last, f"{e['type']} outside its item"
        if e["type"].endswith(".delta"):
            streamed[e["item_id"]] += e["delta"]
        if e["type"].endswith(".done") and e["type"] != "response.output_item.done":
            text = e.get("text", e.get("arguments", e.get("code", e.get("part", {}).get("text"))))
            assert text == streamed[e["item_id"]]
    for item in output:
        full = {"reasoning": lambda x: x["content"][0]["text"], "message": lambda x: x["content"][0]["text"],
                "function_call": lambda x: x["arguments"], "code_interpreter_call": lambda x: x["code"],
                "web_search_call": lambda x: ""}[item["type"]](item)
        assert full == streamed[item["id"]]

    # the official client's accumulator (client.responses.stream) accepts the stream
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for p in parsed:
        state.handle_event(p)
    if final["status"] == "completed":
        assert state._completed_response.output_text == Response.model_validate(final).output_text
    return parsed


def kinds(rs):
    return [item["type"] for item in rs.response()["output"]]


# ============================================================================ output: items and events

REASON_ANSWER = ("<|channel|>analysis<|message|>The user greets. é🙂<|end|>"
                 "<|start|>assistant<|channel|>final<|message|>Hello! How can I help?<|return|>")


@WRAPS
def test_reasoning_then_answer(enc, wrap):
    rs = stream()
    events = rs.start() + generate(enc, rs, REASON_ANSWER, wrap=wrap) + rs.finish(
        input_tokens=50, cached_tokens=20, output_tokens=30, reasoning_tokens=12)
    check(events, rs)
    types = [e["type"] for e in events if not e["type"].endswith(".delta")]
    assert types == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert {e["type"] for e in events if e["type"].endswith(".delta")} == {
        "response.reasoning_text.delta", "response.output_text.delta"}
    r = rs.response()
    assert r["output"] == [
        {"id": "rs_0", "type": "reasoning", "status": "completed", "summary": [],
         "content": [{"type": "reasoning_text", "text": "The user greets. é🙂"}]},
        {"id": "msg_0", "type": "message", "status": "completed", "role": "assistant", "phase": "final_answer",
         "content": [{"type": "output_text", "text": "Hello! How can I help?", "annotations": [], "logprobs": []}]}]
    assert r["usage"] == {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 0},
                          "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 80}
    assert r["status"] == "completed" and r["incomplete_details"] is None and r["error"] is None
    assert Response.model_validate(r).output_text == "Hello! How can I help?"
    assert rs.finish() == []  # once only


@WRAPS
def test_function_call_with_preamble(enc, wrap):
    text = ("<|channel|>analysis<|message|>Need the weather.<|end|>"
            "<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>"
            "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
            '<|message|>{"city":"Paris"}<|call|>'
            "<|start|>assistant<|channel|>analysis to=functions.get_time<|message|><|call|>")
    rs = stream({"tools": [WEATHER, TIME]})
    events = rs.start() + generate(enc, rs, text, wrap=wrap) + rs.finish()
    check(events, rs)
    out = rs.response()["output"]
    assert kinds(rs) == ["reasoning", "message", "function_call", "function_call"]
    assert out[1]["phase"] == "commentary" and out[1]["content"][0]["text"] == "Checking."
    assert out[2] == {"id": "fc_0", "type": "function_call", "status": "completed", "call_id": "call_0",
                      "name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert out[3]["name"] == "get_time" and out[3]["arguments"] == "{}"  # no arguments written: "{}"
    fc = [e["type"] for e in events if e.get("item_id") == "fc_0" or e.get("item", {}).get("id") == "fc_0"]
    assert fc[0] == "response.output_item.added" and fc[-2:] == [
        "response.function_call_arguments.done", "response.output_item.done"]
    assert set(fc[1:-2]) == {"response.function_call_arguments.delta"}
    assert rs.call_names == {"call_0": "get_weather", "call_1": "get_time"}
    assert Response.model_validate(rs.response()).output_text == "Checking."


PY_CALL = ("<|channel|>analysis<|message|>Compute it.<|end|>"
           "<|start|>assistant<|channel|>analysis to=python code<|message|>print(6*7)<|call|>")
PY_ANSWER = ("<|channel|>analysis<|message|>Got 42.<|end|>"
             "<|start|>assistant<|channel|>final<|message|>The answer is 42.<|return|>")


@WRAPS
def test_python_call_result_and_second_generation(enc, ref, wrap):
    request = {"input": "What is 6*7?", "tools": [{"type": "code_interpreter"}]}
    prepared = responses_to_conversation(request["input"], tools=request["tools"])
    rs = stream(request, builtin_tools=prepared.builtin_tools)
    events = rs.start() + generate(enc, rs, PY_CALL, wrap=wrap)
    [call] = rs.pending_calls()
    assert (call.item_id, call.tool, call.recipient, call.channel, call.text) == (
        "ci_0", "python", "python", "analysis", "print(6*7)")
    events += rs.tool_result(call.item_id, "42\n")
    assert rs.pending_calls() == []

    # the next prompt: this conversation + the output so far, as the reference renders it
    oh = ref.lib
    want = oh.Conversation.from_messages([
        oh.Message.from_role_and_content(oh.Role.SYSTEM, oh.SystemContent.new().with_tools(
            oh.ToolNamespaceConfig.python())),
        oh.Message.from_role_and_content(oh.Role.USER, "What is 6*7?"),
        oh.Message.from_role_and_content(oh.Role.ASSISTANT, "Compute it.").with_channel("analysis"),
        oh.Message.from_role_and_content(oh.Role.ASSISTANT, "print(6*7)").with_channel("analysis")
        .with_recipient("python").with_content_type("code"),
        oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, "python"), "42\n")
        .with_channel("analysis").with_recipient("assistant")])
    assert render_ids(enc, prepared, prepared.continued(rs.output_messages())) == \
        ref.enc.render_conversation_for_completion(want, oh.Role.ASSISTANT)

    events += generate(enc, rs, PY_ANSWER, wrap=wrap) + rs.finish(output_tokens=40)
    check(events, rs)
    out = rs.response()["output"]
    assert kinds(rs) == ["reasoning", "code_interpreter_call", "reasoning", "message"]
    assert out[1] == {"id": "ci_0", "type": "code_interpreter_call", "status": "completed", "code": "print(6*7)",
                      "container_id": "cntr_1", "outputs": [{"type": "logs", "logs": "42\n"}]}
    ci = [e["type"] for e in events if e.get("item_id") == "ci_0" or e.get("item", {}).get("id") == "ci_0"]
    assert [t for t in ci if not t.endswith(".delta")] == [
        "response.output_item.added", "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed", "response.output_item.done"]
    assert "response.code_interpreter_call_code.delta" in ci
    assert Response.model_validate(rs.response()).output_text == "The answer is 42."
    history = [(m.author.role, m.author.name, m.channel, m.recipient, m.content_type, m.text())
               for m in rs.output_messages()]
    assert history == [
        (Role.ASSISTANT, None, "analysis", None, None, "Compute it."),
        (Role.ASSISTANT, None, "analysis", "python", "code", "print(6*7)"),
        (Role.TOOL, "python", "analysis", "assistant", None, "42\n"),
        (Role.ASSISTANT, None, "analysis", None, None, "Got 42."),
        (Role.ASSISTANT, None, "final", None, None, "The answer is 42.")]


def test_browser_calls(enc):
    rs = stream({"tools": [SEARCH]})
    events = rs.start()
    steps = [
        ('<|channel|>analysis to=browser.search<|message|>{"query":"harmony format","topn":3}<|call|>',
         {"type": "search", "query": "harmony format"},
         {"type": "search", "query": "harmony format", "sources": [{"type": "url", "url": "file:///docs/h.md"}]}),
        ('<|channel|>analysis to=browser.open<|message|>{"id":0}<|call|>',
         {"type": "open_page", "url": None}, {"type": "open_page", "url": "file:///docs/h.md"}),
        ('<|channel|>analysis to=browser.find<|message|>{"pattern":"channels"}<|call|>',
         {"type": "find_in_page", "pattern": "channels", "url": ""}, None),
    ]
    for k, (text, action, replaced) in enumerate(steps):
        gen = generate(enc, rs, text)
        assert [e["type"] for e in gen] == ["response.output_item.added", "response.web_search_call.in_progress",
                                            "response.web_search_call.searching"]
        assert gen[0]["item"]["action"] == action and gen[0]["item"]["status"] == "in_progress"
        [call] = rs.pending_calls()
        assert call.tool == "browser" and call.recipient == text.split("to=")[1].split("<|")[0]
        result = rs.tool_result(call.item_id, f"[{k}] result text", action=replaced)
        assert [e["type"] for e in result] == ["response.web_search_call.completed", "response.output_item.done"]
        assert result[-1]["item"]["action"] == (replaced or action)
        events += gen + result
    events += generate(enc, rs, "<|channel|>final<|message|>Found it 【0†L1】.<|return|>") + rs.finish()
    check(events, rs)
    assert kinds(rs) == ["web_search_call"] * 3 + ["message"]
    results = [m for m in rs.output_messages() if m.author.role == Role.TOOL]
    assert [(m.author.name, m.channel, m.recipient, m.text()) for m in results] == [
        ("browser.search", "analysis", "assistant", "[0] result text"),
        ("browser.open", "analysis", "assistant", "[1] result text"),
        ("browser.find", "analysis", "assistant", "[2] result text")]


def test_browser_action_from_arguments():
    assert browser_action("browser.search", '{"query": "q"}') == {"type": "search", "query": "q"}
    assert browser_action("browser.open", '{"id": "https://x.org/a"}') == {"type": "open_page",
                                                                          "url": "https://x.org/a"}
    assert browser_action("browser.open", "") == {"type": "open_page", "url": None}
    assert browser_action("browser.find", "{not json") == {"type": "find_in_page", "pattern": "", "url": ""}
    assert browser_action("browser.search", "[1, 2]") == {"type": "search", "query": None}


def test_builtin_call_without_the_builtin_tool_is_a_function_call(enc):
    rs = stream()  # no code_interpreter in the request: gpt-oss calls python anyway
    events = rs.start() + generate(enc, rs, PY_CALL) + rs.finish()
    check(events, rs)
    assert kinds(rs) == ["reasoning", "function_call"]
    assert rs.response()["output"][1]["name"] == "python" and rs.pending_calls() == []
    # tool_choice "none" switches the built-in tools off too
    assert stream({"tools": [PYTHON], "tool_choice": "none"}).builtin_tools == frozenset()
    assert stream({"tools": [PYTHON, SEARCH]}).builtin_tools == frozenset({"python", "browser"})


def test_generations_never_merge(enc):
    rs = stream({"tools": [PYTHON]})
    events = rs.start() + generate(enc, rs, "<|channel|>final<|message|>One.<|return|>")
    events += generate(enc, rs, "<|channel|>final<|message|>Two.<|return|>") + rs.finish()
    check(events, rs)
    assert [i["content"][0]["text"] for i in rs.response()["output"]] == ["One.", "Two."]


# ============================================================================ cut, empty, failed

@WRAPS
def test_cut_by_max_output_tokens(enc, wrap):
    text = ("<|channel|>analysis<|message|>Think.<|end|>"
            "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
            '<|message|>{"city":"Pa')
    rs = stream({"tools": [WEATHER], "max_output_tokens": 20})
    events = rs.start() + generate(enc, rs, text, wrap=wrap, length=True) + rs.finish(output_tokens=20)
    check(events, rs)
    r = rs.response()
    assert events[-1]["type"] == "response.incomplete"
    assert r["status"] == "incomplete" and r["incomplete_details"] == {"reason": "max_output_tokens"}
    assert r["max_output_tokens"] == 20
    assert [(i["type"], i["status"]) for i in r["output"]] == [("reasoning", "completed"),
                                                               ("function_call", "incomplete")]
    assert r["output"][1]["arguments"] == '{"city":"Pa'
    # a cut call is no call: not in the history, no call id to answer
    assert [m.channel for m in rs.output_messages()] == ["analysis"] and rs.call_names == {}


@WRAPS
@pytest.mark.parametrize("text, kind", [
    ("<|channel|>final<|message|>Cut in the mid", "message"),
    ("<|channel|>analysis<|message|>Still thinking", "reasoning"),
    ("<|channel|>analysis to=python code<|message|>for i in", "code_interpreter_call"),
    ('<|channel|>analysis to=browser.search<|message|>{"query": "ha', "web_search_call"),
])
def test_every_item_kind_cut(enc, wrap, text, kind):
    rs = stream({"tools": [PYTHON, SEARCH]})
    events = rs.start() + generate(enc, rs, text, wrap=wrap, length=True)
    assert rs.pending_calls() == []  # a cut call is never run
    events += rs.finish()
    check(events, rs)
    assert [(i["type"], i["status"]) for i in rs.response()["output"]] == [(kind, "incomplete")]
    assert rs.response()["status"] == "incomplete"


def test_empty_generation_and_explicit_incomplete(enc):
    rs = stream()
    events = rs.start() + generate(enc, rs, "") + rs.finish()
    check(events, rs)
    assert rs.response()["output"] == [] and rs.response()["status"] == "completed"
    rs = stream()
    events = rs.start() + rs.feed([]) + rs.finish(status="incomplete")
    check(events, rs)
    assert rs.response()["incomplete_details"] == {"reason": "max_output_tokens"}
    with pytest.raises(ValueError):
        stream().finish(status="failed")


def test_fail_closes_open_items(enc):
    rs = stream({"tools": [PYTHON]})
    events = rs.start()
    tracker = ParserTracker(StreamableParser(enc, Role.ASSISTANT, strict=False), decode=enc.decode)
    for tok in enc.encode("<|channel|>analysis<|message|>Half a thou", allowed_special="all"):
        events += rs.feed(tracker.process(tok))
    events += rs.fail("the model crashed")
    check(events, rs)
    r = rs.response()
    assert r["status"] == "failed" and r["error"] == {"code": "server_error", "message": "the model crashed"}
    assert [(i["type"], i["status"]) for i in r["output"]] == [("reasoning", "incomplete")]
    assert rs.fail("again") == [] and rs.finish() == [] and rs.feed(tracker.process_eos()) == []


def test_unrun_builtin_call_is_closed_incomplete(enc):
    rs = stream({"tools": [PYTHON]})
    events = rs.start() + generate(enc, rs, PY_CALL) + rs.finish()  # the endpoint gave up (max tool rounds)
    check(events, rs)
    assert [(i["type"], i["status"]) for i in rs.response()["output"]] == [
        ("reasoning", "completed"), ("code_interpreter_call", "incomplete")]
    assert [m.channel for m in rs.output_messages()] == ["analysis"]  # the call that never ran is left out


def test_tool_result_errors_and_failed_status(enc):
    rs = stream({"tools": [PYTHON]})
    rs.start()
    generate(enc, rs, PY_CALL)
    with pytest.raises(ValueError):
        rs.tool_result("rs_0", "x")  # not a built-in call
    with pytest.raises(ValueError):
        rs.tool_result("ci_0", "x", status="maybe")
    events = rs.tool_result("ci_0", "Error: CPU time limit exceeded", status="failed", logs="killed")
    assert [e["type"] for e in events] == ["response.output_item.done"]
    assert events[0]["item"]["status"] == "failed"
    assert events[0]["item"]["outputs"] == [{"type": "logs", "logs": "killed"}]
    with pytest.raises(ValueError):
        rs.tool_result("ci_0", "twice")
    assert rs.output_messages()[-1].text() == "Error: CPU time limit exceeded"


# ============================================================================ malformed output (REFERENCE.md §11)

MALFORMED = [
    # vLLM #23567/#51977: "unexpected tokens remaining in message header"
    ('<|channel|>commentary to=functions.get_weather to=functions.get_weather <|constrain|>json'
     '<|message|>{"city":"Paris"}<|call|>', ['{"city":"Paris"}']),
    ("<|channel|>final <|constrain|>response<|message|>Hi there<|return|>", ["Hi there"]),
    ("<|channel|>––commentary<|message|>dash<|end|>", ["dash"]),
    # vLLM #50690: <|return|> after <|end|>
    ("<|channel|>final<|message|>All good.<|end|><|return|>", ["All good."]),
    # vLLM #22519: a token other than <|start|> between messages
    ("<|channel|>analysis<|message|>Thinking.<|end|>Stray words<|start|>assistant<|channel|>final"
     "<|message|>Done.<|return|>", ["Thinking.", "Stray words", "Done."]),
    ("<|start|>assistant<|start|>assistant<|channel|>final<|message|>Double start<|return|>", ["Double start"]),
    # llama.cpp #15091: markup leaked into content
    ("<|channel|>final<|message|>A<|reserved_200013|>B<|return|>", ["AB"]),
    # llama.cpp #27720: malformed channel names
    ("<|channel|>commentary?<|message|>Hmm<|end|><|start|>assistant<|channel|>??<|message|>Answer<|return|>",
     ["Hmm", "Answer"]),
    # llama.cpp #25321: final answer without a channel
    ("<|message|>No channel answer<|return|>", ["No channel answer"]),
    ("I cannot help with that.<|return|>", ["I cannot help with that."]),
    ("<|channel|>analysis<|message|>Hmm.<|end|><|start|>assistant<|channel|>final Plain reply<|return|>",
     ["Hmm.", "Plain reply"]),
    # Ollama #11781/#11991: a call to a function nobody declared still completes
    ("<|channel|>commentary to=functions.unknown_tool <|constrain|>json<|message|>{}<|call|>", ["{}"]),
]


@WRAPS
@pytest.mark.parametrize("text, pieces", MALFORMED)
def test_malformed_output_gives_a_valid_response(enc, wrap, text, pieces):
    rs = stream({"tools": [WEATHER]})
    events = rs.start() + generate(enc, rs, text, wrap=wrap) + rs.finish()
    check(events, rs)
    out = rs.response()["output"]
    texts = [i["content"][0]["text"] if "content" in i else i["arguments"] for i in out]
    for piece in pieces:
        assert any(piece in t for t in texts), (piece, texts)
    assert all("<|" not in t for t in texts)


def test_raw_delta_sequences_never_raise():
    from llama_harmony.openai_output import ParsedDelta as D
    rs = stream({"tools": [PYTHON, SEARCH]})
    events = rs.start() + rs.feed([
        D(0, text="stray, no header"),                       # text with no header at all
        D(0, done=True), D(0, done=True),                    # repeated ends
        D(0, None, None, None, "", done=True),               # an empty headerless message: nothing
        D(1, "analysis", text="r1"), D(3, "final", text="jump"),  # index jumps, no done
        D(1, "analysis", text="back"),                       # an index seen before
        D(2, "commentary", "functions.f", "json", '{"a":', False),
        D(2, "commentary", "functions.f", "json", "1}", True),
        D(2, "commentary", "functions.f", "json", "", True),  # a late repeat of the end
        D(4, "analysis", "python", "code", "x=1", True),
        D(5, "analysis", "browser.nothing", None, "??", True),
        D(6, "final", "<|constrain|>", None, "odd recipient"),
    ]) + rs.finish()
    check(events, rs)
    out = rs.response()["output"]
    assert [i["type"] for i in out] == ["message", "reasoning", "message", "reasoning", "function_call",
                                        "code_interpreter_call", "web_search_call", "message"]
    assert out[4]["arguments"] == '{"a":1}' and out[6]["action"] == {"type": "search", "query": None}


# ============================================================================ the request echo

def test_response_echoes_the_request():
    request = {"model": "gpt-oss", "input": "x", "instructions": "Be brief.", "temperature": 0.5, "top_p": 0.9,
               "max_output_tokens": 100, "previous_response_id": "resp_0", "store": False,
               "metadata": {"k": "v"}, "parallel_tool_calls": False, "reasoning": {"effort": "HIGH"},
               "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "tools": [WEATHER, {"type": "function", "function": {"name": "f", "parameters": {}}},
                         {"type": "code_interpreter"}, SEARCH],
               "truncation": "disabled", "user": "u1"}
    rs = stream(request)
    created = rs.start()[0]["response"]
    valid_response(created)
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    r = valid_response(rs.response())
    assert (r.instructions, r.temperature, r.top_p, r.max_output_tokens, r.previous_response_id, r.user) == (
        "Be brief.", 0.5, 0.9, 100, "resp_0", "u1")
    assert r.metadata == {"k": "v"} and r.parallel_tool_calls is False and r.truncation == "disabled"
    assert r.reasoning.effort == "high" and r.text.format.type == "json_schema"
    assert r.tool_choice.type == "function" and r.tool_choice.name == "get_weather"
    assert [t.type for t in r.tools] == ["function", "function", "code_interpreter", "web_search_preview"]
    assert r.tools[2].container.type == "auto" and r.tools[1].name == "f"
    assert rs.response()["store"] is False
    defaults = valid_response(stream().response())
    assert (defaults.tool_choice, defaults.tools, defaults.text.format.type, defaults.reasoning.effort,
            defaults.parallel_tool_calls) == ("auto", [], "text", "medium", True)


# ============================================================================ chains (previous_response_id)

def test_chain_with_previous_response(enc):
    # turn 1: the model reasons and calls a function
    p1 = responses_to_conversation([{"role": "developer", "content": "D"}, {"role": "user", "content": "Paris?"}],
                                   instructions="Be brief.", tools=[WEATHER])
    rs1 = stream({"tools": [WEATHER]})
    events = rs1.start() + generate(enc, rs1, "<|channel|>analysis<|message|>Need weather.<|end|>"
                                    "<|start|>assistant<|channel|>commentary to=functions.get_weather "
                                    '<|constrain|>json<|message|>{"city":"Paris"}<|call|>') + rs1.finish()
    check(events, rs1)
    call_id = rs1.response()["output"][1]["call_id"]
    state1 = ChainState.from_dict(json.loads(json.dumps(rs1.chain_state(p1.state).to_dict())))  # stored as JSON

    # turn 2: the call's output, continuing turn 1 (instructions are not carried over; the
    # developer input message is, and the reasoning of the tool chain in progress is kept)
    out2 = [{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]
    p2 = responses_to_conversation(out2, tools=[WEATHER], history=state1)
    head = sys_msg(fn=True) + dev("# Instructions\n\nD\n\n" + tools_block(WEATHER_TS)) + user("Paris?")
    call = asst("analysis", "Need weather.") + fcall("get_weather", '{"city":"Paris"}')
    assert render(enc, p2) == head + call + fresult("get_weather", "sunny") + TAIL
    # stateless: the same turn sent with every item (turn 1's output items as input) renders the same
    stateless = ([{"role": "developer", "content": "D"}, {"role": "user", "content": "Paris?"}]
                 + rs1.response()["output"] + out2)
    assert render(enc, responses_to_conversation(stateless, tools=[WEATHER])) == render(enc, p2)

    rs2 = stream({"tools": [WEATHER], "previous_response_id": "resp_1"})
    events = rs2.start() + generate(enc, rs2, "<|channel|>final<|message|>It is sunny.<|return|>") + rs2.finish()
    check(events, rs2)
    state2 = rs2.chain_state(p2.state)

    # turn 3: a new question: the finished turn's reasoning is dropped, its call and result stay
    p3 = responses_to_conversation("And Rome?", tools=[WEATHER], history=state2)
    assert render(enc, p3) == (head + fcall("get_weather", '{"city":"Paris"}') + fresult("get_weather", "sunny")
                               + asst("final", "It is sunny.") + user("And Rome?") + TAIL)
    # the state keeps everything; the policy applies when rendering
    assert [m.channel for m in p3.state.messages].count("analysis") == 1
    assert p3.state.call_names == {call_id: "get_weather"}
    # a plain list of messages works as history too (without call ids)
    assert render(enc, responses_to_conversation("And Rome?", tools=[WEATHER], history=state2.messages)) == \
        render(enc, p3)
