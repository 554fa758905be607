"""Core behaviour beyond the goldens: offline loading, vocabulary integrity, limits, errors,
panics, threads, and the compatible API surface."""
from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import threading
import time

import pytest

import llama_harmony
from llama_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyError,
    LimitExceeded,
    Limits,
    Message,
    ReasoningEffort,
    Role,
    SystemContent,
    TextContent,
    ToolDescription,
    ToolNamespaceConfig,
)

from conftest import O200K_SHA256, o200k_base_ranks


def test_embedded_ranks_match_published_file(enc):
    data = llama_harmony.o200k_base_tiktoken_bytes()
    assert hashlib.sha256(data).hexdigest() == O200K_SHA256
    assert len(data) == 3_613_922 and data.count(b"\n") == 199_998
    ranks = o200k_base_ranks(data)
    assert sorted(ranks) == list(range(199_998))
    # the encoding's own token bytes are these ranks
    assert enc.token_bytes_table(199_998) == [ranks[i] for i in range(199_998)]


def test_loads_offline_with_empty_home(tmp_path):
    # No network, no TIKTOKEN_* variable, a fresh empty HOME: loading and encoding still work.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "no_proxy": "*",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    code = (
        "import llama_harmony as h; e = h.load_harmony_encoding();"
        "print(e.encode('hello world'), e.n_vocab)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[24912, 2375] 201089"
    assert not list(tmp_path.iterdir()), "loading must not write to HOME"


def test_special_tokens(enc):
    assert len(enc.special_tokens_set) == 1091
    assert enc.is_special_token(200006) and not enc.is_special_token(199997)
    assert enc.decode([200005, 200006, 201088]) == "<|channel|><|start|><|reserved_201088|>"
    assert sorted(enc.stop_tokens()) == [200002, 200007, 200012]
    assert sorted(enc.stop_tokens_for_assistant_actions()) == [200002, 200012]
    # <|endofprompt|> and <|refusal|> are not special in this encoding.
    assert "<|endofprompt|>" not in enc.special_tokens_set
    assert enc.encode("<|refusal|>") == enc.encode_ordinary("<|refusal|>")


def test_encode_special_handling(enc):
    with pytest.raises(HarmonyError, match="disallowed special token"):
        enc.encode("x <|start|> y")
    assert enc.encode("x <|start|>", allowed_special={"<|start|>"})[-1] == 200006
    assert 200006 not in enc.encode("x <|start|>", disallowed_special=())
    # Only the allowed token becomes special; another disallowed one still raises.
    with pytest.raises(HarmonyError):
        enc.encode("<|start|><|end|>", allowed_special={"<|start|>"})
    assert enc.encode("<|start|><|end|>", allowed_special={"<|start|>"}, disallowed_special=()) == [200006] + enc.encode_ordinary("<|end|>")


def test_decode_errors(enc):
    with pytest.raises(HarmonyError):
        enc.decode_bytes([201089])
    partial = next(i for i in range(0, 199998) if enc.decode_bytes([i]).startswith(b"\xe4") and len(enc.decode_bytes([i])) == 1)
    with pytest.raises(HarmonyError):
        enc.decode_utf8([partial])  # a lone UTF-8 lead byte
    assert enc.decode([partial]) == "\ufffd"
    assert enc.decode_utf8(enc.encode("你好")) == "你好"


def test_long_single_piece_is_linear(enc):
    # 16,000 identical letters form one pre-tokenizer piece; the heap merge keeps it fast
    # and the result must equal the quadratic reference algorithm's (checked in cargo test).
    ids = enc.encode("a" * 16000)
    assert enc.decode(ids) == "a" * 16000
    ids2 = enc.encode("a" * 64000)
    assert enc.decode(ids2) == "a" * 64000


def test_rust_panic_becomes_exception():
    with pytest.raises(HarmonyError, match="internal error"):
        llama_harmony._core._debug_panic()
    # and the interpreter is fine afterwards
    assert llama_harmony.load_harmony_encoding().encode("ok") == [525]


def _big_message(n_bytes: int) -> Message:
    return Message.from_role_and_content(Role.USER, "x" * n_bytes)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_256mb_message_fails_fast_without_memory_growth(enc):
    msg = _big_message(256 << 20)  # the str itself costs 256 MB in Python
    before = _rss_mb()
    t = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        enc.render(msg)
    elapsed = time.perf_counter() - t
    assert elapsed < 0.5
    assert _rss_mb() - before < 20, "no copy of the message may be made"
    e = info.value
    assert isinstance(e, HarmonyError) and isinstance(e, RuntimeError)
    assert e.limit == "message text" and e.cap == 8 << 20 and e.actual == 256 << 20
    assert "message text" in str(e) and str(8 << 20) in str(e)


