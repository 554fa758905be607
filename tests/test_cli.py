"""The ``llama-harmony`` command line (llama_harmony.cli).

Most tests call ``main([...])`` in-process (returns the exit code); one runs the installed
console script. ``demo --json`` runs end to end on the tiny random-weight model, built into a
temporary cache directory.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from llama_harmony import cli
from llama_harmony import demo_data as d

SUBCOMMANDS = ["demo", "chat", "serve", "render", "parse"]


def run(capsys, *argv: str, stdin: str | None = None, monkeypatch=None):
    """main(argv) -> (exit code, stdout, stderr)."""
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------
# help, version, user errors
# ------------------------------------------------------------------------------------------------

def test_top_level_help_lists_subcommands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for sub in SUBCOMMANDS:
        assert sub in out


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(capsys, sub):
    code, out, err = run(capsys, sub, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: llama-harmony {sub}")


def test_version(capsys):
    import llama_harmony

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"llama-harmony {llama_harmony.__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "usage: llama-harmony" in out


@pytest.mark.parametrize("argv, needle", [
    (["bogus"], "invalid choice"),
    (["serve"], "--model"),
    (["chat"], "--model"),
    (["serve", "--model", "/nonexistent/model.gguf"], "model file not found: /nonexistent/model.gguf"),
    (["chat", "--model", "/nonexistent/model.gguf"], "model file not found"),
    (["serve", "--model", "x.gguf", "--port", "70000"], "--port must be between 0 and 65535"),
    (["chat", "--model", "x.gguf", "--temperature", "hot"], "--temperature must be a number"),
    (["render", "/nonexistent/conv.json"], "no such file: /nonexistent/conv.json"),
    (["parse", "/nonexistent/ids.json"], "no such file"),
    (["render", "--mode", "sideways", "-"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llama-harmony") and needle in lines[0]
    assert "Traceback" not in err


def test_model_that_is_not_gguf_is_a_user_error(capsys, tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llama_harmony.engine")
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a gguf file")
    code, _out, err = run(capsys, "serve", "--model", str(bogus))
    assert code == 2 and "cannot load model" in err and "Traceback" not in err


@pytest.mark.parametrize("stdin, needle", [
    ("", "empty"),
    ("{nope", "invalid JSON"),
    ("[1, 2]", '"messages" array'),
    ('{"messages": [{"role": "wizard", "content": [{"type": "text", "text": "x"}]}]}', "not a valid Harmony"),
])
def test_render_bad_input_exit_2(capsys, monkeypatch, stdin, needle):
    code, out, err = run(capsys, "render", "-", stdin=stdin, monkeypatch=monkeypatch)
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("stdin, needle", [
    ("{nope", "invalid JSON"),
    ('["a"]', "not an integer"),
    ("[1, true]", "not an integer: true"),
    ('{"x": 1}', "array of token ids"),
])
def test_parse_bad_input_exit_2(capsys, monkeypatch, stdin, needle):
    code, out, err = run(capsys, "parse", "-", stdin=stdin, monkeypatch=monkeypatch)
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_console_script_runs():
    script = Path(sys.executable).parent / "llama-harmony"
    if not script.exists():
        pytest.skip("console script not installed")
    proc = subprocess.run([str(script), "render", "--bogus-flag"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unrecognized arguments: --bogus-flag" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# render
# ------------------------------------------------------------------------------------------------

HARMONY_CONVERSATION = {"messages": [
    {"role": "system", "content": [{
        "type": "system_content", "model_identity": "You are a test bot.", "reasoning_effort": "Low",
        "knowledge_cutoff": "2024-06", "conversation_start_date": "2025-01-02",
        "channel_config": {"valid_channels": ["analysis", "commentary", "final"], "channel_required": True}}]},
    {"role": "developer", "content": [{
        "type": "developer_content", "instructions": "Be brief.",
        "tools": {"functions": {"name": "functions", "tools": [{
            "name": "ping", "description": "Ping a host.",
            "parameters": {"type": "object", "properties": {"host": {"type": "string"}}, "required": ["host"]}}]}}}]},
    {"role": "user", "content": [{"type": "text", "text": "Ping example.com"}]},
    {"role": "assistant", "channel": "commentary", "recipient": "functions.ping", "content_type": "<|constrain|>json",
     "content": [{"type": "text", "text": '{"host":"example.com"}'}]},
    {"role": "tool", "name": "functions.ping", "channel": "commentary", "recipient": "assistant",
     "content": [{"type": "text", "text": "pong"}]},
]}

# Written out by hand from the Harmony layout (REFERENCE.md sections 2 and 3).
HARMONY_EXPECTED = (
    "<|start|>system<|message|>You are a test bot.\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: 2025-01-02\n"
    "\n"
    "Reasoning: low\n"
    "\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.\n"
    "Calls to these tools must go to the commentary channel: 'functions'.<|end|>"
    "<|start|>developer<|message|># Instructions\n"
    "\n"
    "Be brief.\n"
    "\n"
    "# Tools\n"
    "\n"
    "## functions\n"
    "\n"
    "namespace functions {\n"
    "\n"
    "// Ping a host.\n"
    "type ping = (_: {\n"
    "host: string,\n"
    "}) => any;\n"
    "\n"
    "} // namespace functions<|end|>"
    "<|start|>user<|message|>Ping example.com<|end|>"
    '<|start|>assistant to=functions.ping<|channel|>commentary <|constrain|>json<|message|>{"host":"example.com"}<|call|>'
    "<|start|>functions.ping to=assistant<|channel|>commentary<|message|>pong<|end|>"
)


@pytest.fixture(scope="module")
def enc():
    from llama_harmony import load_harmony_encoding

    return load_harmony_encoding()


def test_render_harmony_conversation_file(capsys, tmp_path, enc):
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(HARMONY_CONVERSATION))
    code, out, err = run(capsys, "render", str(path))
    assert code == 0, err
    res = json.loads(out)
    assert set(res) == {"tokens", "text", "count"}
    assert res["text"] == HARMONY_EXPECTED + "<|start|>assistant"
    assert res["count"] == len(res["tokens"])
    assert res["tokens"] == enc.encode(res["text"], allowed_special="all")
    assert res["tokens"][-2:] == [200006, 173781]  # <|start|>assistant


def test_render_modes(capsys, monkeypatch):
    convo = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "channel": "final", "content": [{"type": "text", "text": "Hello!"}]},
    ]}
    body = json.dumps(convo)
    expected = {
        "conversation": "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|end|>",
        "training": "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>",
        "completion": "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|end|>"
                      "<|start|>assistant",
    }
    for mode, text in expected.items():
        code, out, err = run(capsys, "render", "--mode", mode, "-", stdin=body, monkeypatch=monkeypatch)
        assert code == 0, err
        assert json.loads(out)["text"] == text


def test_render_user_text_with_markup_stays_text(capsys, monkeypatch):
    convo = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a<|end|>b"}]}]}
    code, out, _ = run(capsys, "render", "--mode", "conversation", "-", stdin=json.dumps(convo), monkeypatch=monkeypatch)
    res = json.loads(out)
    assert code == 0 and res["text"] == "<|start|>user<|message|>a<|end|>b<|end|>"
    assert res["tokens"].count(200007) == 1  # only the real terminator is the special token


def test_detect_format():
    assert cli.detect_format(HARMONY_CONVERSATION) == "harmony"
    assert cli.detect_format({"messages": [{"role": "user", "content": "hi"}]}) == "openai"
    assert cli.detect_format({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                              "tools": []}) == "openai"
    assert cli.detect_format({"messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}]}) == "openai"
    assert cli.detect_format({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}) \
        == "harmony"


OPENAI_REQUEST = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Ping example.com"},
    ],
    "tools": [{"type": "function", "function": {
        "name": "ping", "description": "Ping a host.",
        "parameters": {"type": "object", "properties": {"host": {"type": "string"}}, "required": ["host"]}}}],
    "reasoning_effort": "low",
}


def test_render_openai_request(capsys, monkeypatch, enc):
    pytest.importorskip("llama_harmony.openai_format")
    code, out, err = run(capsys, "render", "-", stdin=json.dumps(OPENAI_REQUEST), monkeypatch=monkeypatch)
    assert code == 0, err
    res = json.loads(out)
    text = res["text"]
    # Hand-derived: the generated system message (default identity, effort, functions line);
    # the OpenAI system message becomes the developer instructions, with the tools.
    assert text == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\n"
        "\n"
        "Reasoning: low\n"
        "\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.\n"
        "Calls to these tools must go to the commentary channel: 'functions'.<|end|>"
        "<|start|>developer<|message|># Instructions\n\nBe brief.\n\n# Tools\n\n## functions\n\n"
        "namespace functions {\n\n// Ping a host.\ntype ping = (_: {\nhost: string,\n}) => any;\n\n"
        "} // namespace functions<|end|>"
        "<|start|>user<|message|>Ping example.com<|end|>"
        "<|start|>assistant"
    )
    assert res["tokens"] == enc.encode(text, allowed_special="all") and res["count"] == len(res["tokens"])


def test_render_openai_history_cot_policy(capsys, monkeypatch):
    pytest.importorskip("llama_harmony.openai_format")
    req = {"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."},
        {"role": "user", "content": "Bye"},
    ], "reasoning_effort": "high"}
    tail_spec = ("<|start|>user<|message|>Hi<|end|>"
                 "<|start|>assistant<|channel|>final<|message|>Hello!<|end|>"
                 "<|start|>user<|message|>Bye<|end|><|start|>assistant")
    code, out, _ = run(capsys, "render", "-", stdin=json.dumps(req), monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["text"].endswith("<|end|>" + tail_spec)
    assert "\nReasoning: high\n" in json.loads(out)["text"]
    code, out, _ = run(capsys, "render", "--cot-policy", "keep", "-", stdin=json.dumps(req), monkeypatch=monkeypatch)
    assert code == 0 and "<|start|>assistant<|channel|>analysis<|message|>Greet back.<|end|>" in json.loads(out)["text"]


def test_render_openai_bad_message_exit_2(capsys, monkeypatch):
    pytest.importorskip("llama_harmony.openai_format")
    bad = {"messages": [{"role": "user", "content": "hi"},
                        {"role": "tool", "tool_call_id": "call_unknown", "content": "x"}], "tools": []}
    code, out, err = run(capsys, "render", "-", stdin=json.dumps(bad), monkeypatch=monkeypatch)
    assert code == 2 and out == "" and "call_unknown" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# parse
# ------------------------------------------------------------------------------------------------

def test_parse_rendered_messages_round_trip(capsys, monkeypatch):
    convo = {"messages": HARMONY_CONVERSATION["messages"][2:]}  # user, tool call, tool result
    code, out, _ = run(capsys, "render", "--mode", "conversation", "-", stdin=json.dumps(convo),
                       monkeypatch=monkeypatch)
    assert code == 0
    ids = json.loads(out)["tokens"]
    code, out, err = run(capsys, "parse", "-", stdin=json.dumps(ids), monkeypatch=monkeypatch)
    assert code == 0, err
    msgs = json.loads(out)["messages"]
    assert [(m["role"], m.get("channel"), m.get("recipient"), m.get("content_type")) for m in msgs] == [
        ("user", None, None, None),
        ("assistant", "commentary", "functions.ping", "<|constrain|>json"),
        ("tool", "commentary", "assistant", None),
    ]
    assert [m["content"] for m in msgs] == [[{"type": "text", "text": "Ping example.com"}],
                                            [{"type": "text", "text": '{"host":"example.com"}'}],
                                            [{"type": "text", "text": "pong"}]]
    assert msgs[2]["name"] == "functions.ping"
    # render's output object is accepted as parse input too
    code, out2, _ = run(capsys, "parse", "-", stdin=json.dumps({"tokens": ids}), monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out2) == json.loads(out)


def test_parse_completion_with_role(capsys, monkeypatch, enc):
    ids = enc.encode(d.TURN2_COMPLETION, allowed_special="all")
    code, out, err = run(capsys, "parse", "--role", "assistant", "-", stdin=json.dumps(ids), monkeypatch=monkeypatch)
    assert code == 0, err
    msgs = json.loads(out)["messages"]
    assert [(m["role"], m["channel"], m["content"][0]["text"]) for m in msgs] == [
        ("assistant", "analysis", d.EXPECTED_TURN2_ANALYSIS),
        ("assistant", "final", d.EXPECTED_FINAL),
    ]
    # --text takes Harmony markup directly
    code, out2, _ = run(capsys, "parse", "--text", "--role", "assistant", "-", stdin=d.TURN2_COMPLETION,
                        monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out2) == json.loads(out)


def test_parse_strict_vs_lenient(capsys, monkeypatch, enc):
    # Stray text between messages: the reference (strict) raises, lenient mode recovers.
    ids = enc.encode("<|start|>assistant<|channel|>final<|message|>Hi<|end|>oops", allowed_special="all")
    code, out, err = run(capsys, "parse", "--strict", "-", stdin=json.dumps(ids), monkeypatch=monkeypatch)
    assert code == 2 and out == "" and "cannot parse" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "parse", "-", stdin=json.dumps(ids), monkeypatch=monkeypatch)
    assert code == 0, err
    msgs = json.loads(out)["messages"]
    assert msgs[0]["channel"] == "final" and msgs[0]["content"] == [{"type": "text", "text": "Hi"}]


# ------------------------------------------------------------------------------------------------
# demo (real llama.cpp on the tiny model)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    pytest.importorskip("llama_harmony.engine")
    return tmp_path_factory.mktemp("demo-cache")


def test_demo_json_end_to_end(capsys, demo_cache):
    code, out, err = run(capsys, "demo", "--json", "--cache-dir", str(demo_cache))
    assert code == 0, err
    res = json.loads(out)
    assert "random" in res["notice"].lower() and "gibberish" in res["notice"]
    assert res["model"]["random_weights"] is True and res["model"]["built"] is True
    assert Path(res["model"]["path"]).parent == demo_cache
    assert "%" in err  # the progress bar went to stderr while building

    prompt = res["prompt"]
    assert prompt["count"] == len(prompt["tokens"]) > 50
    assert prompt["text"].startswith("<|start|>system<|message|>")
    assert "type get_weather = (_: {" in prompt["text"] and prompt["text"].endswith("<|start|>assistant")

    free = res["free_run"]["response"]
    assert free["object"] == "chat.completion" and free["usage"]["completion_tokens"] <= 16

    replay = res["replay"]
    assert replay["analysis"] == [d.EXPECTED_TURN1_ANALYSIS, d.EXPECTED_TURN2_ANALYSIS]
    assert [(c["name"], c["arguments"]) for c in replay["tool_calls"]] == [
        (d.EXPECTED_TOOL_NAME, d.EXPECTED_TOOL_ARGUMENTS)]
    assert json.loads(replay["tool_calls"][0]["arguments"]) == {"location": "Tokyo, Japan", "unit": "celsius"}
    assert replay["final"] == d.EXPECTED_FINAL
    assert replay["matches_recording"] is True
    t1, t2 = replay["turns"]
    assert t1["forced_tokens"] == t1["token_count"] and t2["forced_tokens"] == t2["token_count"]
    assert t1["finish_reason"] == "tool_calls" and t2["finish_reason"] == "stop"
    assert [(m["channel"], m["recipient"], m["content_type"]) for m in t1["parsed"]] == [
        ("analysis", None, None), ("commentary", "functions.get_weather", "<|constrain|>json")]
    msg2 = t2["response"]["choices"][0]["message"]
    assert msg2["content"] == d.EXPECTED_FINAL and msg2["reasoning_content"] == d.EXPECTED_TURN2_ANALYSIS
    assert t1["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_demo_human_output_cached_and_plain(capsys, demo_cache):
    # Second run: the model is cached (no progress bar); --no-color gives plain text.
    code, out, err = run(capsys, "demo", "--no-color", "--cache-dir", str(demo_cache))
    assert code == 0, err
    assert "\x1b[" not in out and "%" not in err
    assert "(cached)" in out and "RANDOM weights" in out and "gibberish" in out
    assert d.EXPECTED_FINAL in out and "get_weather(" in out
    assert "recovered the recorded analysis, tool call and final answer: yes" in out


# ------------------------------------------------------------------------------------------------
# chat (REPL logic with a scripted engine; the model loading is covered by demo and the server)
# ------------------------------------------------------------------------------------------------

class ScriptedEngine:
    """Streams a reasoning delta, then either a tool call (if asked for weather) or content."""

    def __init__(self):
        self.calls: List[Dict[str, Any]] = []

    def create_chat_completion(self, messages, *, stream=False, **kw):
        assert stream
        self.calls.append({"messages": [dict(m) for m in messages], **kw})
        return self._gen(messages)

    def _gen(self, messages):
        def chunk(delta, finish=None):
            return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta,
                                                                     "finish_reason": finish}]}

        yield chunk({"role": "assistant"})
        yield chunk({"reasoning_content": "thinking..."})
        last = messages[-1]
        if last["role"] == "user" and "weather" in last["content"]:
            yield chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                         "function": {"name": "get_weather", "arguments": ""}}]})
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":"Oslo"}'}}]})
            yield chunk({}, "tool_calls")
        else:
            yield chunk({"content": "Hello"})
            yield chunk({"content": " there."})
            yield chunk({}, "stop")


def test_chat_repl(capsys, monkeypatch, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    engine = ScriptedEngine()
    monkeypatch.setattr(cli, "_load_engine", lambda *a, **k: engine)
    script = "\n".join([
        "hi",
        "/effort high",
        "weather in Oslo?",
        '{"temp": 3}',          # the tool result, asked for after the tool call
        "/reset",
        "/help",
        "/effort nonsense",
        "again",
        "/quit",
        "never sent",
    ]) + "\n"
    code, out, err = run(capsys, "chat", "--model", str(model), "--system", "Be nice.", "--max-tokens", "50",
                         stdin=script, monkeypatch=monkeypatch)
    assert code == 0, err
    assert "\x1b[" not in out  # not a TTY: no ANSI
    assert "[reasoning] thinking...\nHello there.\n" in out
    assert '[tool call] get_weather({"location":"Oslo"})' in out
    assert "/effort low|medium|high" in out  # /help, and the usage line for a bad /effort
    calls = engine.calls
    assert len(calls) == 4  # hi, weather (tool call), after the tool result, again
    assert calls[0]["reasoning_effort"] is None and calls[0]["max_tokens"] == 50
    assert calls[1]["reasoning_effort"] == "high"
    assert calls[0]["messages"] == [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "hi"}]
    # after the tool call: the assistant's call (with its reasoning) and the tool result
    hist = calls[2]["messages"]
    assert hist[-2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"location":"Oslo"}'}
    assert hist[-2]["reasoning_content"] == "thinking..."
    assert hist[-1] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'}
    # /reset kept only the system message
    assert calls[3]["messages"] == [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "again"}]


def test_chat_eof_ends_session(capsys, monkeypatch, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    engine = ScriptedEngine()
    monkeypatch.setattr(cli, "_load_engine", lambda *a, **k: engine)
    code, out, _ = run(capsys, "chat", "--model", str(model), stdin="hello\n", monkeypatch=monkeypatch)
    assert code == 0 and "Hello there." in out and len(engine.calls) == 1


@pytest.mark.parametrize("tools, needle", [
    ('[{"type": "function", "function": {"description": "no name"}}]', "tools[0].function.name"),
    ('[{"type": "function", "function": {"name": "f", "parameters": 5}}]', "tools[0].function.parameters"),
    ('[{"type": "retrieval"}]', "tools[0].type"),
])
def test_chat_tools_structure_checked_at_start(capsys, monkeypatch, tmp_path, tools, needle):
    """A tools file the engine cannot use stops the chat at start-up (exit 2, the field named),
    before the model is loaded, not on every turn."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    loaded = []
    monkeypatch.setattr(cli, "_load_engine", lambda *a, **k: loaded.append(1))
    path = tmp_path / "tools.json"
    path.write_text(tools)
    code, out, err = run(capsys, "chat", "--model", str(model), "--tools", str(path), stdin="hi\n",
                         monkeypatch=monkeypatch)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and not loaded


