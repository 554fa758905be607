"""Gateway mode end to end: the HTTP server over llama-server replicas, through the official client.

Real components only: llama-server / ggml-rpc-server built from the pinned llama.cpp source by
scripts/build-llama-server.sh (cached), the tiny random-weight gpt-oss GGUF, the FastAPI server
(in a background thread over ``HarmonyEngine.from_upstream``, or ``llama-harmony serve
--upstream`` in a subprocess where start-up and signals matter) and the ``openai`` client,
all on loopback. Exact gpt-oss output comes from the replay mode (recorded completions forced
through llama-server's own sampling loop); unforced generation is random text, long when the
end-of-generation ids are banned (``NO_EOG``).

Every process is killed at the end of the module, also when a test fails (conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import httpx
import openai
import pytest

import llama_server_procs as procs
from chat_samples import (AFTER_TOOL, FINAL, TOOL_CALL, USER, check_model_names, check_tool_call_then_final_turn, client,
                          logprobs_both_ways, metric, metrics_of, stream_text)
from chat_samples import replay  # noqa: F401 - a fixture (over this module's engine fixture)
from llama_harmony.engine import HarmonyEngine
from llama_harmony.replay import Replay
from llama_harmony.sampling import EOG_IDS
from llama_harmony.server import BackgroundServer, ServerConfig, create_app

MODEL = "tiny-gateway"
CTX_PER_SLOT = 2048

#: The chat API's way to ban the end-of-generation ids (random weights then write until max_tokens).
NO_EOG = {str(i): -100.0 for i in sorted(EOG_IDS)}


# ================================================================================================
# Fixtures and helpers
# ================================================================================================

@pytest.fixture(scope="module")
def pair(tiny_path):
    """Two replicas, ``-np 4`` each, for the module. ``-fa off``: llama-cpp-python's attention
    path, so log-probabilities compare closely with it."""
    return [procs.llama_server(tiny_path, parallel=4, ctx_per_slot=CTX_PER_SLOT, name=f"gw-replica-{k}",
                               extra=["-fa", "off"]) for k in "ab"]


@pytest.fixture(scope="module")
def engine(pair, enc):
    return HarmonyEngine.from_upstream([p.url for p in pair], encoding=enc, wait=60)


@pytest.fixture(scope="module")
def gw(engine):
    """The HTTP server over the two replicas (in a background thread)."""
    s = gateway(engine, aliases=("gpt-oss-alias",))
    yield s
    s.stop()


def gateway(engine: HarmonyEngine, **config: Any) -> BackgroundServer:
    """A started server (``BackgroundServer``) over ``engine`` (stop it, or use ``with``)."""
    config.setdefault("model_name", MODEL)
    return BackgroundServer(create_app(engine, ServerConfig(**config))).start()


def per_upstream(url: str, name: str, replicas: List[procs.Proc]) -> Dict[str, float]:
    """``name`` (a ``llama_harmony_upstream_*`` series) of each replica, by URL."""
    return {p.url: metric(url, name, upstream=p.url) for p in replicas}


def sse(lines: List[str]) -> List[Any]:
    """The events of SSE ``data:`` lines (``"[DONE]"`` kept as a string)."""
    out = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def slots(proc: procs.Proc, api_key: Optional[str] = None) -> List[Dict[str, Any]]:
    """llama-server's ``GET /slots``."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with urllib.request.urlopen(urllib.request.Request(proc.url + "/slots", headers=headers), timeout=10) as r:
        return json.loads(r.read())


def wait_slot_idle(replicas: List[procs.Proc], n_predict: int, timeout: float = 120.0,
                   api_key: Optional[str] = None) -> List[int]:
    """Wait until no slot of ``replicas`` is processing; the ``n_decoded`` of the slots whose
    last request asked for ``n_predict`` ids."""
    deadline = time.monotonic() + timeout
    while True:
        states = [(s["is_processing"], (s.get("params") or {}).get("n_predict"),
                   (s.get("next_token") or [{}])[0].get("n_decoded", 0))
                  for p in replicas for s in slots(p, api_key)]
        if not any(busy for busy, _, _ in states) or time.monotonic() > deadline:
            assert not any(busy for busy, _, _ in states), states
            return [n for _, np_, n in states if np_ == n_predict]
        time.sleep(0.1)


