"""The Responses API and the built-in tools, end to end.

The real server (FastAPI + uvicorn on 127.0.0.1), the official ``openai`` client
(``client.responses.create / retrieve / delete``, streaming), real llama.cpp with the tiny
gpt-oss model driven by replayed Harmony completions, the real bubblewrap sandbox for python
and the real local-folder browser backend (SQLite FTS5).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from chat_samples import metric
from llama_harmony.engine import HarmonyEngine
from llama_harmony.replay import Replay
from llama_harmony.response_store import ResponseStore
from llama_harmony.server import BackgroundServer, ResponsesRuntime, ServerConfig, create_app
from llama_harmony.tools.browser import LocalFolderBackend
from llama_harmony.tools.python_tool import PythonTool
from llama_harmony.tools.sandbox import PythonSandbox, SandboxLimits

MODEL = "tiny-gpt-oss"
N_CTX = 4096

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = ("<|channel|>analysis<|message|>Need to use function get_weather.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"city":"Paris"}<|call|>')
AFTER = ("<|channel|>analysis<|message|>The tool says sunny.<|end|>"
         "<|start|>assistant<|channel|>final<|message|>It is sunny in Paris.<|return|>")
PY_CALL = ("<|channel|>analysis<|message|>Compute it with python.<|end|>"
           "<|start|>assistant<|channel|>analysis to=python code<|message|>{code}<|call|>")
PY_ANSWER = "<|channel|>analysis<|message|>The tool answered.<|end|><|start|>assistant<|channel|>final<|message|>Done.<|return|>"


def py_call(code: str) -> str:
    return PY_CALL.replace("{code}", code)


@pytest.fixture(scope="module")
def engine(tiny_path, enc):
    return HarmonyEngine.from_path(tiny_path, n_ctx=N_CTX, n_batch=512, n_threads=2, encoding=enc)


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kb")
    (folder / "walrus.md").write_text("# Walrus facts\n\nField notes.\nThe quantum walrus migration starts in May.\n")
    (folder / "otters.txt").write_text("Otters hold hands while they sleep.\n")
    (folder / "page.html").write_text("<html><head><title>Tides</title></head><body><p>High tide at noon.</p>"
                                      "</body></html>")
    return folder


@pytest.fixture(scope="module")
def srv(engine, kb):
    limits = SandboxLimits(cpu_seconds=2, wall_seconds=8, memory_bytes=256 << 20, max_processes=16,
                           max_output_bytes=16 << 10)
    runtime = ResponsesRuntime(ResponseStore(max_count=50), python_tool=PythonTool(PythonSandbox(limits)),
                               browser_backend=LocalFolderBackend(kb), max_tool_rounds=3)
    s = BackgroundServer(create_app(engine, ServerConfig(model_name=MODEL, queue_timeout=60),
                                    responses=runtime)).start()
    yield s
    s.stop()


@pytest.fixture()
def replay(engine):
    def set_replay(*texts):
        engine.replay = Replay(list(texts))
        return engine.replay

    yield set_replay
    engine.replay = None


def client(s) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=120)


# ================================================================================================
# Items, previous_response_id, retrieve, delete
# ================================================================================================

def test_reasoning_function_call_then_answer_with_previous_response_id(srv, replay, engine, enc):
    replay(CALL, AFTER)
    c = client(srv)
    r1 = c.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                            reasoning={"effort": "high"})
    assert r1.status == "completed"
    assert [o.type for o in r1.output] == ["reasoning", "function_call"]
    assert r1.output[0].content[0].text == "Need to use function get_weather."
    call = r1.output[1]
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Paris"}')
    assert "Reasoning: high" in enc.decode(engine.last_prompt_ids)

    r2 = c.responses.create(model=MODEL, previous_response_id=r1.id, tools=[WEATHER], reasoning={"effort": "high"},
                            input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky":"sunny"}'}])
    assert r2.output_text == "It is sunny in Paris."
    prompt = enc.decode(engine.last_prompt_ids)
    # The current tool chain's reasoning and the call are kept, then the tool's result.
    assert "Need to use function get_weather." in prompt
    assert '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"sky":"sunny"}' in prompt
    assert r2.usage.input_tokens_details.cached_tokens > r1.usage.input_tokens  # the chain's prefix was reused
    assert r2.usage.output_tokens_details.reasoning_tokens > 0

    got = c.responses.retrieve(r2.id)
    assert got.id == r2.id and got.output_text == "It is sunny in Paris."
    deleted = c.responses.delete(r2.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r2.id)
    with pytest.raises(openai.NotFoundError) as e:
        c.responses.create(model=MODEL, previous_response_id=r2.id, input="more")
    assert e.value.body["param"] == "previous_response_id"


def test_streaming_events_in_order_and_text_matches(srv, replay):
    replay(CALL, AFTER)
    c = client(srv)
    events = list(c.responses.create(model=MODEL, input="Weather?", tools=[WEATHER], stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for kind in ("response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
                 "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
                 "response.function_call_arguments.delta", "response.function_call_arguments.done"):
        assert kind in types, kind
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == '{"city":"Paris"}'
    final = events[-1].response
    call = final.output[-1]
    events2 = list(c.responses.create(model=MODEL, previous_response_id=final.id, tools=[WEATHER], stream=True,
                                      input=[{"type": "function_call_output", "call_id": call.call_id,
                                              "output": "sunny"}]))
    types2 = [e.type for e in events2]
    for kind in ("response.output_text.delta", "response.output_text.done"):
        assert kind in types2
    streamed = "".join(e.delta for e in events2 if e.type == "response.output_text.delta")
    done = [e.text for e in events2 if e.type == "response.output_text.done"]
    assert streamed == done[0] == events2[-1].response.output_text == "It is sunny in Paris."


def test_bad_requests_name_the_field(srv):
    c = client(srv)
    cases = [
        (dict(input=[{"type": "function_call_output", "call_id": "nope", "output": "x"}]), "input[0].call_id"),
        (dict(input="hi", tools=[{"type": "file_search"}]), "tools[0].type"),
        (dict(input=[{"type": "message", "role": "user", "content": [{"type": "input_image"}]}]),
         "input[0].content[0].type"),
        (dict(input="hi", max_output_tokens=0), "max_output_tokens"),
        (dict(input="hi", reasoning={"effort": "extreme"}), "reasoning.effort"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(model=MODEL, **kwargs)
        assert e.value.body["param"] == param, (kwargs, e.value.body)


def test_token_timing_metrics_move(srv, replay):
    names = ("llama_harmony_time_to_first_token_seconds_count", "llama_harmony_time_per_output_token_seconds_count")
    before = {n: metric(srv.url, n) for n in names}
    replay("<|channel|>final<|message|>" + "word " * 10 + "<|return|>")
    r = client(srv).responses.create(model=MODEL, input="Talk.")
    assert r.status == "completed"
    # the first token as TTFT, every later one as a time between tokens
    assert metric(srv.url, names[0]) == before[names[0]] + 1
    assert metric(srv.url, names[1]) == before[names[1]] + r.usage.output_tokens - 1


def test_max_output_tokens_gives_incomplete(srv, replay):
    replay("<|channel|>final<|message|>" + "word " * 50 + "<|return|>")
    r = client(srv).responses.create(model=MODEL, input="Talk.", max_output_tokens=8)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 8


@pytest.mark.parametrize("completion, text", [
    ("<|channel|>commentary ––commentary<|message|>odd header<|end|>"
     "<|start|>assistant<|channel|>final<|message|>answer<|return|>", "answer"),
    ("<|channel|>final<|message|>done<|end|><|return|>", "done"),
    ("Just text with no channel at all.<|return|>", "Just text with no channel at all."),
])
def test_peer_failures_are_content_not_500(srv, replay, completion, text):
    for stream in (False, True):
        replay(completion)
        c = client(srv)
        if stream:
            events = list(c.responses.create(model=MODEL, input="hi", stream=True))
            assert events[-1].type == "response.completed"
            out = events[-1].response.output_text
        else:
            out = c.responses.create(model=MODEL, input="hi").output_text
        assert text in out


# ================================================================================================
# The python tool in the sandbox
# ================================================================================================

def test_python_call_runs_in_the_sandbox_and_42_reaches_the_model(srv, replay, engine, enc):
    replay(py_call("print(6*7)"), PY_ANSWER)
    r = client(srv).responses.create(model=MODEL, input="What is 6*7?", tools=[{"type": "code_interpreter",
                                                                              "container": {"type": "auto"}}])
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["reasoning", "code_interpreter_call", "reasoning", "message"]
    ci = r.output[1]
    assert ci.code == "print(6*7)" and ci.status == "completed"
    assert ci.outputs[0].logs.strip() == "42"
    prompt = enc.decode(engine.last_prompt_ids)
    assert "<|start|>python to=assistant<|channel|>analysis<|message|>42" in prompt
    assert "## python" in prompt  # the system message declares the tool
    assert r.output_text == "Done."


def test_python_streams_code_interpreter_events(srv, replay):
    replay(py_call("print(6*7)"), PY_ANSWER)
    events = list(client(srv).responses.create(model=MODEL, input="6*7?", stream=True,
                                               tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]))
    types = [e.type for e in events]
    for kind in ("response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.delta",
                 "response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting",
                 "response.code_interpreter_call.completed"):
        assert kind in types, kind
    code = "".join(e.delta for e in events if e.type == "response.code_interpreter_call_code.delta")
    assert code == "print(6*7)"


@pytest.fixture()
def listener():
    """A TCP port this test listens on (outside the sandbox), and whether anyone connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(0.2)
    hits = []

    def accept():
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                conn, _ = sock.accept()
                hits.append(1)
                conn.close()
            except OSError:
                if sock.fileno() < 0:
                    return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield sock.getsockname()[1], hits
    sock.close()