@pytest.mark.parametrize(
    "field,make",
    [
        ("max_message_bytes", lambda n: Conversation.from_messages([_big_message(n)])),
        ("max_conversation_bytes", lambda n: Conversation.from_messages([_big_message(n // 2), _big_message(n - n // 2)])),
        ("max_messages", lambda n: Conversation.from_messages([_big_message(1)] * n)),
    ],
)
def test_limits_at_cap_boundaries(enc, field, make):
    cap = 1000
    limits = Limits(**{field: cap})
    for n, ok in ((cap - 1, True), (cap, True), (cap + 1, False)):
        convo = make(n)
        if ok:
            enc.render_conversation(convo, limits=limits)
        else:
            with pytest.raises(LimitExceeded) as info:
                enc.render_conversation(convo, limits=limits)
            assert info.value.cap == cap


def test_prompt_token_limit_per_call_and_per_encoding():
    enc = llama_harmony.load_harmony_encoding(limits=Limits(max_prompt_tokens=20))
    convo = Conversation.from_messages([Message.from_role_and_content(Role.USER, "word " * 50)])
    with pytest.raises(LimitExceeded, match="prompt tokens"):
        enc.render_conversation(convo)
    assert len(enc.render_conversation(convo, limits=Limits())) > 20
    enc.limits = Limits()
    assert len(enc.render_conversation(convo)) > 20


def test_schema_depth_limit(enc):
    schema: dict = {"type": "string"}
    for _ in range(100):
        schema = {"type": "object", "properties": {"a": schema}}
    dev = DeveloperContent.new().with_function_tools([ToolDescription.new("f", "deep", schema)])
    convo = Conversation.from_messages([Message.from_role_and_content(Role.DEVELOPER, dev)])
    with pytest.raises(LimitExceeded, match="JSON Schema depth"):
        enc.render_conversation(convo)
    # a very deep one (would overflow a recursive converter) fails the same way
    deep: dict = {}
    cur = deep
    for _ in range(100_000):
        cur["x"] = {}
        cur = cur["x"]
    dev = DeveloperContent.new().with_function_tools([ToolDescription.new("f", "deep", deep)])
    with pytest.raises(LimitExceeded):
        enc.render(Message.from_role_and_content(Role.DEVELOPER, dev))
    assert enc.render_conversation(convo, limits=Limits(max_schema_depth=1000))


def test_limits_object():
    lim = Limits()
    assert lim.max_prompt_tokens == 131072
    assert Limits(max_messages=5).max_messages == 5
    assert lim.replace(max_messages=7).max_messages == 7
    assert "max_prompt_tokens=131072" in repr(lim)
    assert set(lim.as_dict()) >= {"max_prompt_tokens", "max_message_bytes", "max_conversation_bytes", "max_messages", "max_schema_depth"}


def test_render_errors_are_typed(enc):
    with pytest.raises(HarmonyError, match="Tools should have a name"):
        enc.render(Message.from_role_and_content(Role.TOOL, "x"))
    with pytest.raises(HarmonyError, match="SystemContent may only appear in system messages"):
        enc.render(Message.from_role_and_content(Role.USER, SystemContent.new()))
    with pytest.raises(HarmonyError, match="not JSON serializable"):
        enc.render(Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_function_tools([ToolDescription.new("f", "d", {"x": object()})])))
    with pytest.raises(HarmonyError, match="NaN"):
        enc.render(Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_function_tools([ToolDescription.new("f", "d", {"default": float("nan")})])))
    with pytest.raises(ValueError):
        Role("robot")


def _run_in_threads(work, n: int = 8) -> list:
    """Runs ``work`` in ``n`` threads at once; returns the exceptions they raised."""
    errors: list = []

    def guarded():
        try:
            work()
        except Exception as e:  # pragma: no cover - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=guarded) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_threads_give_identical_results(enc):
    convo = Conversation.from_messages(
        [Message.from_role_and_content(Role.SYSTEM, SystemContent.new().with_reasoning_effort(ReasoningEffort.HIGH))]
        + [Message.from_role_and_content(Role.USER if i % 2 else Role.ASSISTANT, f"message {i} " * 50) for i in range(40)]
    )
    expected = enc.render_conversation(convo)
    results: list = []

    def work():
        for _ in range(20):
            results.append(enc.render_conversation(convo))

    assert not _run_in_threads(work)
    assert len(results) == 160 and all(r == expected for r in results)


def test_short_lived_threads_encode_like_the_main_thread(enc):
    """A thread's tokenizer caches go back to a pool when it ends and later threads reuse
    them (a server runs a thread per request): results never depend on which thread, or
    which cache, did the work."""
    text = " ".join(f"w{i % 977} Ωmega {i} 漢字" for i in range(3000))
    expected = enc.encode(text, allowed_special="all")
    for _ in range(3):
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(enc.encode(text, allowed_special="all"))) for _ in range(12)]
        for t in threads[:6]:  # some one after another, then several at once
            t.start()
            t.join()
        for t in threads[6:]:
            t.start()
        for t in threads[6:]:
            t.join()
        assert results == [expected] * 12