def wait_until(cond, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(0.1)


# ================================================================================================
# Replay mode through the gateway: exact output, peers' failures as content
# ================================================================================================

def test_replayed_tool_call_and_final_turn(gw, replay, engine, enc):
    """The tool call and the final turn exactly as recorded; the second turn goes to the replica
    holding the first (prefix affinity), which reports the whole first exchange as cached."""
    check_tool_call_then_final_turn(client(gw), MODEL, replay, enc)
    assert engine.last_completion_ids == enc.encode(AFTER_TOOL, allowed_special="all")


@pytest.mark.parametrize("completion, content", [
    # a malformed header
    ("<|channel|>commentary ––commentary<|message|>odd header<|end|>"
     "<|start|>assistant<|channel|>final<|message|>answer<|return|>", "odd header\nanswer"),
    ("<|channel|>final??<|message|>Odd header.<|end|>", "Odd header."),
    # <|return|> after <|end|>
    ("<|channel|>final<|message|>done<|end|><|return|>", "done"),
    # text with no channel at all
    ("Just text with no channel at all.<|return|>", "Just text with no channel at all."),
])
def test_peer_failures_come_back_as_content(gw, replay, engine, enc, completion, content):
    for stream in (False, True):
        replay(completion)
        c = client(gw)
        if stream:
            text, _, finish, _, _ = stream_text(c, MODEL, messages=USER)
        else:
            r = c.chat.completions.create(model=MODEL, messages=USER)
            text, finish = r.choices[0].message.content, r.choices[0].finish_reason
        assert content in text, text
        assert finish in ("stop", "length")
        want = enc.encode(completion, allowed_special="all")
        if want[-1] not in EOG_IDS:
            want.append(200002)  # the gateway ends a forced completion with <|return|>
        assert engine.last_completion_ids == want


def test_replay_with_characters_split_over_ids(gw, replay, engine, enc):
    """Emoji and rare characters whose bytes span several ids (llama.cpp's grammar cannot force
    such an id): still exact through the gateway, streamed or not, with log-probabilities."""
    completion = ("<|channel|>analysis<|message|>Birds 🦜🪿 and 𝔘𝔫𝔦 ꙮ.<|end|>"
                  "<|start|>assistant<|channel|>final<|message|>Parrot 🦜, goose 🪿: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ!<|return|>")
    want = enc.encode(completion, allowed_special="all")
    for stream in (False, True):
        replay(completion)
        c = client(gw)
        if stream:
            content, reasoning, finish, usage, _ = stream_text(c, MODEL, messages=USER, logprobs=True,
                                                               top_logprobs=2)
        else:
            r = c.chat.completions.create(model=MODEL, messages=USER, logprobs=True, top_logprobs=2)
            msg, finish, usage = r.choices[0].message, r.choices[0].finish_reason, r.usage
            content, reasoning = msg.content, msg.reasoning_content
            assert all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in r.choices[0].logprobs.content)
        assert (content, reasoning, finish) == ("Parrot 🦜, goose 🪿: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ!", "Birds 🦜🪿 and 𝔘𝔫𝔦 ꙮ.", "stop")
        assert engine.last_completion_ids == want and usage.completion_tokens == len(want)


def test_models_and_model_check(gw, replay):
    check_model_names(client(gw), MODEL, "gpt-oss-alias", replay)
    health = httpx.get(gw.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["backend"] == "llama-server"


def test_prompt_longer_than_a_slot_is_a_clear_400(gw, engine):
    """The context is a llama-server slot's (read from /props), checked before anything is sent."""
    assert engine.n_ctx == CTX_PER_SLOT
    with pytest.raises(openai.BadRequestError) as e:
        client(gw).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * CTX_PER_SLOT}])
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "messages"


# ================================================================================================
# Concurrency and prefix affinity
# ================================================================================================

def test_sixteen_concurrent_streaming_clients(gw, replay, pair):
    replay(*[FINAL] * 16)
    before = per_upstream(gw.url, "llama_harmony_upstream_requests_total", pair)

    def one(k: int):
        c = client(gw, timeout=300)
        return stream_text(c, MODEL, messages=[{"role": "user", "content": f"Client {k}: say hello."}])[:3]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert results == [("Hello there, friend!", "User asks for a greeting. Say hello.", "stop")] * 16
    after = per_upstream(gw.url, "llama_harmony_upstream_requests_total", pair)
    assert sum(after[u] - before[u] for u in after) == 16
    assert all(after[u] > before[u] for u in after), (before, after)  # both replicas served


