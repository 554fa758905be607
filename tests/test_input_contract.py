"""The input contract: every wrong input gets a TypeError, a ValueError or a HarmonyError that
names the bad field and what was expected (at construction where possible; never an
AttributeError), the model objects are standard dataclasses, the lenient parser names
out-of-range ids and never raises on them, limit errors speak the caller's terms, and
``import llama_harmony`` stays light while the engine's names are importable from it."""
from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llama_harmony as lh
from llama_harmony import (
    Author,
    ChannelConfig,
    Conversation,
    DeveloperContent,
    HarmonyError,
    LimitExceeded,
    Limits,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    RenderOptions,
    Role,
    StreamableParser,
    SystemContent,
    TextContent,
    ToolDescription,
    ToolNamespaceConfig,
)
from llama_harmony.limits_text import describe, format_size
from llama_harmony.openai_request import OpenAIFormatError, messages_to_conversation

MODEL_CLASSES = [Author, TextContent, ToolDescription, ChannelConfig, ToolNamespaceConfig, SystemContent,
                 DeveloperContent, Message, Conversation, RenderConversationConfig, RenderOptions]


def user(text: str = "hi") -> Message:
    return Message.from_role_and_content(Role.USER, text)


# ------------------------------------------------------------------------------------------------
# the cases found by trying the package as a new user would
# ------------------------------------------------------------------------------------------------