def test_compatible_api_roundtrip():
    tools = [ToolDescription.new("get_weather", "Gets weather", {"type": "object", "properties": {"city": {"type": "string"}}})]
    convo = Conversation.from_messages(
        [
            Message.from_role_and_content(Role.SYSTEM, SystemContent.new().with_browser_tool().with_conversation_start_date("2025-06-01")),
            Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_instructions("Be brief").with_function_tools(tools)),
            Message.from_author_and_content(Author.new(Role.TOOL, "functions.get_weather"), "sunny").with_recipient("assistant").with_channel("commentary"),
            Message.from_role_and_contents(Role.USER, [TextContent(text="a"), TextContent(text="b")]),
        ]
    )
    again = Conversation.from_json(convo.to_json())
    assert again == convo
    assert Message.from_dict(convo.messages[2].to_dict()) == convo.messages[2]
    assert ToolNamespaceConfig.browser().name == "browser" and ToolNamespaceConfig.python().tools == []


def test_accepts_openai_harmony_objects(enc):
    """A reference user can pass openai_harmony's own objects to our encoding."""
    import openai_harmony as ref

    m = ref.Message.from_role_and_content(ref.Role.USER, "hi").with_channel("x")
    ours = Message.from_role_and_content(Role.USER, "hi").with_channel("x")
    assert enc.render(m) == enc.render(ours)


def test_million_messages_fail_fast(enc):
    msgs = [Message.from_role_and_content(Role.USER, "hi")] * 1_000_000
    convo = Conversation.from_messages(msgs)
    before = _rss_mb()
    t = time.perf_counter()
    with pytest.raises(LimitExceeded, match="messages") as info:
        enc.render_conversation(convo)
    assert time.perf_counter() - t < 0.5
    assert info.value.actual == 1_000_000 and info.value.cap == 100_000
    assert _rss_mb() - before < 20


def test_prompt_token_cap_stops_early(enc):
    # 4 MB of text (under the byte caps) but far over a small token cap: rendering stops at the
    # cap instead of tokenizing everything.
    convo = Conversation.from_messages([Message.from_role_and_content(Role.USER, "word " * 200_000)] * 4)
    t = time.perf_counter()
    with pytest.raises(LimitExceeded, match="prompt tokens"):
        enc.render_conversation(convo, limits=Limits(max_prompt_tokens=1000))
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize(
    "schema,expected",
    [
        ([1, 2], "any"),
        ("string", "any"),
        ({"type": 5}, "any"),
        ({"type": "object", "properties": 3}, "{\n}"),
        ({"type": "object", "properties": {"a": 1}}, "{\na?: any,\n}"),
        ({"type": "array", "items": "x"}, "any[]"),
        ({"oneOf": "x"}, "any"),
    ],
)
def test_json_schema_that_is_not_a_schema(enc, schema, expected):
    """A tool `parameters` value that is not a valid JSON Schema renders (unknown shapes
    degrade to `any`, as the reference's converter does), never crashes."""
    dev = DeveloperContent.new().with_function_tools([ToolDescription.new("f", "d", schema)])
    text = enc.decode(enc.render(Message.from_role_and_content(Role.DEVELOPER, dev)))
    assert f"type f = (_: {expected}) => any;" in text


def test_threads_render_and_parse_shared_encoding(enc):
    """One encoding shared by 8 threads, each rendering and parsing: identical results."""
    from llama_harmony import StreamableParser

    convo = Conversation.from_messages(
        [Message.from_role_and_content(Role.ASSISTANT, f"thought {i} " * 30).with_channel("analysis") for i in range(10)]
        + [Message.from_role_and_content(Role.ASSISTANT, "done").with_channel("final")]
    )
    ids = enc.render_conversation(convo, llama_harmony.RenderConversationConfig(auto_drop_analysis=False))
    expected = [m.to_dict() for m in enc.parse_messages_from_completion_tokens(ids)]
    out: list = []

    def work():
        for _ in range(10):
            got = enc.render_conversation(convo, llama_harmony.RenderConversationConfig(auto_drop_analysis=False))
            p = StreamableParser(enc, None, strict=False)
            p.feed(got)
            p.finish()
            out.append((got == ids, [m.to_dict() for m in p.messages] == expected))

    assert not _run_in_threads(work)
    assert len(out) == 80 and all(a and b for a, b in out)
    assert [m["content"][0]["text"] for m in expected][-1] == "done"