def test_second_turn_stays_cached_with_other_traffic(gw, replay, pair, enc):
    """A second turn of a 300+-token conversation reports >= 300 cached prompt tokens every
    time it is repeated, with other conversations (on both replicas) in between."""
    long_user = " ".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(25))
    first_msgs = [{"role": "user", "content": long_user}]
    replay(*[FINAL] * 40)
    c = client(gw, timeout=300)
    first = c.chat.completions.create(model=MODEL, messages=first_msgs)
    assert first.usage.prompt_tokens >= 300
    second_msgs = first_msgs + [first.choices[0].message.model_dump(exclude_none=True),
                                {"role": "user", "content": "And what about the cat?"}]
    requests_before = per_upstream(gw.url, "llama_harmony_upstream_requests_total", pair)
    cached = []
    for k in range(4):
        with ThreadPoolExecutor(6) as pool:  # unrelated conversations in between, at once
            others = list(pool.map(lambda j: client(gw, timeout=300).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Unrelated {k}-{j} " * 20}]), range(6)))
        assert all(o.choices[0].message.content == "Hello there, friend!" for o in others)
        second = c.chat.completions.create(model=MODEL, messages=second_msgs)
        assert second.choices[0].message.content == "Hello there, friend!"
        assert second.usage.prompt_tokens > first.usage.prompt_tokens
        cached.append(second.usage.prompt_tokens_details.cached_tokens)
    assert all(n >= 300 for n in cached), cached
    after = per_upstream(gw.url, "llama_harmony_upstream_requests_total", pair)
    assert all(after[u] > requests_before[u] for u in after)  # the other traffic used both replicas


# ================================================================================================
# Clients that leave stop the upstream generation
# ================================================================================================

def test_client_leaving_a_stream_stops_llama_server(gw, engine, pair):
    engine.replay = None
    n_predict = 1777
    body = {"model": MODEL, "messages": USER, "max_tokens": n_predict, "stream": True, "logit_bias": NO_EOG}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        for i, _ in enumerate(r.iter_lines()):
            if i > 10:
                break
    decoded = wait_slot_idle(pair, n_predict)
    assert len(decoded) == 1 and decoded[0] < n_predict // 2, decoded
    assert metric(gw.url, "llama_harmony_upstream_in_flight") == 0


def test_client_leaving_a_non_streamed_request_stops_llama_server(gw, engine, pair):
    engine.replay = None
    n_predict = 1666
    body = {"model": MODEL, "messages": USER, "max_tokens": n_predict, "logit_bias": NO_EOG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    decoded = wait_slot_idle(pair, n_predict)
    assert len(decoded) == 1 and decoded[0] < n_predict // 2, decoded
    wait_until(lambda: metric(gw.url, "llama_harmony_generations_total", finish_reason="cancelled") >= 1,
               what="the cancelled generation recorded")


# ================================================================================================
# Log-probabilities, metrics, API key
# ================================================================================================

def test_logprobs_equal_llama_cpp(gw, replay, engine, enc, tiny_path):
    # float32 logits from two evaluation orders (llama-server's batches vs llama-cpp-python's):
    # the tolerance of tests/test_upstream.py
    entries, streamed = logprobs_both_ways(client(gw), MODEL, replay, engine, enc, model_path=tiny_path,
                                           tolerance=1e-2, n_ctx=CTX_PER_SLOT)
    assert [e.token for e in streamed] == [e.token for e in entries]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in entries], abs=1e-2)


def test_upstream_metrics_parse_and_move(gw, replay, pair, enc):
    urls = [p.url for p in pair]
    names = ("requests", "tokens", "prompt_tokens", "cached_prompt_tokens")
    before = {n: sum(metric(gw.url, f"llama_harmony_upstream_{n}_total", upstream=u) for u in urls) for n in names}
    replay(FINAL)
    r = client(gw).chat.completions.create(model=MODEL, messages=USER)
    after = {n: sum(metric(gw.url, f"llama_harmony_upstream_{n}_total", upstream=u) for u in urls) for n in names}
    assert after["requests"] == before["requests"] + 1
    assert after["tokens"] == before["tokens"] + r.usage.completion_tokens
    assert after["prompt_tokens"] == before["prompt_tokens"] + r.usage.prompt_tokens
    assert after["cached_prompt_tokens"] == before["cached_prompt_tokens"] + r.usage.prompt_tokens_details.cached_tokens
    samples = metrics_of(gw.url)
    for u in urls:
        got = {s.name: s.value for s in samples if s.labels.get("upstream") == u}
        assert got["llama_harmony_upstream_healthy"] == 1 and got["llama_harmony_upstream_in_flight"] == 0
        assert got["llama_harmony_upstream_failures_total"] == 0
    # the server's own series count the gateway's generations as they count in-process ones
    assert metric(gw.url, "llama_harmony_completion_tokens_total") >= r.usage.completion_tokens


def test_api_key_on_the_gateway(engine, replay):
    with gateway(engine, api_keys=("gw-key",)) as s:
        assert httpx.get(s.url + "/v1/models", timeout=10).status_code == 401
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200
        r = replay(FINAL)
        with pytest.raises(openai.AuthenticationError):
            client(s, key="wrong").chat.completions.create(model=MODEL, messages=USER)
        assert r.used == 0  # refused before any generation
        out = client(s, key="gw-key").chat.completions.create(model=MODEL, messages=USER)
        assert out.choices[0].message.content == "Hello there, friend!"


# ================================================================================================
# Failures of replicas
# ================================================================================================

def check_health_now(engine: HarmonyEngine) -> None:
    """Run the gateway pools' health check now (what their background loop does every
    ``health_interval``), in the server's event loop."""
    for loop, pool in list(engine.backend._pools.items()):
        asyncio.run_coroutine_threadsafe(pool.check_health(), loop).result(30)


def test_sigkill_one_replica_then_eight_requests_succeed(tiny_path, enc):
    """No background health check runs between the kill and the requests (health_interval is
    an hour): the requests sent to the dead replica are retried on the other one."""
    a, b = (procs.llama_server(tiny_path, parallel=4, ctx_per_slot=1024, name=f"gw-kill-{k}") for k in "ab")
    eng = HarmonyEngine.from_upstream([a.url, b.url], encoding=enc, wait=60, health_interval=3600)
    eng.replay = Replay([FINAL] * 30)
    with gateway(eng) as s:
        c = client(s, timeout=120)
        assert c.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content  # pool started
        b.signal(signal.SIGKILL)
        b.popen.wait(timeout=30)

        def one(k: int) -> str:
            r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"After the crash {k}"}])
            return r.choices[0].message.content

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(8))) == ["Hello there, friend!"] * 8
        assert metric(s.url, "llama_harmony_upstream_healthy", upstream=b.url) == 0
        assert metric(s.url, "llama_harmony_upstream_failures_total", upstream=b.url) >= 1  # some were retried
        assert metric(s.url, "llama_harmony_requests_total", status="503") == 0
        # the replica comes back when a health check finds it healthy, and takes requests
        # (the background checks themselves: test_serve_stalled_replica_is_skipped_and_comes_back)
        b.start()
        b.wait_http_ok()
        check_health_now(eng)
        assert metric(s.url, "llama_harmony_upstream_healthy", upstream=b.url) == 1
        served = metric(s.url, "llama_harmony_upstream_requests_total", upstream=b.url)
        for k in range(4):
            assert one(100 + k) == "Hello there, friend!"
        assert metric(s.url, "llama_harmony_upstream_requests_total", upstream=b.url) > served
    a.kill()
    b.kill()