def test_conversation_of_a_non_message_is_refused_at_construction():
    # the reference rejects it when the Conversation is built (its own test matches this text)
    with pytest.raises(TypeError, match="Input should be a valid dictionary or instance of Message") as ei:
        Conversation.from_messages([SystemContent.new()])
    assert "messages[0]" in str(ei.value) and "SystemContent" in str(ei.value)
    # a dict in the to_dict() shape is a message, as with the reference
    convo = Conversation.from_messages([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert convo.messages == [user()]


def test_message_content_of_wrong_type_is_refused_at_construction():
    with pytest.raises(TypeError, match=r"content must be a str or a Content .*not number 5"):
        Message.from_role_and_content(Role.USER, 5)
    with pytest.raises(TypeError, match=r"Message.content\[1\] must be a str or a Content"):
        Message(author=Author(Role.USER), content=[TextContent("a"), 3.5])
    with pytest.raises(TypeError, match="Message.content must be a list of Content"):
        Message(Author(Role.USER), "text")


def test_render_methods_check_their_arguments(enc):
    convo = Conversation.from_messages([user()])
    with pytest.raises(TypeError, match=r"conversation must be a Conversation, not a dict .*Conversation.from_dict"):
        enc.render_conversation_for_completion({"messages": [user().to_dict()]}, Role.ASSISTANT)
    with pytest.raises(TypeError, match="next_turn_role must be a Role"):
        enc.render_conversation_for_completion(convo, 5)
    with pytest.raises(ValueError, match="next_turn_role: Unknown role: 'robot'"):
        enc.render_conversation_for_completion(convo, "robot")
    with pytest.raises(TypeError, match="config must be a RenderConversationConfig"):
        enc.render_conversation(convo, "no")
    with pytest.raises(TypeError, match="message must be a Message"):
        enc.render("hi")
    with pytest.raises(TypeError, match="render_options must be a RenderOptions"):
        enc.render(user(), {"conversation_has_function_tools": True})
    with pytest.raises(TypeError, match="conversation must be a Conversation, not number 7"):
        enc.render_conversation_for_training(7)
    # a message list is a conversation; a non-message put into a built conversation is named
    assert enc.render_conversation([user()]) == enc.render_conversation(convo)
    convo.messages.append("oops")
    with pytest.raises(TypeError, match=r"conversation.messages\[1\] must be a Message"):
        enc.render_conversation(convo)


@pytest.mark.parametrize("make, exc, needle", [
    (lambda: Author(5), TypeError, "Author.role must be a Role"),
    (lambda: Author("robot"), ValueError, "Author.role: Unknown role: 'robot'"),
    (lambda: Author(Role.TOOL, name=3), TypeError, "Author.name must be a str or None, not number 3"),
    (lambda: TextContent(None), TypeError, "TextContent.text must be a str, not null"),
    (lambda: ToolDescription("f", 5), TypeError, "ToolDescription.description must be a str"),
    (lambda: ToolDescription("f", "d", {1, 2}), TypeError, "ToolDescription.parameters must be a JSON Schema"),
    (lambda: ChannelConfig("final", True), TypeError, "ChannelConfig.valid_channels must be a list of str"),
    (lambda: ChannelConfig(["final", 2], True), TypeError, r"ChannelConfig.valid_channels\[1\] must be a str"),
    (lambda: ChannelConfig(["final"], "yes"), TypeError, "ChannelConfig.channel_required must be a bool"),
    (lambda: ToolNamespaceConfig("functions", tools=[5]), TypeError, r"ToolNamespaceConfig.tools\[0\]"),
    (lambda: SystemContent(reasoning_effort="extreme"), ValueError,
     "SystemContent.reasoning_effort must be low, medium or high"),
    (lambda: SystemContent(channel_config=5), TypeError, "SystemContent.channel_config must be a ChannelConfig"),
    (lambda: SystemContent(tools=["browser"]), TypeError, "SystemContent.tools must be a dict"),
    (lambda: SystemContent.new().with_model_identity(None), TypeError, "model_identity must be a str"),
    (lambda: SystemContent.new().with_reasoning_effort(2), TypeError, "reasoning_effort must be a ReasoningEffort"),
    (lambda: SystemContent.new().with_tools("browser"), TypeError, "ns_config must be a ToolNamespaceConfig"),
    (lambda: DeveloperContent(instructions=5), TypeError, "DeveloperContent.instructions must be a str or None"),
    (lambda: DeveloperContent.new().with_function_tools(ToolDescription("f", "d")), TypeError,
     "tools must be a list of ToolDescription"),
    (lambda: DeveloperContent.new().with_function_tools([{"description": "d"}]), ValueError,
     "missing required field 'name'"),
    (lambda: Message(author="user"), TypeError, "Message.author must be an Author"),
    (lambda: Message(Author(Role.USER), channel=5), TypeError, "Message.channel must be a str or None"),
    (lambda: user().with_recipient(["functions.f"]), TypeError, "recipient must be a str"),
    (lambda: user().with_content_type(1), TypeError, "content_type must be a str"),
    (lambda: user().adding_content(None), TypeError, "content must be a str or a Content"),
    (lambda: Message.from_role_and_contents(Role.USER, "abc"), TypeError, "contents must be a list of Content"),
    (lambda: Message.from_role_and_content(5, "x"), TypeError, "role must be a Role"),
    (lambda: Conversation(messages=5), TypeError, "messages must be a list of Message"),
    (lambda: Conversation.from_dict([]), TypeError, "conversation must be a dict"),
    (lambda: Conversation.from_dict({}), ValueError, "missing required field 'messages'"),
    (lambda: Conversation.from_dict({"messages": [{"content": "x"}]}), ValueError,
     r"messages\[0\]: missing required field 'role'"),
    (lambda: Conversation.from_dict({"messages": [{"role": "user", "content": 5}]}), TypeError,
     r"messages\[0\].content must be a string or a list"),
    (lambda: Conversation.from_dict({"messages": [{"role": "user", "content": [{"type": "image"}]}]}), ValueError,
     r"messages\[0\].content\[0\]: unknown content type 'image'"),
    (lambda: Conversation.from_dict({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
     TypeError, r"messages\[0\].content\[0\].text must be a str"),
    (lambda: Conversation.from_dict({"messages": [{"role": "user", "channel": True}]}), TypeError,
     r"messages\[0\].channel must be a str or None, not boolean true"),
    (lambda: SystemContent.from_dict({"model_identity": "x", "colour": "red"}), ValueError,
     "SystemContent: unknown field 'colour'"),
    (lambda: RenderConversationConfig("yes"), TypeError, "auto_drop_analysis must be a bool"),
    (lambda: RenderOptions(1), TypeError, "conversation_has_function_tools must be a bool"),
])
def test_wrong_fields_are_named(make, exc, needle):
    with pytest.raises(exc, match=needle) as ei:
        make()
    assert type(ei.value) in (TypeError, ValueError)  # never AttributeError/KeyError


def test_effort_and_role_accept_their_names():
    assert SystemContent(reasoning_effort="high").reasoning_effort is ReasoningEffort.HIGH
    assert SystemContent.new().with_reasoning_effort("Low").reasoning_effort is ReasoningEffort.LOW
    assert Author("tool", "functions.f").role is Role.TOOL


# ------------------------------------------------------------------------------------------------
# standard dataclasses
# ------------------------------------------------------------------------------------------------

def test_model_objects_are_dataclasses():
    for cls in MODEL_CLASSES:
        assert dataclasses.is_dataclass(cls), cls
    m = user().with_channel("final")
    assert dataclasses.asdict(m) == {"author": {"role": Role.USER, "name": None}, "content": [{"text": "hi"}],
                                     "channel": "final", "recipient": None, "content_type": None}
    m2 = dataclasses.replace(m, channel="analysis")
    assert m2.channel == "analysis" and m.channel == "final" and m2.content == m.content
    with pytest.raises(TypeError, match="Message.channel"):
        dataclasses.replace(m, channel=3)  # replace validates like construction
    assert list(inspect.signature(Message).parameters) == ["author", "content", "channel", "recipient",
                                                            "content_type"]
    assert [f.name for f in dataclasses.fields(SystemContent)][:2] == ["model_identity", "reasoning_effort"]
    # keyword construction as the README shows it
    assert Message(author=Author(role=Role.USER), content=[TextContent(text="hi")]) == user()


def test_rendering_dataclass_objects_matches_builders(enc):
    built = Conversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, SystemContent.new()),
        Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_instructions("x")
                                      .with_function_tools([ToolDescription.new("f", "d", {"type": "object"})])),
        user(),
    ])
    copied = Conversation(messages=[dataclasses.replace(m) for m in built.messages])
    assert enc.render_conversation_for_completion(copied, Role.ASSISTANT) == \
        enc.render_conversation_for_completion(built, Role.ASSISTANT)