ESCAPES = {
    "network": ("import socket\ns=socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\nprint('connected')",
                lambda out: "connected" not in out and ("Error" in out or "refused" in out or "unreachable" in out)),
    # may succeed inside the sandbox (its /tmp is private): what counts is the host file below
    "write outside": ("open('{outside}', 'w').write('x')\nprint('wrote')", None),
    "read the server": ("print(open('{repo}/README.md').read()[:20])",
                        lambda out: "No such file" in out or "Error" in out),
    "fork bomb": ("import os\nwhile True:\n    os.fork()", lambda out: "Execution stopped" in out or "Error" in out),
    "4 GB": ("x = bytearray(4 << 30)\nprint(len(x))", lambda out: "MemoryError" in out or "memory" in out.lower()),
    "infinite loop": ("while True:\n    pass", lambda out: "CPU time" in out or "time limit" in out),
    "100 MB": ("import sys\nsys.stdout.write('x' * (100 << 20))", lambda out: "output" in out.lower()),
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_escape_attempts_are_contained_and_reported(srv, replay, engine, enc, listener, tmp_path, name):
    port, hits = listener
    outside = tmp_path / "escaped.txt"
    repo = Path(__file__).resolve().parents[1]
    code, ok = ESCAPES[name]
    code = code.replace("{port}", str(port)).replace("{outside}", str(outside)).replace("{repo}", str(repo))
    replay(py_call(code), PY_ANSWER)
    r = client(srv).responses.create(model=MODEL, input="run it",
                                     tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    ci = next(o for o in r.output if o.type == "code_interpreter_call")
    prompt = enc.decode(engine.last_prompt_ids)
    tool_message = prompt.split("<|start|>python to=assistant<|channel|>analysis<|message|>", 1)[1].split("<|end|>", 1)[0]
    assert ok is None or ok(tool_message), (name, tool_message)
    assert r.status == "completed" and r.output_text == "Done."
    assert not hits, "the sandbox reached a port on the host"
    assert not outside.exists(), "the sandbox wrote a file on the host"
    assert ci.outputs is not None
    if name in ("fork bomb", "infinite loop", "100 MB"):
        assert ci.status in ("completed", "incomplete")


def test_chat_completions_run_the_python_tool_too(srv, replay, engine, enc):
    replay(py_call("print(6*7)"), PY_ANSWER)
    r = client(srv).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "6*7?"}],
                                            tools=[{"type": "code_interpreter"}])
    msg = r.choices[0].message
    assert msg.content == "Done." and not msg.tool_calls and r.choices[0].finish_reason == "stop"
    assert "<|start|>python to=assistant<|channel|>analysis<|message|>42" in enc.decode(engine.last_prompt_ids)
    replay(py_call("print(6*7)"), PY_ANSWER)
    text = "".join(ch.choices[0].delta.content or "" for ch in client(srv).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "6*7?"}], tools=[{"type": "code_interpreter"}],
        stream=True) if ch.choices)
    assert text == "Done."