def test_stream_cut_midway_ends_with_error_finish_reason_and_done(tiny_path, enc):
    a = procs.llama_server(tiny_path, parallel=1, ctx_per_slot=4096, name="gw-cut")
    eng = HarmonyEngine.from_upstream([a.url], encoding=enc, wait=60, health_interval=3600)
    with gateway(eng) as s:
        body = {"model": MODEL, "messages": USER, "max_tokens": 3000, "stream": True, "logit_bias": NO_EOG}
        lines = []
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(60)) as r:
            assert r.status_code == 200
            it = r.iter_lines()
            for line in it:
                lines.append(line)
                if len(sse(lines)) == 8:
                    a.signal(signal.SIGKILL)
                    break
            lines.extend(it)  # never hangs: the read timeout would fail the test
        events = sse(lines)
        assert events[-1] == "[DONE]"
        errors = [i for i, e in enumerate(events[:-1]) if "error" in e]
        finals = [i for i, e in enumerate(events[:-1]) if "choices" in e and e["choices"]
                  and e["choices"][0]["finish_reason"]]
        assert len(errors) == 1 and len(finals) == 1 and errors[0] < finals[0], events[-5:]
        err = events[errors[0]]["error"]
        assert err["code"] == "upstream_error" and a.url in err["message"]
        assert events[finals[0]]["choices"][0]["finish_reason"] == "length"
        # the text before the cut was delivered
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                       if "choices" in e and e["choices"])
        # the server stays up: with no replica left, a new request is a clear 503
        with pytest.raises(openai.APIStatusError) as e:
            client(s).chat.completions.create(model=MODEL, messages=USER, max_tokens=4)
        assert e.value.status_code == 503 and e.value.body["code"] == "upstream_unavailable"
    a.kill()


