"""The OpenAI-compatible HTTP server (llama_harmony.server).

Two servers on 127.0.0.1, each on a free port in a background thread:

* ``real``: a HarmonyEngine over the tiny random-weight gpt-oss model (built into a tmp
  cache). Its weights are random, so a ``logits_processor_factory`` forces exact, realistic
  Harmony completions (chosen by a ``scenario:NAME`` marker in the last user message) through
  real llama.cpp; the official ``openai`` client talks to it.
* ``fake``: a scripted engine that raises the engine's error types or blocks on demand, for
  the error mapping (400/500/503) without a model.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional

import pytest

from llama_harmony import LimitExceeded, load_harmony_encoding
from llama_harmony import demo_data as d
from llama_harmony.server import make_server, parse_chat_request, ApiError

HOST = "127.0.0.1"


def _serve(server) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    return t


def _stop(server, thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def _raw(port: int, method: str, path: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
         timeout: float = 30.0):
    """One raw HTTP request: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def _assert_error(status: int, headers: Dict[str, str], data: bytes, expected_status: int) -> Dict[str, Any]:
    assert status == expected_status, data
    assert headers["content-type"].startswith("application/json")
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    return err


# ================================================================================================
# Request validation (no server)
# ================================================================================================

def test_parse_chat_request_maps_fields():
    kw = parse_chat_request({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5,
                             "reasoning": {"effort": "HIGH"}, "temperature": 0.5, "stop": "x", "stream": True})
    assert kw["reasoning_effort"] == "high" and kw["max_tokens"] == 5 and kw["stop"] == ["x"]
    assert kw["stream"] is True and kw["temperature"] == 0.5


