"""The OpenAI-compatible HTTP server (llama_harmony.server) on the real stack.

Real components only: FastAPI + uvicorn on 127.0.0.1 (in a background thread, or the
``llama-harmony serve`` command in a subprocess where signals and start-up output matter),
the official ``openai`` client, real llama.cpp with the tiny random-weight gpt-oss model.
Exact gpt-oss output comes from the replay mode (recorded completions forced through the
model); unforced generation gives long header-less output (random weights).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chat_samples import (FINAL, USER, WEATHER, check_model_names, check_tool_call_then_final_turn, client,
                          logprobs_both_ways, metric)
from chat_samples import replay  # noqa: F401 - a fixture (over this module's engine fixture)
from llama_harmony.engine import HarmonyEngine
from llama_harmony.replay import Replay
from llama_harmony.server import BackgroundServer, ServerConfig, create_app

HOST = "127.0.0.1"
N_CTX = 4096
MODEL = "tiny-gpt-oss"


# ================================================================================================
# Fixtures
# ================================================================================================

@pytest.fixture(scope="session")
def engine(tiny_path, enc):
    return HarmonyEngine.from_path(tiny_path, n_ctx=N_CTX, n_batch=512, n_threads=2, encoding=enc)


def _start(engine, **config) -> BackgroundServer:
    config.setdefault("model_name", MODEL)
    return BackgroundServer(create_app(engine, ServerConfig(**config))).start()


@pytest.fixture(scope="module")
def srv(engine):
    s = _start(engine, aliases=("gpt-oss-alias",), queue_timeout=60)
    yield s
    s.stop()


def raw(s: BackgroundServer, method: str, path: str, body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None, timeout: float = 60.0):
    """One raw HTTP request: (status, lower-case headers, body bytes)."""
    conn = http.client.HTTPConnection(HOST, s.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None and "Content-Length" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def post_json(s, path, obj, headers=None, **kw):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return raw(s, "POST", path, json.dumps(obj).encode(), hdrs, **kw)


def api_error(status, headers, data, expected: int) -> Dict[str, Any]:
    assert status == expected, data
    assert headers["content-type"].startswith("application/json")
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    return err



def sse_events(data: bytes) -> List[Any]:
    out = []
    for block in data.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


# ================================================================================================
# The stack: official client, streaming, tools, replay, usage, docs
# ================================================================================================

def test_replayed_tool_call_and_final_turn_through_openai_client(srv, replay, enc):
    check_tool_call_then_final_turn(client(srv), MODEL, replay, enc)


def test_replay_exhausted_is_a_clear_503(srv, replay):
    replay(FINAL)
    c = client(srv)
    assert c.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content == "Hello there, friend!"
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model=MODEL, messages=USER)
    assert e.value.status_code == 503
    assert e.value.body["code"] == "replay_exhausted"
    assert "used up" in e.value.body["message"]


def test_openapi_and_docs(srv):
    status, _, data = raw(srv, "GET", "/openapi.json")
    assert status == 200
    spec = json.loads(data)
    assert "/v1/chat/completions" in spec["paths"]
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("ChatCompletionRequest")
    assert raw(srv, "GET", "/docs")[0] == 200


def test_models_health_and_model_check(srv, replay):
    check_model_names(client(srv), MODEL, "gpt-oss-alias", replay)
    status, _, data = raw(srv, "GET", "/health")
    health = json.loads(data)
    assert status == 200 and health["status"] == "ok" and health["model"] == MODEL


def test_per_request_reasoning_effort_reaches_the_prompt(srv, replay, engine, enc):
    c = client(srv)
    for effort in ("low", "high"):
        replay(FINAL)
        c.chat.completions.create(model=MODEL, messages=USER, reasoning_effort=effort)
        assert f"Reasoning: {effort}" in enc.decode(engine.last_prompt_ids)
    replay(FINAL)
    post = post_json(srv, "/v1/chat/completions", {"model": MODEL, "messages": USER, "reasoning": {"effort": "HIGH"}})
    assert post[0] == 200 and "Reasoning: high" in enc.decode(engine.last_prompt_ids)


# ================================================================================================
# Request validation: OpenAI-shaped 400s naming the field
# ================================================================================================

@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [5]}, "messages[0]"),
    ({"messages": USER, "temperature": "hot"}, "temperature"),
    ({"messages": USER, "temperature": 3}, "temperature"),
    ({"messages": USER, "n": 2}, "n"),
    ({"messages": USER, "stream": 1}, "stream"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"messages": USER, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"messages": USER, "reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"messages": USER, "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"messages": USER, "tools": 5}, "tools"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
    ({"messages": USER, "stop": ["a"] * 17}, "stop"),
    ({"messages": USER, "logit_bias": {"x": 1}}, "logit_bias"),
    ({"messages": USER + [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[1].tool_call_id"),
    ({"messages": USER, "tool_choice": {"type": "function", "function": {"name": "missing"}}, "tools": [WEATHER]},
     "tool_choice"),
    ({"messages": USER, "top_logprobs": 2}, "top_logprobs"),
])
def test_bad_requests_name_the_field(srv, body, param):
    err = api_error(*post_json(srv, "/v1/chat/completions", body), 400)
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error"


def test_context_overflow_and_limits_are_400(srv):
    long = [{"role": "user", "content": "word " * (N_CTX + 100)}]
    err = api_error(*post_json(srv, "/v1/chat/completions", {"messages": long}), 400)
    assert err["code"] == "context_length_exceeded"
    huge = [{"role": "user", "content": "x"}] * 100_001
    status, headers, data = post_json(srv, "/v1/chat/completions", {"messages": huge})
    if status == 413:  # the body cap comes first with the default 1 MiB
        assert json.loads(data)["error"]["code"] == "request_too_large"
    else:
        err = api_error(status, headers, data, 400)
        assert err["code"] == "limit_exceeded" and "Limits(" not in err["message"]


@pytest.mark.parametrize("body, code", [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b'"text"', "invalid_json"),
    (b"\xff\xfe garbage", None),
    (b"[" * 100_000 + b"]" * 100_000, None),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', None),
])
def test_hostile_bodies_get_400_and_the_server_survives(srv, replay, body, code):
    replay(FINAL)
    status, headers, data = raw(srv, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    if status == 200:  # a lone surrogate is text to us: rendered, answered
        assert body.startswith(b'{"messages"')
    else:
        err = api_error(status, headers, data, 400)
        if code:
            assert err["code"] == code
    replay(FINAL)
    assert client(srv).chat.completions.create(model=MODEL, messages=USER).choices[0].message.content


def test_protocol_errors_are_openai_shaped(srv):
    api_error(*raw(srv, "GET", "/v1/nothing"), 404)
    err = api_error(*raw(srv, "GET", "/v1/chat/completions"), 405)
    assert err["code"] == "method_not_allowed"
    # A POST without a body length: 411, as HTTP says.
    err = api_error(*raw(srv, "POST", "/v1/chat/completions", None, {"Content-Type": "application/json"}), 411)
    assert err["code"] == "length_required"
    # Oversized: 413 before anything is parsed.
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
    err = api_error(*raw(srv, "POST", "/v1/chat/completions", big, {"Content-Type": "application/json"}), 413)
    assert err["code"] == "request_too_large"


def test_oversized_request_through_openai_client(srv):
    with pytest.raises(openai.APIStatusError) as e:
        client(srv).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * (2 << 20)}])
    assert e.value.status_code == 413


# ================================================================================================
# Security
# ================================================================================================

@pytest.fixture(scope="module")
def keyed(engine):
    s = _start(engine, api_keys=("k-one", "k-two"))
    yield s
    s.stop()


def test_api_keys(keyed, engine):
    for path in ("/v1/models", "/metrics", "/openapi.json"):
        err = api_error(*raw(keyed, "GET", path), 401)
        assert err["code"] == "invalid_api_key"
        api_error(*raw(keyed, "GET", path, headers={"Authorization": "Bearer wrong"}), 401)
        api_error(*raw(keyed, "GET", path, headers={"Authorization": "Basic k-one"}), 401)
        assert raw(keyed, "GET", path, headers={"Authorization": "Bearer k-two"})[0] == 200
    assert raw(keyed, "GET", "/health")[0] == 200  # open, for load balancers
    with pytest.raises(openai.AuthenticationError):
        client(keyed, key="wrong").models.list()
    engine.replay = Replay([FINAL])
    try:
        with pytest.raises(openai.AuthenticationError):
            client(keyed, key="wrong").chat.completions.create(model=MODEL, messages=USER)
        assert engine.replay.used == 0  # refused before any generation
        r = client(keyed, key="k-one").chat.completions.create(model=MODEL, messages=USER)
        assert r.choices[0].message.content == "Hello there, friend!"
    finally:
        engine.replay = None


def test_no_cors_by_default_and_json_only(srv, replay):
    origin = {"Origin": "https://evil.example"}
    status, headers, _ = raw(srv, "GET", "/v1/models", headers=origin)
    assert status == 200 and not any(h.startswith("access-control-") for h in headers)
    status, headers, _ = raw(srv, "OPTIONS", "/v1/chat/completions",
                             headers={**origin, "Access-Control-Request-Method": "POST",
                                      "Access-Control-Request-Headers": "content-type"})
    assert status == 204 and not any(h.startswith("access-control-") for h in headers)
    # A "simple" cross-origin request a web page can send without a preflight: refused, not run.
    r = replay(FINAL)
    body = json.dumps({"model": MODEL, "messages": USER}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        err = api_error(*raw(srv, "POST", "/v1/chat/completions", body, {**origin, "Content-Type": ctype}), 415)
        assert err["code"] == "unsupported_media_type"
    api_error(*raw(srv, "POST", "/v1/chat/completions", body, origin), 415)
    assert r.used == 0


def test_cors_origin_allows_only_that_origin(engine):
    with _start(engine, cors_origins=("https://app.example",)) as s:
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
        status, headers, _ = raw(s, "OPTIONS", "/v1/chat/completions", headers={"Origin": "https://app.example", **pre})
        assert status == 200
        assert headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in headers["access-control-allow-methods"]
        status, headers, _ = raw(s, "OPTIONS", "/v1/chat/completions", headers={"Origin": "https://evil.example", **pre})
        assert "access-control-allow-origin" not in headers
        status, headers, _ = raw(s, "GET", "/v1/models", headers={"Origin": "https://app.example"})
        assert headers["access-control-allow-origin"] == "https://app.example"
        status, headers, _ = raw(s, "GET", "/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in headers


def test_content_is_logged_only_when_asked(engine, caplog):
    secret = "my-secret-words-1234"
    msgs = [{"role": "user", "content": secret}]
    for log_content in (False, True):
        engine.replay = Replay([FINAL])
        caplog.clear()
        with caplog.at_level("INFO", logger="llama_harmony.server"):
            with _start(engine, log_content=log_content) as s:
                client(s).chat.completions.create(model=MODEL, messages=msgs)
        text = caplog.text
        assert "POST /v1/chat/completions 200" in text and "prompt=" in text
        assert (secret in text) is log_content
        assert ("Hello there, friend!" in text) is log_content
    engine.replay = None


# ================================================================================================
# Work is never wasted on clients that left
# ================================================================================================

def _quick(s, replay) -> float:
    replay(FINAL)
    t = time.perf_counter()
    assert client(s).chat.completions.create(model=MODEL, messages=USER).choices[0].message.content
    return time.perf_counter() - t


def test_abandoned_non_streaming_request_is_cancelled(srv, replay, engine):
    base = _quick(srv, replay)
    engine.replay = None
    # 3,000 unforced tokens (random weights: no end of generation) take ~10 s on this model.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/v1/chat/completions", json={"model": MODEL, "messages": USER, "max_tokens": 3000},
                   timeout=httpx.Timeout(60, read=0.5))
    t = time.perf_counter()
    elapsed = _quick(srv, replay)
    assert time.perf_counter() - t < base + 1.0, "the abandoned request kept the model busy"
    assert elapsed < base + 1.0
    assert metric(srv.url, "llama_harmony_generations_total", finish_reason="cancelled") >= 1


def test_queued_request_dropped_when_its_client_goes(srv, replay, engine):
    engine.replay = None
    done = threading.Event()

    def long_stream():
        with httpx.stream("POST", srv.url + "/v1/chat/completions", timeout=60,
                          json={"model": MODEL, "messages": USER, "max_tokens": 400, "stream": True}) as r:
            for _ in r.iter_lines():
                pass
        done.set()

    t = threading.Thread(target=long_stream)
    t.start()
    deadline = time.monotonic() + 10
    while json.loads(raw(srv, "GET", "/health")[2])["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    before = metric(srv.url, "llama_harmony_generations_total")
    with pytest.raises(httpx.ReadTimeout):  # waits behind the stream, then gives up
        httpx.post(srv.url + "/v1/chat/completions", json={"model": MODEL, "messages": USER, "max_tokens": 5},
                   timeout=httpx.Timeout(60, read=0.3))
    deadline = time.monotonic() + 5
    while json.loads(raw(srv, "GET", "/health")[2])["waiting"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert json.loads(raw(srv, "GET", "/health")[2])["waiting"] == 0
    t.join(60)
    assert done.is_set()
    time.sleep(0.2)
    assert metric(srv.url, "llama_harmony_generations_total") == before + 1  # only the stream generated


def test_client_disconnect_mid_stream_stops_generation(srv, replay, engine):
    engine.replay = None
    with httpx.stream("POST", srv.url + "/v1/chat/completions", timeout=60,
                      json={"model": MODEL, "messages": USER, "max_tokens": 3000, "stream": True}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 10:
                break
    t = time.perf_counter()
    _quick(srv, replay)
    assert time.perf_counter() - t < 3.0


def test_queue_timeout_gives_503_with_retry_after(engine, replay):
    engine.replay = None
    with _start(engine, queue_timeout=0.2) as s:
        def long():
            return post_json(s, "/v1/chat/completions", {"messages": USER, "max_tokens": 300})

        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(long)
            deadline = time.monotonic() + 10
            while json.loads(raw(s, "GET", "/health")[2])["in_flight"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            status, headers, data = post_json(s, "/v1/chat/completions", {"messages": USER, "max_tokens": 3})
            err = api_error(status, headers, data, 503)
            assert err["code"] == "server_busy" and headers["retry-after"] == "1"
            assert fut.result()[0] == 200


def test_eight_concurrent_streams_all_complete(srv, engine):
    engine.replay = Replay([FINAL] * 8)
    try:
        def one(_):
            stream = client(srv, timeout=120).chat.completions.create(model=MODEL, messages=USER, stream=True)
            text, finish = "", None
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
            return text, finish

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(8)))
        assert results == [("Hello there, friend!", "stop")] * 8
    finally:
        engine.replay = None


def test_headerless_output_streams_as_it_comes(srv, engine):
    """Random weights: the model never writes a Harmony header. The text streams token by
    token (the lenient parser gives up on a header after a few words), never held back."""
    engine.replay = None
    stream = client(srv).chat.completions.create(model=MODEL, messages=USER, max_tokens=48, stream=True,
                                                 temperature=1.0, seed=7)
    content_chunks = [ch.choices[0].delta.content for ch in stream
                      if ch.choices and ch.choices[0].delta.content]
    assert len(content_chunks) >= 20, content_chunks  # one per token (about), not one at the end
    # the same text as the non-streamed answer
    full = client(srv).chat.completions.create(model=MODEL, messages=USER, max_tokens=48, temperature=1.0, seed=7)
    assert "".join(content_chunks) == full.choices[0].message.content


# ================================================================================================
# Log-probabilities
# ================================================================================================

def test_logprobs_match_llama_cpp(srv, replay, engine, enc, tiny_path):
    entries, streamed = logprobs_both_ways(client(srv), MODEL, replay, engine, enc, model_path=tiny_path,
                                           tolerance=2e-3, n_ctx=N_CTX)
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in entries]
    replay(FINAL)
    plain = client(srv).chat.completions.create(model=MODEL, messages=USER)
    assert plain.choices[0].logprobs is None


# ================================================================================================
# Metrics
# ================================================================================================

def test_metrics_parse_and_move(srv, replay):
    before = {n: metric(srv.url, n) for n in ("llama_harmony_requests_total", "llama_harmony_completion_tokens_total",
                                          "llama_harmony_prompt_tokens_total",
                                          "llama_harmony_time_to_first_token_seconds_count",
                                          "llama_harmony_time_per_output_token_seconds_count")}
    repairs = metric(srv.url, "llama_harmony_parser_repairs_total", kind="stray_token")
    # <|return|> right after <|end|> (vLLM #50690): a repair, not an error.
    replay("<|channel|>final<|message|>Hi<|end|><|return|>")
    r = client(srv).chat.completions.create(model=MODEL, messages=USER)
    assert r.choices[0].message.content == "Hi"
    assert metric(srv.url, "llama_harmony_requests_total") > before["llama_harmony_requests_total"]
    assert metric(srv.url, "llama_harmony_completion_tokens_total") >= before["llama_harmony_completion_tokens_total"] + 4
    assert metric(srv.url, "llama_harmony_prompt_tokens_total") > before["llama_harmony_prompt_tokens_total"]
    assert metric(srv.url, "llama_harmony_time_to_first_token_seconds_count") == \
        before["llama_harmony_time_to_first_token_seconds_count"] + 1
    # one time between tokens per token after the first (the first token is timed once, as TTFT)
    assert metric(srv.url, "llama_harmony_time_per_output_token_seconds_count") == \
        before["llama_harmony_time_per_output_token_seconds_count"] + r.usage.completion_tokens - 1
    assert metric(srv.url, "llama_harmony_parser_repairs_total", kind="stray_token") == repairs + 1
    assert metric(srv.url, "llama_harmony_requests_total", endpoint="/v1/chat/completions", status="200") >= 1
    _, headers, data = raw(srv, "GET", "/metrics")
    names = {f.name for f in text_string_to_metric_families(data.decode())}
    assert {"llama_harmony_queue_length", "llama_harmony_time_per_output_token_seconds",
            "llama_harmony_cached_prompt_tokens", "llama_harmony_parser_repairs"} <= names


# ================================================================================================
# Peers' known failures (REFERENCE.md §11): content, never an error
# ================================================================================================

@pytest.mark.parametrize("completion, content", [
    ("<|channel|>commentary ––commentary<|message|>odd header<|end|>"
     "<|start|>assistant<|channel|>final<|message|>answer<|return|>", "odd header\nanswer"),
    ("<|channel|>final<|message|>done<|end|><|return|>", "done"),
    ("Just text with no channel at all.<|return|>", "Just text with no channel at all."),
    ("<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>x<|return|>", "x"),
])
def test_malformed_model_output_is_content(srv, replay, completion, content):
    for stream in (False, True):
        replay(completion)
        c = client(srv)
        if stream:
            text = "".join(ch.choices[0].delta.content or "" for ch in
                           c.chat.completions.create(model=MODEL, messages=USER, stream=True) if ch.choices)
        else:
            text = c.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content
        assert content in text or text == content


# ================================================================================================
# The serve command: start-up, warnings, graceful shutdown
# ================================================================================================

def _serve_cmd(tiny_path, *args, env=None):
    cmd = [sys.executable, "-m", "llama_harmony.cli", "serve", "--model", str(tiny_path), "--port", "0",
           "--ctx", str(N_CTX), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Serving "):
            url = line.split(" at ", 1)[1].split("/v1", 1)[0]
            return proc, url, lines
    proc.kill()
    raise AssertionError("serve did not start:\n" + "".join(lines))


def test_warning_when_binding_beyond_loopback_without_key(tiny_path):
    proc, url, lines = _serve_cmd(tiny_path, "--host", "0.0.0.0")
    try:
        assert any("WITHOUT an API key" in line for line in lines), lines
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    proc, url, lines = _serve_cmd(tiny_path, "--host", "0.0.0.0", env={"LLAMA_HARMONY_API_KEY": "abc"})
    try:
        assert not any("WITHOUT an API key" in line for line in lines)
        assert "API key required" in lines[-1]
        port = url.rsplit(":", 1)[1]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer abc"}).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_sigterm_ends_streams_with_finish_reason_and_done(tiny_path, tmp_path):
    long_final = "<|channel|>final<|message|>" + "word " * 2500 + "<|return|>"
    replay_file = tmp_path / "replay.json"
    replay_file.write_text(json.dumps([long_final, long_final]))
    proc, url, _ = _serve_cmd(tiny_path, "--replay", str(replay_file))
    try:
        body = {"model": "x", "messages": USER, "stream": True}
        got: Dict[str, Any] = {}

        def non_streamed():
            got["plain"] = httpx.post(url + "/v1/chat/completions", json={"messages": USER}, timeout=60)

        with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "model": None}, timeout=60) as r:
            lines = r.iter_lines()
            first = [next(lines) for _ in range(10)]
            assert all(not line or line.startswith("data: ") for line in first)
            worker = threading.Thread(target=non_streamed)
            worker.start()
            time.sleep(0.3)
            t = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest = list(lines)
        payloads = [line[len("data: "):] for line in first + rest if line.startswith("data: ")]
        events = [p if p == "[DONE]" else json.loads(p) for p in payloads]
        assert events[-1] == "[DONE]"
        finals = [e for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
        assert [e["choices"][0]["finish_reason"] for e in finals] == ["length"]
        assert proc.wait(20) == 0
        assert time.monotonic() - t < 15
        worker.join(20)
        # The request that was waiting for the model gets an answer too (503: shutting down,
        # or its output so far).
        assert got["plain"].status_code in (200, 503)
        if got["plain"].status_code == 200:
            assert got["plain"].json()["choices"][0]["finish_reason"] == "length"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_replay_file_errors_are_usage_errors(tiny_path, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    r = subprocess.run([sys.executable, "-m", "llama_harmony.cli", "serve", "--model", str(tiny_path), "--replay",
                        str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "JSON list of strings" in r.stderr