# ------------------------------------------------------------------------------------------------
# ids outside the vocabulary
# ------------------------------------------------------------------------------------------------

BIG_IDS = [2**40, -1, 2**32, 300_000, 2**70, -(2**80)]


@pytest.mark.parametrize("mode", ["lenient", "raw"])
def test_lenient_parser_names_out_of_range_ids_and_never_raises(enc, mode):
    head = enc.encode("<|start|>assistant<|channel|>final<|message|>a", allowed_special="all")
    tail = enc.encode("b<|return|>", allowed_special="all")
    p = StreamableParser(enc, None, mode=mode)
    events = p.feed(head + BIG_IDS + tail) + p.finish()
    details = [e.detail for e in events if e.type == "repair" and e.kind == "invalid_token"]
    if mode == "lenient":
        assert details == [str(i) for i in BIG_IDS]
    text = "".join(e.text for e in events if e.type == "content_delta")
    assert text.count("\ufffd") == len(BIG_IDS)
    # a number Python refuses to print in full is described by its size
    p2 = StreamableParser(enc, None, strict=False)
    ev = p2.feed(head + [10**5000])
    assert [e.detail for e in ev if e.type == "repair"] == [f"an integer of {(10**5000).bit_length()} bits"]
    # the per-token API and the batch parser do not raise either
    for t in BIG_IDS:
        StreamableParser(enc, Role.ASSISTANT, strict=False).process(t)
    msgs = enc.parse_messages_from_completion_tokens(head + BIG_IDS + tail, strict=False)
    assert msgs[-1].text() == "a" + "\ufffd" * len(BIG_IDS) + "b"


def test_reference_modes_keep_the_reference_errors(enc):
    for t in (2**40, -1, 2**70):
        with pytest.raises(OverflowError):
            enc.decode([t])
        with pytest.raises(OverflowError):
            StreamableParser(enc, Role.ASSISTANT).process(t)
        with pytest.raises(OverflowError):
            enc.parse_messages_from_completion_tokens([t], Role.ASSISTANT)
    with pytest.raises(HarmonyError, match="Invalid token for decoding: 300000"):
        enc.decode_utf8([300000])


# ------------------------------------------------------------------------------------------------
# limits in the caller's terms
# ------------------------------------------------------------------------------------------------

def _limit_error(enc, convo, **caps) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as ei:
        enc.render_conversation(convo, limits=Limits(**caps))
    return ei.value


def test_describe_limit_errors_for_each_audience(enc):
    big = Conversation.from_messages([user("x" * 3000)])
    cases = [
        (_limit_error(enc, big, max_message_bytes=2048), "max_message_bytes", "2.0 KiB (2,048 bytes)", "message text"),
        (_limit_error(enc, big, max_prompt_tokens=50), "max_prompt_tokens", "50 tokens", "the rendered prompt"),
        (_limit_error(enc, Conversation.from_messages([user()] * 3), max_messages=2), "max_messages", "2 messages",
         "the conversation"),
    ]
    for exc, field, cap_text, subject in cases:
        py, cli, http = (describe(exc, a) for a in ("python", "cli", "http"))
        for text in (py, cli, http):
            assert text.startswith(subject) and f"over the limit of {cap_text}" in text
        assert f"Limits({field}=...)" in py
        assert f"--{field.replace('_', '-')} N" in cli and f"--limit {field}=N" in cli and "Limits(" not in cli
        assert "Limits" not in http and "--" not in http and "raise" not in http
    # a single text field names itself; the size is in bytes
    exc = _limit_error(enc, Conversation.from_messages([user().with_channel("c" * 5000)]), max_message_bytes=4096)
    assert describe(exc, "http").startswith("channel is ")
    assert format_size(54_525_952, "bytes") == "52.0 MiB (54,525,952 bytes)"
    assert format_size(512, "bytes") == "512 bytes" and format_size(131_072, "tokens") == "131,072 tokens"
    with pytest.raises(ValueError, match="audience"):
        describe(exc, "email")