@pytest.mark.parametrize("body, param", [
    ([], None),
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x"}, 3]}, "messages[1]"),
    ({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"messages": [{"role": "user", "content": "x"}], "reasoning": {"effort": 1}}, "reasoning.effort"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
])
def test_parse_chat_request_rejects(body, param):
    with pytest.raises(ApiError) as ei:
        parse_chat_request(body)
    assert ei.value.status == 400 and ei.value.param == param


# ================================================================================================
# Fake engine: error mapping, queueing, disconnects (fast, no model)
# ================================================================================================

class FakeEngine:
    """Scripted engine: the last user message selects the behaviour."""

    def __init__(self):
        self.calls: List[Dict[str, Any]] = []
        self.release = threading.Event()
        self.closed_streams = 0
        self.chunks_sent = 0

    def _fail(self, text: str) -> None:
        from llama_harmony.engine import ContextOverflowError
        from llama_harmony.openai_format import OpenAIFormatError

        if text == "overflow":
            raise ContextOverflowError(9000, 8192)
        if text == "badformat":
            raise OpenAIFormatError("unknown tool_call_id 'call_x'")
        if text == "limit":
            raise LimitExceeded("message of 2000000 bytes exceeds max_message_bytes=1048576")
        if text == "crash":
            raise RuntimeError("boom")
        if text == "block":
            assert self.release.wait(30)

    def create_chat_completion(self, messages, *, stream=False, **kw):
        self.calls.append({"messages": messages, "stream": stream, **kw})
        text = messages[-1].get("content") or ""
        if not stream:
            self._fail(text)
            return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": kw.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok", "reasoning_content": "r"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        return self._stream(text, kw)

    def _stream(self, text, kw) -> Iterator[Dict[str, Any]]:
        self._fail(text)
        n = 2000 if text == "long" else 3
        try:
            for i in range(n):
                if text == "midcrash" and i == 1:
                    raise RuntimeError("exploded mid-stream")
                self.chunks_sent += 1
                if text == "long":
                    time.sleep(0.002)
                yield {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": kw.get("model"),
                       "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
            yield {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": kw.get("model"),
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        finally:
            self.closed_streams += 1


@pytest.fixture()
def fake():
    pytest.importorskip("llama_harmony.engine")
    pytest.importorskip("llama_harmony.openai_format")
    engine = FakeEngine()
    server = make_server(engine, HOST, 0, model_name="fake-oss", max_request_bytes=4096, queue_timeout=0.5)
    thread = _serve(server)
    yield engine, server
    engine.release.set()
    _stop(server, thread)


def _chat(port, content, stream=False, **extra):
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": content}], "stream": stream, **extra})
    return _raw(port, "POST", "/v1/chat/completions", body.encode(), {"Content-Type": "application/json"})


@pytest.mark.parametrize("content, code", [("overflow", "context_length_exceeded"),
                                            ("badformat", "invalid_messages"),
                                            ("limit", "limit_exceeded")])
@pytest.mark.parametrize("stream", [False, True])
def test_engine_errors_are_400(fake, content, code, stream):
    _engine, server = fake
    status, headers, data = _chat(server.port, content, stream=stream)
    err = _assert_error(status, headers, data, 400)
    assert err["code"] == code and err["type"] == "invalid_request_error"
    assert any(w in err["message"] for w in ("n_ctx", "call_x", "max_message_bytes"))


def test_unexpected_error_is_500_and_server_survives(fake):
    _engine, server = fake
    err = _assert_error(*_chat(server.port, "crash"), 500)
    assert err["type"] == "server_error" and "boom" in err["message"]
    status, _h, data = _chat(server.port, "hello")
    assert status == 200 and json.loads(data)["choices"][0]["message"]["content"] == "ok"


def test_error_mid_stream_is_reported_in_band(fake):
    _engine, server = fake
    status, headers, data = _chat(server.port, "midcrash", stream=True)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [e[len("data: "):] for e in data.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    assert "exploded mid-stream" in json.loads(events[-2])["error"]["message"]


def test_passes_reasoning_effort_and_model_name(fake):
    engine, server = fake
    assert _chat(server.port, "a", reasoning_effort="low")[0] == 200
    assert _chat(server.port, "b", reasoning={"effort": "high"}, max_completion_tokens=7)[0] == 200
    assert engine.calls[-2]["reasoning_effort"] == "low"
    assert engine.calls[-1]["reasoning_effort"] == "high" and engine.calls[-1]["max_tokens"] == 7
    assert engine.calls[-1]["model"] == "fake-oss"


def test_queue_timeout_gives_503(fake):
    engine, server = fake
    with ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(_chat, server.port, "block")
        deadline = time.monotonic() + 10
        while not server.model_lock.locked() and time.monotonic() < deadline:
            time.sleep(0.01)
        err = _assert_error(*_chat(server.port, "hello"), 503)
        assert err["code"] == "server_busy" and "queue_timeout" in err["message"]
        engine.release.set()
        assert blocked.result(timeout=30)[0] == 200
    assert _chat(server.port, "hello")[0] == 200


def test_request_size_and_framing_errors(fake):
    _engine, server = fake
    port = server.port
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    err = _assert_error(*_raw(port, "POST", "/v1/chat/completions", big), 413)
    assert "4096" in err["message"] and err["code"] == "request_too_large"
    # a huge declared length is refused from the headers alone (nothing is read)
    err = _assert_error(*_raw(port, "POST", "/v1/chat/completions", b"", {"Content-Length": str(10 ** 9)}), 413)
    assert "1000000000" in err["message"]
    err = _assert_error(*_raw(port, "POST", "/v1/chat/completions", b"", {"Content-Length": "-5"}), 400)
    assert err["code"] == "invalid_content_length"
    err = _assert_error(*_raw(port, "POST", "/v1/chat/completions", b"{not json"), 400)
    assert err["code"] == "invalid_json"
    err = _assert_error(*_raw(port, "POST", "/v1/chat/completions", None), 400)
    assert "Content-Length" in err["message"]
    err = _assert_error(*_raw(port, "POST", "/v1/chat/completions", b"[1]"), 400)
    err = _assert_error(*_raw(port, "POST", "/v1/chat/completions", b'{"messages":[{"role":"bot"}]}'), 400)
    assert err["param"] == "messages[0].role"
    _assert_error(*_raw(port, "GET", "/nowhere"), 404)
    _assert_error(*_raw(port, "GET", "/v1/chat/completions"), 405)
    _assert_error(*_raw(port, "PUT", "/v1/models", b"{}"), 501)
    _assert_error(*_raw(port, "GET", "/v1/models/other"), 404)
    status, headers, data = _raw(port, "GET", "/v1/models/fake-oss")
    assert status == 200 and json.loads(data)["id"] == "fake-oss"


def test_disconnect_mid_stream_stops_generation(fake):
    engine, server = fake
    body = json.dumps({"messages": [{"role": "user", "content": "long"}], "stream": True}).encode()
    sock = socket.create_connection((HOST, server.port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    got = b""
    while b"data: " not in got:
        got += sock.recv(4096)
    sock.close()
    deadline = time.monotonic() + 10
    while engine.closed_streams < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.closed_streams == 1
    assert engine.chunks_sent < 2000  # generation stopped early
    status, _h, data = _chat(server.port, "hello")
    assert status == 200
    assert server.disconnects >= 1


# ================================================================================================
# Real engine: HarmonyEngine over the tiny random-weight gpt-oss model, the official client
# ================================================================================================

HELLO_ANALYSIS = "The user greets me. Reply with a short, friendly greeting."
HELLO_FINAL = "Hello! How can I help you today?"
HELLO = (f"<|channel|>analysis<|message|>{HELLO_ANALYSIS}<|end|>"
         f"<|start|>assistant<|channel|>final<|message|>{HELLO_FINAL}<|return|>")
LONG = ("<|channel|>analysis<|message|>" + "Let me think about this step by step. " * 150 + "<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Done.<|return|>")
MODEL_NAME = "tiny-gpt-oss"


class Scenarios:
    """logits_processor_factory: picks the completion to force from the request.

    A tool result last -> turn 2 of the recorded weather exchange; a user message mentioning
    the weather -> turn 1 (analysis + get_weather call); ``scenario:long`` -> a long analysis;
    anything else -> HELLO. Every processor made is kept (to check where generation stopped).
    """

    def __init__(self, enc):
        self.enc = enc
        self.made: List[Any] = []
        self.lock = threading.Lock()

    def completion_for(self, body: Dict[str, Any]) -> str:
        last = body["messages"][-1]
        content = last.get("content") if isinstance(last.get("content"), str) else ""
        if last.get("role") == "tool":
            return d.TURN2_COMPLETION
        if "weather" in content.lower():
            return d.TURN1_COMPLETION
        if "scenario:long" in content:
            return LONG
        return HELLO

    def __call__(self, body: Dict[str, Any]):
        from llama_cpp import LogitsProcessorList
        from llama_harmony.tiny_model import ForcedTokens

        text = self.completion_for(body)
        forced = ForcedTokens(self.enc.encode(text, allowed_special="all"))
        forced.text = text
        with self.lock:
            self.made.append(forced)
        return LogitsProcessorList([forced])


class RecordingEngine:
    """Passes calls through to the real engine and records their keyword arguments."""

    def __init__(self, engine):
        self.engine = engine
        self.kwargs: List[Dict[str, Any]] = []

    def create_chat_completion(self, messages, **kw):
        self.kwargs.append(dict(kw))
        return self.engine.create_chat_completion(messages, **kw)


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    engine_mod = pytest.importorskip("llama_harmony.engine")
    openai = pytest.importorskip("openai")
    from llama_harmony.tiny_model import N_VOCAB, ensure_tiny_model

    enc = load_harmony_encoding()
    path = ensure_tiny_model(enc.token_bytes_table(N_VOCAB), cache_dir=tmp_path_factory.mktemp("tiny-cache"))
    engine = RecordingEngine(engine_mod.HarmonyEngine.from_path(str(path), n_ctx=2048, n_threads=1, seed=0))
    scenarios = Scenarios(enc)
    server = make_server(engine, HOST, 0, model_name=MODEL_NAME, max_request_bytes=64 * 1024, queue_timeout=120,
                         logits_processor_factory=scenarios)
    thread = _serve(server)
    client = openai.OpenAI(base_url=f"http://{HOST}:{server.port}/v1", api_key="x", max_retries=0, timeout=60)
    yield {"server": server, "client": client, "engine": engine, "scenarios": scenarios, "enc": enc}
    client.close()
    _stop(server, thread)


def _reasoning(obj) -> Optional[str]:
    return getattr(obj, "reasoning_content", None)


def _collect(stream):
    """Accumulate a streamed completion: (reasoning, content, tool calls, finish_reason, chunks)."""
    reasoning, content, calls, finish, n = [], [], {}, None, 0
    for chunk in stream:
        n += 1
        assert chunk.object == "chat.completion.chunk" and chunk.model == MODEL_NAME
        for ch in chunk.choices:
            delta = ch.delta
            if _reasoning(delta):
                reasoning.append(_reasoning(delta))
            if delta.content:
                content.append(delta.content)
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            finish = ch.finish_reason or finish
    return "".join(reasoning), "".join(content), [calls[i] for i in sorted(calls)], finish, n


def test_real_non_streamed(real):
    resp = real["client"].chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi!"}])
    msg = resp.choices[0].message
    assert resp.object == "chat.completion" and resp.model == MODEL_NAME
    assert msg.role == "assistant" and msg.content == HELLO_FINAL
    assert _reasoning(msg) == HELLO_ANALYSIS
    assert not msg.tool_calls and resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_real_streamed(real):
    stream = real["client"].chat.completions.create(model=MODEL_NAME, stream=True,
                                                    messages=[{"role": "user", "content": "Hi!"}])
    reasoning, content, calls, finish, n = _collect(stream)
    assert (reasoning, content, calls, finish) == (HELLO_ANALYSIS, HELLO_FINAL, [], "stop")
    assert n > 3  # really streamed, not one blob


def test_real_max_tokens_cut(real):
    resp = real["client"].chat.completions.create(model=MODEL_NAME, max_tokens=5,
                                                  messages=[{"role": "user", "content": "Hi!"}])
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens <= 5


def test_real_reasoning_effort_reaches_engine(real):
    client, engine = real["client"], real["engine"]
    client.chat.completions.create(model=MODEL_NAME, reasoning_effort="high",
                                   messages=[{"role": "user", "content": "Hi!"}])
    assert engine.kwargs[-1]["reasoning_effort"] == "high"
    client.chat.completions.create(model=MODEL_NAME, extra_body={"reasoning": {"effort": "low"}},
                                   messages=[{"role": "user", "content": "Hi!"}])
    assert engine.kwargs[-1]["reasoning_effort"] == "low"


def test_real_tool_call_round_trip(real):
    client = real["client"]
    messages: List[Dict[str, Any]] = d.openai_messages_turn1()
    resp = client.chat.completions.create(model=MODEL_NAME, messages=messages, tools=d.TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert _reasoning(choice.message) == d.EXPECTED_TURN1_ANALYSIS
    assert not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == d.EXPECTED_TOOL_NAME
    assert call.function.arguments == d.EXPECTED_TOOL_ARGUMENTS

    messages.append({"role": "assistant", "content": None, "reasoning_content": _reasoning(choice.message),
                     "tool_calls": [{"id": call.id, "type": "function",
                                     "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": d.TOOL_RESULT})
    resp2 = client.chat.completions.create(model=MODEL_NAME, messages=messages, tools=d.TOOLS)
    assert resp2.choices[0].finish_reason == "stop"
    assert resp2.choices[0].message.content == d.EXPECTED_FINAL
    assert _reasoning(resp2.choices[0].message) == d.EXPECTED_TURN2_ANALYSIS


def test_real_tool_call_streamed(real):
    stream = real["client"].chat.completions.create(model=MODEL_NAME, stream=True, tools=d.TOOLS,
                                                    messages=d.openai_messages_turn1())
    reasoning, content, calls, finish, _n = _collect(stream)
    assert reasoning == d.EXPECTED_TURN1_ANALYSIS and not content and finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls] == [(d.EXPECTED_TOOL_NAME, d.EXPECTED_TOOL_ARGUMENTS)]
    assert calls[0]["id"]


def test_real_unknown_tool_call_id_is_400(real):
    import openai

    messages = d.openai_messages_turn1() + [{"role": "tool", "tool_call_id": "call_nobody", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as ei:
        real["client"].chat.completions.create(model=MODEL_NAME, messages=messages, tools=d.TOOLS)
    assert ei.value.status_code == 400 and "call_nobody" in ei.value.message


def test_real_context_overflow_is_400(real):
    import openai

    text = "overflow " * 3000  # ~3000 tokens, 27 KB: under the byte cap, over n_ctx=2048
    with pytest.raises(openai.BadRequestError) as ei:
        real["client"].chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": text}])
    assert ei.value.body["code"] == "context_length_exceeded"


def test_real_models_and_health(real):
    client, server = real["client"], real["server"]
    assert [m.id for m in client.models.list()] == [MODEL_NAME]
    status, headers, data = _raw(server.port, "GET", "/health")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(data)["status"] == "ok" and json.loads(data)["model"] == MODEL_NAME


def test_real_oversized_and_invalid_requests(real):
    import openai

    client, server = real["client"], real["server"]
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "x" * 70_000}])
    assert ei.value.status_code == 413
    err = ei.value.body
    assert err["type"] == "invalid_request_error" and err["code"] == "request_too_large"
    assert "65536" in err["message"]
    err = _assert_error(*_raw(server.port, "POST", "/v1/chat/completions", b'{"messages": [', {}), 400)
    assert err["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "narrator", "content": "x"}])
    assert ei.value.body["param"] == "messages[0].role"
    # the server still answers
    assert client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}]) \
        .choices[0].message.content == HELLO_FINAL


def test_real_eight_concurrent_streams(real):
    import openai

    server = real["server"]

    def one(i: int):
        client = openai.OpenAI(base_url=f"http://{HOST}:{server.port}/v1", api_key="x", max_retries=0, timeout=90)
        try:
            stream = client.chat.completions.create(model=MODEL_NAME, stream=True, max_tokens=64,
                                                    messages=[{"role": "user", "content": f"Hi #{i}"}])
            return _collect(stream)
        except openai.APIStatusError as e:  # a clean, OpenAI-shaped refusal is acceptable
            return e
        finally:
            client.close()

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8), timeout=120))
    assert time.monotonic() - t0 < 120
    done = [r for r in results if isinstance(r, tuple)]
    errors = [r for r in results if not isinstance(r, tuple)]
    assert all(e.status_code == 503 for e in errors)
    assert len(done) >= 1
    for reasoning, content, calls, finish, _n in done:
        assert (reasoning, content, calls, finish) == (HELLO_ANALYSIS, HELLO_FINAL, [], "stop")
    status, _h, data = _raw(server.port, "GET", "/health")
    assert status == 200 and json.loads(data)["busy"] is False


def test_real_client_disconnect_mid_stream(real):
    server, scenarios, client = real["server"], real["scenarios"], real["client"]
    body = json.dumps({"model": MODEL_NAME, "stream": True, "max_tokens": 1500,
                       "messages": [{"role": "user", "content": "scenario:long"}]}).encode()
    before = server.disconnects
    sock = socket.create_connection((HOST, server.port), timeout=30)
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        got = b""
        deadline = time.monotonic() + 30
        while b"data: " not in got and time.monotonic() < deadline:
            got += sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 200")
    finally:
        sock.close()
    long_proc = next(p for p in reversed(scenarios.made) if p.text == LONG)
    # The next request is served normally, promptly.
    t0 = time.monotonic()
    resp = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}])
    assert resp.choices[0].message.content == HELLO_FINAL
    assert time.monotonic() - t0 < 30
    assert server.disconnects == before + 1
    assert not long_proc.exhausted  # generation stopped when the client left
    status, _h, data = _raw(server.port, "GET", "/health")
    assert status == 200 and json.loads(data)["busy"] is False