# ================================================================================================
# RPC: one model over two ggml-rpc-servers behind the gateway
# ================================================================================================

def test_rpc_greedy_equals_plain_llama_server(pair, enc, tiny_path):
    r1, r2 = procs.rpc_server(name="gw-rpc-1"), procs.rpc_server(name="gw-rpc-2")
    split = procs.llama_server(tiny_path, parallel=1, ctx_per_slot=CTX_PER_SLOT, name="gw-rpc-llama-server",
                               extra=["--rpc", f"127.0.0.1:{r1.port},127.0.0.1:{r2.port}", "-ngl", "99",
                                      "-fa", "off", "-lv", "4"])
    out = []
    for url in (pair[0].url, split.url):
        eng = HarmonyEngine.from_upstream([url], encoding=enc, wait=60)
        with gateway(eng) as s:
            r = client(s).chat.completions.create(model=MODEL, messages=USER, temperature=0, max_tokens=32,
                                                  logit_bias=NO_EOG)
        out.append((r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens,
                    list(eng.last_completion_ids)))
    plain, over_rpc = out
    assert plain[2] == 32 and plain[1] == "length"
    assert over_rpc == plain
    log = split.log.read_text(errors="replace")  # both rpc-servers hold part of the model
    assert f"[127.0.0.1:{r1.port}] model buffer size" in log and f"[127.0.0.1:{r2.port}] model buffer size" in log
    split.kill()
    r1.kill()
    r2.kill()


# ================================================================================================
# The serve command: --upstream, its timeout, the upstream key, graceful shutdown
# ================================================================================================