# ================================================================================================
# The browser tool
# ================================================================================================

def test_browser_finds_the_phrase_and_opens_the_page(srv, replay, engine, enc):
    search = ("<|channel|>analysis<|message|>Search.<|end|><|start|>assistant<|channel|>analysis "
              'to=browser.search <|constrain|>json<|message|>{"query": "quantum walrus migration"}<|call|>')
    opened = ("<|channel|>analysis<|message|>Open it.<|end|><|start|>assistant<|channel|>analysis "
              'to=browser.open <|constrain|>json<|message|>{"id": 0}<|call|>')
    final = "<|channel|>final<|message|>It starts in May 【1†L2】.<|return|>"
    replay(search, opened, final)
    r = client(srv).responses.create(model=MODEL, input="When does the walrus migration start?",
                                     tools=[{"type": "web_search_preview"}])
    kinds = [o.type for o in r.output]
    assert kinds.count("web_search_call") == 2
    calls = [o for o in r.output if o.type == "web_search_call"]
    assert calls[0].action.type == "search" and calls[0].action.query == "quantum walrus migration"
    assert calls[1].action.type == "open_page"
    prompt = enc.decode(engine.last_prompt_ids)
    assert "<|start|>browser.search to=assistant" in prompt and "walrus" in prompt
    assert "<|start|>browser.open to=assistant" in prompt
    assert "The quantum walrus migration starts in May." in prompt  # the opened page reached the model
    assert r.output_text.startswith("It starts in May")


# ================================================================================================
# The store survives a restart (--responses-db)
# ================================================================================================

def _serve(tiny_path, *args):
    cmd = [sys.executable, "-m", "llama_harmony.cli", "serve", "--model", str(tiny_path), "--port", "0",
           "--ctx", str(N_CTX), "--model-name", MODEL, *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("Serving "):
            return proc, line.split(" at ", 1)[1].split("/v1", 1)[0]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("serve did not start")


def test_store_survives_a_restart(tiny_path, tmp_path):
    db = tmp_path / "responses.db"
    rp = tmp_path / "replay.json"
    rp.write_text(json.dumps([CALL, AFTER]))
    proc, url = _serve(tiny_path, "--responses-db", str(db), "--replay", str(rp))
    try:
        c = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
        r1 = c.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    rp.write_text(json.dumps([AFTER]))
    proc, url = _serve(tiny_path, "--responses-db", str(db), "--replay", str(rp))
    try:
        c = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
        assert c.responses.retrieve(r1.id).output[-1].type == "function_call"
        call = r1.output[-1]
        r2 = c.responses.create(model=MODEL, previous_response_id=r1.id, tools=[WEATHER],
                                input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
        assert r2.output_text == "It is sunny in Paris."
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert os.path.getsize(db) > 0