def test_model_objects_behave_like_records():
    m = Message(Author(Role.USER), [TextContent("hi")], channel="x")
    assert m == Message(author=Author(role=Role.USER), content=[TextContent(text="hi")], channel="x")
    assert m != Message(Author(Role.USER), [TextContent("hi")])
    assert repr(TextContent("a")) == "TextContent(text='a')"
    assert Message(Author(Role.USER)).content == [] and Message(Author(Role.USER)).content is not Message(Author(Role.USER)).content
    assert SystemContent().channel_config.valid_channels == ["analysis", "commentary", "final"]
    assert Author("user").role is Role.USER  # plain strings are accepted for roles
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'author'"):
        Message()
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Message(Author(Role.USER), colour="red")
    with pytest.raises(ValueError, match="Unknown role"):
        Author("robot")
    match m:
        case Message(author, content, channel):
            assert channel == "x" and author.role is Role.USER


def test_prompt_token_and_schema_depth_caps_at_boundaries(enc):
    convo = Conversation.from_messages([Message.from_role_and_content(Role.USER, "hello world " * 20)])
    n = len(enc.render_conversation(convo, limits=Limits.unlimited()))
    for cap, ok in ((n - 1, False), (n, True), (n + 1, True)):
        if ok:
            assert len(enc.render_conversation(convo, limits=Limits(max_prompt_tokens=cap))) == n
        else:
            with pytest.raises(LimitExceeded) as info:
                enc.render_conversation(convo, limits=Limits(max_prompt_tokens=cap))
            assert info.value.cap == cap

    def nested(depth: int) -> dict:
        # a JSON value of exactly `depth` levels (a scalar is one level)
        v: object = "leaf"
        for _ in range(depth - 1):
            v = {"a": v}
        return v  # type: ignore[return-value]

    cap = 10
    for depth, ok in ((cap - 1, True), (cap, True), (cap + 1, False)):
        dev = DeveloperContent.new().with_function_tools([ToolDescription.new("f", "d", nested(depth))])
        m = Message.from_role_and_content(Role.DEVELOPER, dev)
        if ok:
            enc.render(m, limits=Limits(max_schema_depth=cap))
        else:
            with pytest.raises(LimitExceeded, match="JSON Schema depth"):
                enc.render(m, limits=Limits(max_schema_depth=cap))


def _vm_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_ten_million_tokens_parse_in_bounded_memory(enc):
    """Ten million generated tokens through one lenient parser: memory stays flat (the parser
    keeps at most max_parsed_total_bytes of finished messages and a bounded token history)."""
    from llama_harmony import StreamableParser

    unit = enc.encode("<|start|>assistant<|channel|>final<|message|>" + "lorem ipsum dolor " * 60 + "<|end|>", allowed_special="all")
    chunk = unit * (100_000 // len(unit) + 1)
    limits = Limits(max_parsed_total_bytes=1 << 20)
    p = StreamableParser(enc, None, strict=False, limits=limits)
    fed = 0
    p.feed(chunk)
    fed += len(chunk)
    base = _vm_rss_mb()
    t = time.perf_counter()
    while fed < 10_000_000:
        p.feed(chunk)
        fed += len(chunk)
    p.finish()
    assert time.perf_counter() - t < 60
    assert _vm_rss_mb() - base < 64, "parser memory must stay bounded"
    assert sum(len(m.content[0].text) for m in p.messages) <= (1 << 20) + 4096


def test_native_stubs_match_the_module():
    """_core.pyi declares exactly what the native module has (classes, their public members,
    functions), so type checkers see the real API."""
    import ast
    from pathlib import Path

    from llama_harmony import _core

    stub = Path(llama_harmony.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    top = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            top.add(node.target.id)
        if not isinstance(node, ast.ClassDef):
            continue
        rt = getattr(_core, node.name)
        declared = {b.name for b in node.body if isinstance(b, ast.FunctionDef)}
        declared |= {b.target.id for b in node.body if isinstance(b, ast.AnnAssign)}
        public = {n for n in dir(rt) if not n.startswith("_")}
        if issubclass(rt, BaseException):
            public -= set(dir(BaseException))
            declared -= {"limit", "cap", "actual"}  # set on each LimitExceeded instance
        assert declared - {"__init__", "__new__"} == public, node.name
    assert {n for n in dir(_core) if not n.startswith("__")} | {"__version__"} == top