def test_chat_bad_tools_file_exit_2(capsys, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    tools = tmp_path / "tools.json"
    tools.write_text('{"not": "a list"}')
    code, _out, err = run(capsys, "chat", "--model", str(model), "--tools", str(tools))
    assert code == 2 and "array of OpenAI tools" in err


# ------------------------------------------------------------------------------------------------
# serve (the console script, as a subprocess, on the tiny model)
# ------------------------------------------------------------------------------------------------

def test_serve_subprocess(demo_cache):
    import re
    import select
    import signal
    import urllib.request

    from llama_harmony import load_harmony_encoding
    from llama_harmony.tiny_model import N_VOCAB, ensure_tiny_model

    model = ensure_tiny_model(load_harmony_encoding().token_bytes_table(N_VOCAB), cache_dir=demo_cache)
    proc = subprocess.Popen([sys.executable, "-m", "llama_harmony.cli", "serve", "--model", str(model),
                             "--port", "0", "--ctx", "512", "--model-name", "tiny", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline, seen = None, time.monotonic() + 60, ""
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                line = proc.stderr.readline()
                seen += line
                m = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", line)
                if m:
                    url = m.group(1)
        assert url, seen
        with urllib.request.urlopen(url + "/health", timeout=30) as r:
            assert r.status == 200 and json.load(r)["model"] == "tiny"
        req = urllib.request.Request(url + "/v1/chat/completions", method="POST",
                                     data=json.dumps({"messages": [{"role": "user", "content": "hi"}],
                                                      "max_tokens": 4}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.load(r)
        assert body["object"] == "chat.completion" and body["model"] == "tiny"
        assert body["usage"]["completion_tokens"] <= 4
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def test_chat_real_model_smoke(capsys, monkeypatch, demo_cache):
    # Real llama.cpp on the tiny model: its text is random, so only check the REPL runs a
    # streamed turn, obeys /effort and /quit, and prints no ANSI when not on a TTY.
    from llama_harmony import load_harmony_encoding
    from llama_harmony.tiny_model import N_VOCAB, ensure_tiny_model

    model = ensure_tiny_model(load_harmony_encoding().token_bytes_table(N_VOCAB), cache_dir=demo_cache)
    code, out, err = run(capsys, "chat", "--model", str(model), "--ctx", "512", "--max-tokens", "4",
                         "--threads", "1", "--seed", "1", "--reasoning-effort", "low",
                         stdin="/effort high\nhello\n/quit\n", monkeypatch=monkeypatch)
    assert code == 0, err
    assert "(reasoning effort: high)" in out and "\x1b[" not in out
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# parse: lenient by default, never an error; repairs, cuts and truncation reported on stderr
# ------------------------------------------------------------------------------------------------

def test_parse_out_of_range_ids_are_repaired_not_errors(capsys, monkeypatch):
    code, out, err = run(capsys, "parse", "-", stdin="[200005, 300000, 5, 200012]", monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["messages"]
    assert err.startswith("llama-harmony parse: 4 repairs\n") and len(err.strip().splitlines()) == 5
    ids = [2**40, -1, 2**32, 2**70]
    stdin = json.dumps([200006, 173781, 200008] + ids + [200007])
    code, out, err = run(capsys, "parse", "-", stdin=stdin, monkeypatch=monkeypatch)
    assert code == 0
    assert json.loads(out)["messages"][0]["content"][0]["text"] == "\ufffd" * 4
    lines = err.strip().splitlines()
    assert lines[0] == "llama-harmony parse: 4 repairs"
    assert lines[1:] == [f"  repair (message 0): invalid_token: id {i} is not in the vocabulary (read as U+FFFD)"
                         for i in ids]
    # the reference's parser cannot read them: --strict says so
    code, out, err = run(capsys, "parse", "--strict", "-", stdin=stdin, monkeypatch=monkeypatch)
    assert code == 2 and out == "" and "token #3 = 1099511627776 is outside 0..4294967295" in err


def test_parse_clean_stream_is_silent_and_truncation_reported(capsys, monkeypatch, enc):
    ids = enc.encode("<|channel|>final<|message|>Hi<|return|>", allowed_special="all")
    code, out, err = run(capsys, "parse", "--role", "assistant", "-", stdin=json.dumps(ids), monkeypatch=monkeypatch)
    assert code == 0 and err == ""
    code, out, err = run(capsys, "parse", "--role", "assistant", "-", stdin=json.dumps(ids[:-1]),
                         monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["messages"][0]["content"][0]["text"] == "Hi"
    assert err.splitlines() == ["llama-harmony parse: truncated",
                                "  truncated: the stream ended inside a message (no <|end|>, <|return|> or <|call|>)"]


def test_parse_text_over_the_message_cap_is_reported_and_the_cap_can_be_raised(capsys, tmp_path):
    body = "word " * ((9 << 20) // 5)  # 9 MiB: over the default 8 MiB cap of a parsed message
    path = tmp_path / "big.txt"
    path.write_text(f"<|start|>assistant<|channel|>final<|message|>{body}<|return|>")
    code, out, err = run(capsys, "parse", "--text", str(path))
    assert code == 0
    assert len(json.loads(out)["messages"][0]["content"][0]["text"]) == 8 << 20
    assert err.splitlines() == [
        "llama-harmony parse: 1 limit cut",
        "  limit cut (message 0): message_too_long: its text was cut at 8.0 MiB (8,388,608 bytes) "
        "(raise it with --max-parsed-message-bytes N)"]
    for opt in (["--max-parsed-message-bytes", "16M"], ["--limit", "max_parsed_message_bytes=16777216"]):
        code, out, err = run(capsys, "parse", "--text", *opt, str(path))
        assert code == 0 and err == "" and json.loads(out)["messages"][0]["content"][0]["text"] == body


# ------------------------------------------------------------------------------------------------
# limits from the command line
# ------------------------------------------------------------------------------------------------

def test_render_limits_named_with_units_and_raisable(capsys, tmp_path):
    convo = {"messages": [{"role": "user", "content": "x" * (9 << 20)}]}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(convo))
    code, out, err = run(capsys, "render", str(path))
    assert code == 2 and out == ""
    assert err.strip() == ("llama-harmony: error: message text is 9.0 MiB (9,437,184 bytes), over the limit of "
                           "8.0 MiB (8,388,608 bytes): raise it with --max-message-bytes N "
                           "(or --limit max_message_bytes=N)")
    code, out, err = run(capsys, "render", "--max-message-bytes", "10M", str(path))
    assert code == 2 and "tokens, over the limit of 131,072 tokens: raise it with " \
                         "--max-prompt-tokens N" in err
    code, out, err = run(capsys, "render", "--max-message-bytes", "10M", "--limit", "max_prompt_tokens=4M", str(path))
    assert code == 0 and err == "" and json.loads(out)["count"] > 131_072


@pytest.mark.parametrize("argv, needle", [
    # (the renderer stops counting at the cap + 1)
    (["--max-prompt-tokens", "3"], "the rendered prompt is 4 tokens, over the limit of 3 tokens: raise it with "
                                   "--max-prompt-tokens N"),
    (["--limit", "max_prompt_tokens=3"], "over the limit of 3 tokens"),
    (["--limit", "max-prompt-tokens=3"], "over the limit of 3 tokens"),
    (["--limit", "max_messages=1"], "the conversation is 2 messages, over the limit of 1 messages"),
    (["--limit", "colour=3"], "--limit: unknown limit 'colour' (one of max_prompt_tokens, "),
    (["--limit", "max_prompt_tokens"], "--limit takes NAME=VALUE"),
    (["--limit", "max_prompt_tokens=lots"], "must be a positive integer"),
    (["--max-message-bytes", "0"], "--max-message-bytes must be at least 1"),
])
def test_render_limit_options(capsys, monkeypatch, argv, needle):
    stdin = json.dumps({"messages": [{"role": "user", "content": "hello"}, {"role": "user", "content": "again"}]})
    code, out, err = run(capsys, "render", "--format", "harmony", *argv, "-", stdin=stdin, monkeypatch=monkeypatch)
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# render: wrong shapes, Harmony input with request keys, BOM, stdin like a file
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["auto", "openai", "harmony"])
@pytest.mark.parametrize("body, needle", [
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content must be a string or a"),
    ({"messages": [5]}, "messages[0] must be a"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": True}]}]}, "messages[0].content[0]"),
])
def test_render_wrong_shapes_name_the_field(capsys, monkeypatch, fmt, body, needle):
    code, out, err = run(capsys, "render", "--format", fmt, "-", stdin=json.dumps(body), monkeypatch=monkeypatch)
    assert code == 2 and out == "" and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "object is not" not in err and "True" not in err


def test_render_tools_of_wrong_shape(capsys, monkeypatch):
    body = {"messages": [{"role": "user", "content": "x"}], "tools": 5}
    for fmt in ("auto", "openai"):
        code, out, err = run(capsys, "render", "--format", fmt, "-", stdin=json.dumps(body), monkeypatch=monkeypatch)
        assert code == 2 and "tools must be an array, not number 5" in err


@pytest.mark.parametrize("extra", [{"tools": [{"type": "function", "function": {"name": "f"}}]},
                                   {"reasoning_effort": "high"}])
def test_render_harmony_refuses_request_keys(capsys, monkeypatch, extra):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], **extra}
    code, out, err = run(capsys, "render", "--format", "harmony", "-", stdin=json.dumps(body),
                         monkeypatch=monkeypatch)
    key = next(iter(extra))
    assert code == 2 and out == "" and f'cannot use "{key}"' in err and "--format openai" in err
    # read as a request, the same input uses them
    code, out, err = run(capsys, "render", "--format", "openai", "-", stdin=json.dumps(body), monkeypatch=monkeypatch)
    assert code == 0
    text = json.loads(out)["text"]
    assert ("type f = () => any;" in text) if key == "tools" else ("Reasoning: high" in text)


def test_render_openai_empty_messages_refused_like_the_server(capsys, monkeypatch):
    from llama_harmony.openai_request import OpenAIFormatError, messages_to_conversation

    with pytest.raises(OpenAIFormatError) as ei:  # what the server's request mapping raises
        messages_to_conversation([])
    code, out, err = run(capsys, "render", "--format", "openai", "-", stdin='{"messages": []}',
                         monkeypatch=monkeypatch)
    assert code == 2 and str(ei.value) in err and ei.value.param == "messages"
    # an empty Harmony conversation is a valid conversation
    code, out, err = run(capsys, "render", "--format", "harmony", "-", stdin='{"messages": []}',
                         monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["text"] == "<|start|>assistant"


def _cli_process(args: List[str], stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llama_harmony.cli", *args], input=stdin, capture_output=True,
                          timeout=120)


def test_stdin_and_file_read_alike_bom_included(tmp_path):
    body = json.dumps({"messages": [{"role": "user", "content": "héllo"}]}).encode()
    for data in (body, b"\xef\xbb\xbf" + body):
        path = tmp_path / "in.json"
        path.write_bytes(data)
        from_file = _cli_process(["render", str(path)], b"")
        from_stdin = _cli_process(["render", "-"], data)
        assert from_file.returncode == from_stdin.returncode == 0, from_stdin.stderr
        assert from_file.stdout == from_stdin.stdout and "héllo" in json.loads(from_stdin.stdout)["text"]
    bad = b'{"messages": "\xff"}'
    path.write_bytes(bad)
    from_file, from_stdin = _cli_process(["render", str(path)], b""), _cli_process(["render", "-"], bad)
    assert from_file.returncode == from_stdin.returncode == 2
    assert b"is not UTF-8 text" in from_file.stderr and b"stdin is not UTF-8 text" in from_stdin.stderr


# ------------------------------------------------------------------------------------------------
# chat: context overflow advice in the CLI's terms (real llama.cpp, tiny model)
# ------------------------------------------------------------------------------------------------

def test_chat_context_overflow_names_ctx(capsys, monkeypatch, demo_cache):
    from llama_harmony import load_harmony_encoding
    from llama_harmony.tiny_model import N_VOCAB, ensure_tiny_model

    model = ensure_tiny_model(load_harmony_encoding().token_bytes_table(N_VOCAB), cache_dir=demo_cache)
    code, out, err = run(capsys, "chat", "--model", str(model), "--ctx", "256", "--max-tokens", "4",
                         "--threads", "1", "--system", "word " * 300, stdin="hello\n/quit\n",
                         monkeypatch=monkeypatch)
    assert code == 0, err
    assert "but the context is 256 tokens (--ctx)" in out and "restart the chat with a larger --ctx" in out
    assert "n_ctx" not in out