def test_openai_request_max_messages_is_a_full_limit_error():
    with pytest.raises(LimitExceeded) as ei:
        messages_to_conversation([{"role": "user", "content": "x"}] * 3, limits=Limits(max_messages=2))
    e = ei.value
    assert (e.limit, e.cap, e.actual) == ("messages", 2, 3)
    assert describe(e, "http") == "the conversation is 3 messages, over the limit of 2 messages"


@pytest.mark.parametrize("kwargs, param, needle", [
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "not number 5"),
    ({"messages": [5]}, "messages[0]", "must be an object, not number 5"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": 5}, "tools", "tools must be an array"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [7]}, "tools[0]", "not number 7"),
    ({"messages": []}, "messages", "at least one message"),
    ({"messages": "hi"}, "messages", "must be an array"),
    ({"messages": [{"role": True, "content": "x"}]}, "messages[0].role", "got true"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": {"id": 1}}]}, "messages[0].tool_calls",
     "must be an array"),
])
def test_openai_request_wrong_shapes_name_the_field(kwargs, param, needle):
    messages = kwargs.pop("messages")
    with pytest.raises(OpenAIFormatError) as ei:
        messages_to_conversation(messages, **kwargs)
    assert ei.value.param == param and needle in str(ei.value)
    assert "True" not in str(ei.value) and "None" not in str(ei.value)  # JSON terms


# ------------------------------------------------------------------------------------------------
# import llama_harmony stays light; the engine's names are importable from it
# ------------------------------------------------------------------------------------------------

def _python(code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_import_is_light_and_engine_names_are_lazy():
    out = _python(
        "import sys, llama_harmony as lh\n"
        "heavy = [m for m in ('llama_cpp', 'llama_harmony.engine', 'numpy', 'gguf', 'dataclasses_json') "
        "if m in sys.modules]\n"
        "print('heavy', heavy)\n"
        "from llama_harmony import HarmonyChatHandler, HarmonyEngine, register_chat_format\n"
        "from llama_harmony import ModelError, ModelNotFoundError, ContextOverflowError, OpenAIFormatError\n"
        "import llama_harmony.engine as e\n"
        "assert HarmonyEngine is e.HarmonyEngine and HarmonyChatHandler is e.HarmonyChatHandler\n"
        "assert register_chat_format is e.register_chat_format and ContextOverflowError is e.ContextOverflowError\n"
        "assert issubclass(ModelNotFoundError, ModelError) and issubclass(OpenAIFormatError, ValueError)\n"
        "assert 'HarmonyEngine' in dir(lh)\n"
        "try:\n    lh.NoSuchName\nexcept AttributeError as x:\n    print('attr', x)\n")
    assert out.returncode == 0, out.stderr
    assert "heavy []" in out.stdout
    assert "attr module 'llama_harmony' has no attribute 'NoSuchName'" in out.stdout


def test_engine_names_without_llama_cpp_name_the_extra(tmp_path):
    # a Python that sees llama_harmony but not llama-cpp-python (no site-packages at all)
    (tmp_path / "llama_harmony").symlink_to(Path(lh.__file__).parent, target_is_directory=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import llama_harmony as lh\n"
            "enc = lh.load_harmony_encoding(); print(enc.encode('hi'))\n"
            "try:\n    from llama_harmony import HarmonyEngine\nexcept ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR llama_harmony.HarmonyEngine needs llama-cpp-python" in out.stdout
    assert "pip install 'llama-harmony[llama]'" in out.stdout


# ------------------------------------------------------------------------------------------------
# docstrings on the public API
# ------------------------------------------------------------------------------------------------

# Every module of the package (subpackages included) and the ``_core`` stubs.
DOCUMENTED = sorted(str(p.relative_to(Path(lh.__file__).parent))
                    for p in Path(lh.__file__).parent.rglob("*.py")) + ["_core.pyi"]


def _undocumented(path: Path) -> list:
    import ast

    missing = []

    def walk(node: ast.AST, prefix: str) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                public = not ch.name.startswith("_") or ch.name == "__init__"
                overload = any(getattr(d, "id", None) == "overload" for d in getattr(ch, "decorator_list", []))
                if public and ast.get_docstring(ch) is None and not overload:
                    missing.append(f"{path.name}:{ch.lineno} {prefix}{ch.name}")
                if isinstance(ch, ast.ClassDef) and not ch.name.startswith("_"):
                    walk(ch, prefix + ch.name + ".")

    walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return missing


def test_public_api_has_docstrings():
    pkg = Path(lh.__file__).parent
    missing = [m for name in DOCUMENTED for m in _undocumented(pkg / name)]
    assert missing == []