class Served:
    """``llama-harmony serve --port 0 ARGS`` in a subprocess; ``log``: its stderr lines (read
    by a thread until the process ends, see :meth:`wait`). Killed at the end of the module
    at the latest (``_kill_served``)."""

    started: List["Served"] = []

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "llama_harmony.cli", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        Served.started.append(self)
        self.log: List[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            if line.startswith("Serving "):
                self.url = line.split(" at ", 1)[1].split("/v1", 1)[0]
                self._reader = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
                self._reader.start()
                return
        self.proc.kill()
        raise AssertionError("serve did not start:\n" + "".join(self.log))

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status, once the process and its log have ended."""
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture(scope="module", autouse=True)
def _kill_served():
    yield
    while Served.started:
        Served.started.pop().kill()


def test_serve_stalled_replica_is_skipped_and_comes_back(tiny_path):
    """``--upstream-timeout``: a replica that stops answering (SIGSTOP) is taken out of
    rotation and the requests go to the other one; after SIGCONT it is back."""
    a, b = (procs.llama_server(tiny_path, parallel=2, ctx_per_slot=1024, name=f"gw-stall-{k}") for k in "ab")
    served = Served("--upstream", a.url, "--upstream", b.url, "--upstream-timeout", "1.5")
    url = served.url
    try:
        assert "gateway to 2 llama-server upstream(s)" in served.log[-1]
        c = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=120)
        assert c.models.list().data[0].id == "tiny"  # the upstream's alias
        body = {"messages": USER, "max_tokens": 6, "temperature": 0, "logit_bias": NO_EOG}
        c.chat.completions.create(model="tiny", **body)  # the pool starts
        b.signal(signal.SIGSTOP)
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda k: c.chat.completions.create(
                model="tiny", **{**body, "messages": [{"role": "user", "content": f"Stalled {k}"}]}), range(6)))
        assert all(r.usage.completion_tokens == 6 and r.choices[0].finish_reason == "length" for r in results)
        assert metric(url, "llama_harmony_upstream_healthy", upstream=b.url) == 0
        assert metric(url, "llama_harmony_upstream_failures_total", upstream=b.url) >= 1
        b.signal(signal.SIGCONT)
        wait_until(lambda: metric(url, "llama_harmony_upstream_healthy", upstream=b.url) == 1,
                   what="the resumed replica back in rotation")
        on_b = metric(url, "llama_harmony_upstream_requests_total", upstream=b.url)
        for k in range(4):
            c.chat.completions.create(model="tiny", **{**body, "messages": [{"role": "user", "content": f"Back {k}"}]})
        assert metric(url, "llama_harmony_upstream_requests_total", upstream=b.url) > on_b
    finally:
        b.signal(signal.SIGCONT)
        served.kill()
        a.kill()
        b.kill()


def test_serve_sigterm_ends_streams_with_finish_reason_and_done(tiny_path):
    """Keys on both sides (``--api-key`` for clients, ``--upstream-api-key`` for a keyed
    llama-server); SIGTERM during a stream: the final chunk, ``[DONE]``, exit status 0."""
    up = procs.llama_server(tiny_path, parallel=2, ctx_per_slot=4096, name="gw-keyed", extra=["--api-key", "up-key"])
    served = Served("--upstream", up.url, "--upstream-api-key", "up-key", "--api-key", "gw-key",
                    "--model-name", "served-name")
    url = served.url
    try:
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 401
        auth = {"Authorization": "Bearer gw-key"}
        assert httpx.get(url + "/v1/models", headers=auth, timeout=10).json()["data"][0]["id"] == "served-name"
        body = {"model": "served-name", "messages": USER, "stream": True, "max_tokens": 3000, "logit_bias": NO_EOG}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=auth, timeout=60) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = [next(lines) for _ in range(10)]
            served.proc.send_signal(signal.SIGTERM)
            rest = list(lines)
        events = sse(first + rest)
        assert events[-1] == "[DONE]"
        assert not any("error" in e for e in events[:-1])
        finals = [e for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
        assert [e["choices"][0]["finish_reason"] for e in finals] == ["length"]
        assert served.wait() == 0
        # one log line per request, and none per upstream call (httpx's are kept quiet)
        log = served.log
        assert any("POST /v1/chat/completions 200" in line and "end=length" in line for line in log), log
        assert not any("HTTP Request" in line for line in log), log
    finally:
        served.kill()
    # the upstream generation was stopped too (not left running to its 3,000 tokens)
    decoded = wait_slot_idle([up], 3000, api_key="up-key")
    assert len(decoded) == 1 and decoded[0] < 1500, decoded
    up.kill()



def test_responses_api_and_python_tool_in_gateway_mode(engine, replay, enc):
    """The Responses API works the same over llama-server: a function call and its answer
    through previous_response_id (cached upstream), and a python call run in the sandbox whose
    output reaches the model's next generation."""
    from llama_harmony.server import ResponsesRuntime
    from llama_harmony.tools.python_tool import PythonTool

    weather = {"type": "function", "name": "get_weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    app = create_app(engine, ServerConfig(model_name=MODEL), responses=ResponsesRuntime(python_tool=PythonTool()))
    with BackgroundServer(app) as s:
        c = client(s)
        replay(TOOL_CALL, AFTER_TOOL)
        r1 = c.responses.create(model=MODEL, input=USER[0]["content"], tools=[weather])
        call = r1.output[-1]
        assert (call.type, call.name, call.arguments) == ("function_call", "get_weather", '{"city":"Paris"}')
        r2 = c.responses.create(model=MODEL, previous_response_id=r1.id, tools=[weather],
                                input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
        assert r2.output_text == "It is sunny in Paris."
        assert r2.usage.input_tokens_details.cached_tokens >= r1.usage.input_tokens

        replay("<|channel|>analysis<|message|>Compute.<|end|><|start|>assistant<|channel|>analysis to=python code"
               "<|message|>print(6*7)<|call|>",
               "<|channel|>final<|message|>42.<|return|>")
        events = list(c.responses.create(model=MODEL, input="6*7?", stream=True,
                                         tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]))
        final = events[-1].response
        assert events[-1].type == "response.completed" and final.output_text == "42."
        ci = next(o for o in final.output if o.type == "code_interpreter_call")
        assert ci.outputs[0].logs.strip() == "42"
        assert "<|start|>python to=assistant<|channel|>analysis<|message|>42" in enc.decode(engine.last_prompt_ids)
