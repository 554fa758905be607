"""llama_harmony.upstream against real llama-server processes on loopback.

llama-server and ggml-rpc-server are built from the pinned llama.cpp source by
scripts/build-llama-server.sh (cached after the first run); the model is the tiny random-weight
gpt-oss GGUF. Exact outputs are forced through llama-server's own sampling loop with
``forced_completion`` (token-terminal grammar + end-of-generation bias), so the ids compared
are produced by llama.cpp, not by this test.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import urllib.request

import numpy as np
import pytest

from llama_cpp import Llama, LogitsProcessorList

import llama_server_procs as procs
from llama_harmony import Conversation, Message, Role, SystemContent, tiny_model
from llama_harmony._parser import parse_messages_from_completion_tokens
from llama_harmony.sampling import EOG_IDS, SamplingParams
from llama_harmony.upstream import (
    LlamaServerReplica,
    UpstreamAuthError,
    UpstreamPool,
    UpstreamRequestError,
    UpstreamStreamError,
    UpstreamUnavailable,
    completion_request,
    forced_completion,
    forced_completion_grammar,
    forced_segments,
)

CTX_PER_SLOT = 2048
NO_EOG = {i: -math.inf for i in EOG_IDS}  # generation runs to max_tokens

ANSWER = ("<|channel|>analysis<|message|>User asks for a greeting. Say hello.<|end|>"
          "<|start|>assistant<|channel|>final<|message|>Hello there, friend!<|return|>")
TOOL_CALL = ("<|channel|>analysis<|message|>Need to use function get_weather.<|end|>"
             "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
             '<|message|>{"city":"Paris"}<|call|>')
MULTIBYTE = "<|channel|>final<|message|>Grüße — 你好世界 🙂 ünïcödé ✓<|return|>"  # whole characters
LEAD_BYTE = 160  # o200k's id of the lone byte 0xE4: its text ends inside a UTF-8 character
# Three lead bytes in a row: no chunk's text is ever a whole character (forced by a bias:
# llama.cpp's grammar cannot force such ids).
SPLIT = SamplingParams(temperature=0.0, max_tokens=3, logit_bias={LEAD_BYTE: 1000.0})


def run(coro):
    return asyncio.run(coro)


async def collect(gen):
    async with gen:
        return [step async for step in gen]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pair(tiny_path):
    """Two replicas, -np 4 each, kept for the module (nothing here kills them). ``-fa off``:
    llama-cpp-python's attention path, so their logits compare closely with it."""
    a = procs.llama_server(tiny_path, parallel=4, ctx_per_slot=CTX_PER_SLOT, name="replica-a", extra=["-fa", "off"])
    b = procs.llama_server(tiny_path, parallel=4, ctx_per_slot=CTX_PER_SLOT, name="replica-b", extra=["-fa", "off"])
    return a, b


def prompt_of(enc, user_text, *, history=()):
    convo = Conversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, SystemContent.new()),
        *history,
        Message.from_role_and_content(Role.USER, user_text),
    ])
    return enc.render_conversation_for_completion(convo, Role.ASSISTANT)


def ids_of(enc, text):
    return enc.encode(text, allowed_special="all")


# ------------------------------------------------------------------------------------ request building


def test_request_fields_and_bad_arguments():
    body = completion_request([1, 2, 3], SamplingParams(temperature=0.5, top_k=7, seed=11, max_tokens=9,
                                                         logit_bias={5: 2.0, 6: -math.inf}, logprobs=0,
                                                         extra={"mirostat_mode": 2, "typical_p": 0.9}))
    assert body["prompt"] == [1, 2, 3] and body["stream"] and body["return_tokens"] and body["cache_prompt"]
    assert body["n_predict"] == 9 and body["seed"] == 11 and body["top_k"] == 7
    assert body["logit_bias"] == [[5, 2.0], [6, False]]
    assert body["n_probs"] == 1 and body["post_sampling_probs"] is False
    assert body["mirostat"] == 2 and body["typical_p"] == 0.9
    # greedy: top_k 1 (the same id as llama.cpp's greedy rule, without a softmax over the vocabulary)
    assert completion_request([1], SamplingParams(temperature=0.0, top_k=0))["top_k"] == 1
    assert completion_request([1], forced_completion([5, 200002]))["top_k"] == 1
    for params, field in [(SamplingParams(temperature=-1), "temperature"), (SamplingParams(top_p=2), "top_p"),
                          (SamplingParams(top_k=-1), "top_k"), (SamplingParams(seed=2 ** 40), "seed"),
                          (SamplingParams(max_tokens=0), "max_tokens"), (SamplingParams(logprobs=21), "logprobs"),
                          (SamplingParams(logit_bias={"x": 1.0}), "logit_bias"),
                          (SamplingParams(extra={"nope": 1.0}), "extra.nope"),
                          (SamplingParams(grammar=""), "grammar")]:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            completion_request([1], params)
    with pytest.raises(ValueError, match="prompt_ids"):
        completion_request([], SamplingParams())
    with pytest.raises(ValueError, match="prompt_ids"):
        completion_request([1, -2], SamplingParams())


def test_package_import_stays_light():
    """``import llama_harmony`` loads neither httpx nor this module."""
    import subprocess
    import sys

    code = "import sys, llama_harmony; print('httpx' in sys.modules, 'llama_harmony.upstream' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_forced_completion_grammar_shape():
    assert forced_completion_grammar([200005, 17, 200002]) == ("root ::= <[200005]> <[17]>\n", {200002: 1000.0})
    with pytest.raises(ValueError, match="end-of-generation"):
        forced_completion_grammar([1, 2])
    with pytest.raises(ValueError, match="only come last"):
        forced_completion_grammar([1, 200012, 200002])
    with pytest.raises(ValueError, match=r"ids\[1\] \(160\).*split"):
        forced_completion_grammar([17, LEAD_BYTE, 17, 200002])


def test_forced_segments_shape():
    """Runs of forcible ids go as one grammar each; an id the grammar rejects goes alone, by bias."""
    (ids, p), = forced_segments([200005, 17, 200002])
    assert ids == [200005, 17, 200002] and p == forced_completion([200005, 17, 200002])
    # [17, lead byte, lead byte, 17] + <|return|>: the lead bytes each alone (a fresh grammar
    # cannot take the second either), then the rest with the end-of-generation bias
    segs = forced_segments([17, LEAD_BYTE, LEAD_BYTE, 17, 200002], logprobs=2)
    assert [ids for ids, _ in segs] == [[17], [LEAD_BYTE], [LEAD_BYTE], [17, 200002]]
    assert segs[0][1].grammar == "root ::= <[17]>\n" and segs[0][1].max_tokens == 1 and not segs[0][1].logit_bias
    assert segs[1][1].grammar is None and segs[1][1].logit_bias == {LEAD_BYTE: 1000.0}
    assert segs[3][1] == forced_completion([17, 200002], logprobs=2)
    assert all(p.temperature == 0.0 and p.logprobs == 2 for _, p in segs)
    # without an end-of-generation id, generation stops after the last id
    assert [ids for ids, _ in forced_segments([LEAD_BYTE, 17])] == [[LEAD_BYTE], [17]]
    with pytest.raises(ValueError, match="only come last"):
        forced_segments([1, 200012, 200002])
    with pytest.raises(ValueError, match="ids"):
        forced_segments([])


# ------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize("text", [ANSWER, TOOL_CALL, MULTIBYTE])
def test_forced_completion_is_exact(pair, enc, text):
    """The exact ids come back, the final end-of-generation id last."""
    want = ids_of(enc, text)
    prompt = prompt_of(enc, "Say hello.")

    async def main():
        async with UpstreamPool([pair[0].url]) as pool:
            assert pool.replicas[0].mode == "stream"  # the probe found every id streamed
            gen = pool.generate(prompt, forced_completion(want))
            steps = await collect(gen)
            return [s.id for s in steps], gen

    got, gen = run(main())
    assert got == want
    assert gen.stop_reason == "eos" and gen.prompt_tokens == len(prompt) and gen.replica == pair[0].url


def test_split_characters_every_id_arrives(pair, enc):
    """Ids whose text ends inside a UTF-8 character: streamed one by one (patched
    llama-server), and exact in ``whole`` mode too, with their log-probabilities."""
    prompt = prompt_of(enc, "Say hello.")
    params = SamplingParams(temperature=0.0, max_tokens=3, logit_bias={LEAD_BYTE: 1000.0}, logprobs=2)

    async def main():
        out = []
        for mode in ("auto", "whole"):
            async with UpstreamPool([pair[1].url], mode=mode) as pool:
                gen = pool.generate(prompt, params)
                out.append((pool.replicas[0].mode, await collect(gen), gen.stop_reason))
        return out

    (mode_a, steps_a, stop_a), (mode_w, steps_w, stop_w) = run(main())
    assert (mode_a, mode_w) == ("stream", "whole")
    for steps, stop in ((steps_a, stop_a), (steps_w, stop_w)):
        assert [s.id for s in steps] == [LEAD_BYTE] * 3 and stop == "length"
        assert all(s.logprob is not None and len(s.top_logprobs) == 2 for s in steps)
    assert [s.logprob for s in steps_a] == pytest.approx([s.logprob for s in steps_w], abs=1e-4)


def test_upstream_alone_withholds_ids_without_return_tokens(pair, enc):
    """Why the patch exists: without ``return_tokens`` llama-server drops the ids whose text
    ends inside a UTF-8 character from the stream (upstream behaviour, kept by the patch)."""
    want = [LEAD_BYTE] * 3
    body = completion_request(prompt_of(enc, "Say hello."), SPLIT)
    body["return_tokens"] = False
    req = urllib.request.Request(pair[0].url + "/completion", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    got, predicted = [], None
    with urllib.request.urlopen(req, timeout=60) as r:
        for line in r:
            if line.startswith(b"data:"):
                chunk = json.loads(line[5:])
                got += chunk.get("tokens") or []
                predicted = chunk.get("tokens_predicted", predicted)
    assert predicted == len(want) and got == []


def test_sixteen_concurrent_generations_on_two_replicas(pair, enc):
    async def one(pool, k):
        params = SamplingParams(temperature=0.8, seed=k, max_tokens=24, logit_bias=NO_EOG)
        gen = pool.generate(prompt_of(enc, f"Question number {k}: tell me something."), params)
        steps = await collect(gen)
        return steps, gen

    async def main():
        async with UpstreamPool([pair[0].url, pair[1].url]) as pool:
            results = await asyncio.gather(*(one(pool, k) for k in range(16)))
            return results, pool.stats()

    results, stats = run(main())
    for steps, gen in results:
        assert len(steps) == 24 and gen.stop_reason == "length"
        assert not any(s.id in EOG_IDS for s in steps)
    assert {gen.replica for _, gen in results} == {pair[0].url, pair[1].url}
    assert sum(s["requests"] for s in stats.values()) == 16
    assert sum(s["tokens"] for s in stats.values()) == 16 * 24
    assert all(s["in_flight"] == 0 and s["failures"] == 0 for s in stats.values())


def test_same_seed_same_ids_any_replica(pair, enc):
    prompt = prompt_of(enc, "Seeded.")
    params = SamplingParams(temperature=1.0, seed=1234, max_tokens=16, logit_bias=NO_EOG)

    async def main():
        outs = []
        for url in (pair[0].url, pair[1].url):
            replica = LlamaServerReplica(url)
            outs.append([s.id async for s in replica.stream(prompt, params)])
            await replica.aclose()
        return outs

    a, b = run(main())
    assert a == b and len(a) == 16


def test_prefix_affinity_keeps_the_conversation_cached(pair, enc):
    """A second turn of a 300+-token conversation reports >= 300 cached prompt tokens every
    time it is repeated, with other conversations in between."""
    long_user = " ".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(25))
    turn1 = prompt_of(enc, long_user)
    assert len(turn1) >= 300
    history = [Message.from_role_and_content(Role.USER, long_user),
               Message.from_role_and_content(Role.ASSISTANT, "Hello there, friend!").with_channel("final")]
    convo = Conversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, SystemContent.new()), *history,
        Message.from_role_and_content(Role.USER, "And what about the cat?")])
    turn2 = enc.render_conversation_for_completion(convo, Role.ASSISTANT)
    assert turn2[:len(turn1)] == turn1

    async def main():
        async with UpstreamPool([pair[0].url, pair[1].url]) as pool:
            first = pool.generate(turn1, forced_completion(ids_of(enc, ANSWER)))
            await collect(first)
            cached, replicas = [], []
            for k in range(4):
                # unrelated traffic in between, on both replicas
                others = [pool.generate(prompt_of(enc, f"Unrelated {k}-{j} " * 20),
                                        SamplingParams(temperature=0.0, max_tokens=8)) for j in range(3)]
                await asyncio.gather(*(collect(g) for g in others))
                second = pool.generate(turn2, SamplingParams(temperature=0.0, max_tokens=8))
                await collect(second)
                cached.append(second.cached_tokens)
                replicas.append(second.replica)
            return first.replica, cached, replicas

    first_replica, cached, replicas = run(main())
    assert all(c is not None and c >= 300 for c in cached), cached
    assert set(replicas) == {first_replica}


def test_closing_a_generation_stops_llama_server(pair, enc):
    """aclose() after a few ids (and cancelling the consuming task) closes the stream: the
    slot goes idle long before n_predict would have ended it."""
    n_predict = 1777
    prompt = prompt_of(enc, "Write forever.")
    replica_proc = pair[1]

    async def main():
        replica = LlamaServerReplica(replica_proc.url)
        params = SamplingParams(temperature=0.0, max_tokens=n_predict, logit_bias=NO_EOG)
        agen = replica.stream(prompt, params)
        got = [await agen.__anext__() for _ in range(5)]
        await agen.aclose()
        # cancelling the tasks that iterate (at different moments of their streams)
        async def consume(k):
            async for _ in replica.stream(prompt + [100 + k], params):
                pass
        tasks = [asyncio.ensure_future(consume(k)) for k in range(3)]
        for task in tasks:
            await asyncio.sleep(0.25)
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
        states = []
        for _ in range(300):
            slots = await replica.slots()
            states = [(s["is_processing"], s.get("next_token", [{}])[0].get("n_decoded", 0),
                       (s.get("params") or {}).get("n_predict")) for s in slots]
            if not any(p for p, _, _ in states):
                break
            await asyncio.sleep(0.1)
        stats = replica.stats
        await replica.aclose()
        return got, states, stats

    got, states, stats = run(main())
    assert len(got) == 5
    ours = [n for _, n, np_ in states if np_ == n_predict]
    assert len(ours) >= 1 and not any(p for p, _, _ in states), states
    assert all(n < n_predict // 2 for n in ours), states
    assert stats.in_flight == 0


def test_logprobs_equal_llama_cpp(pair, enc, tiny_path):
    prompt = prompt_of(enc, "Logprobs please.")
    k = 5

    async def main():
        replica = LlamaServerReplica(pair[0].url)
        steps = [s async for s in replica.stream(prompt, SamplingParams(temperature=0.0, max_tokens=6,
                                                                        logprobs=k, logit_bias=NO_EOG))]
        await replica.aclose()
        return steps

    steps = run(main())
    ids = [s.id for s in steps]
    llm = Llama(str(tiny_path), n_ctx=1024, n_batch=512, n_threads=1, logits_all=True, verbose=False)
    llm.eval(prompt + ids[:-1])
    scores = np.asarray(llm.scores[: len(prompt) + len(ids) - 1], dtype=np.float64)
    for i, step in enumerate(steps):
        row = scores[len(prompt) - 1 + i]
        logp = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        top = np.argsort(-logp)[:k]
        assert step.id == int(top[0])  # greedy
        # float32 logits from two evaluation orders (token by token vs one batch): ~3e-3 apart
        assert step.logprob == pytest.approx(logp[step.id], abs=1e-2)
        assert [t for t, _ in step.top_logprobs] == [int(t) for t in top]
        for t, lp in step.top_logprobs:
            assert lp == pytest.approx(logp[t], abs=1e-2)


def test_peer_failures_come_back_as_content(pair, enc):
    """REFERENCE §11 shapes forced through llama-server come back as exact ids, and the
    lenient parser turns them into text, never an error."""
    cases = [
        ("<|channel|>final??<|message|>Odd header.<|end|>", "Odd header."),  # malformed header
        ("<|channel|>final<|message|>All good.<|end|><|return|>", "All good."),  # <|return|> after <|end|>
        ("I cannot help with that.<|return|>", "I cannot help with that."),  # text with no channel
    ]
    prompt = prompt_of(enc, "Hi")

    async def main():
        out = []
        async with UpstreamPool([pair[0].url]) as pool:
            for text, _ in cases:
                want = ids_of(enc, text)
                if want[-1] not in EOG_IDS:
                    want.append(200002)
                out.append((want, [s.id for s in await collect(pool.generate(prompt, forced_completion(want)))]))
        return out

    for (want, got), (_, body) in zip(run(main()), cases):
        assert got == want
        msgs = parse_messages_from_completion_tokens(enc, [200006, *ids_of(enc, "assistant"), *got[:-1]],
                                                     strict=False)
        texts = "".join(c.text for m in msgs for c in m.content)
        assert body in texts


# ------------------------------------------------------------------------------------ failures


def test_sigkill_one_replica_then_all_requests_succeed(tiny_path, enc):
    a = procs.llama_server(tiny_path, parallel=4, ctx_per_slot=1024, name="kill-a")
    b = procs.llama_server(tiny_path, parallel=4, ctx_per_slot=1024, name="kill-b")

    async def main():
        async with UpstreamPool([a.url, b.url], health_interval=3600) as pool:
            assert pool.healthy_replicas == [a.url, b.url]
            b.signal(signal.SIGKILL)
            b.popen.wait(timeout=30)
            gens = [pool.generate(prompt_of(enc, f"After the crash {k}"),
                                  SamplingParams(temperature=0.0, max_tokens=12, logit_bias=NO_EOG)) for k in range(8)]
            results = await asyncio.gather(*(collect(g) for g in gens))
            down = pool.healthy_replicas
            b.start()
            b.wait_http_ok()
            back = await pool.check_health()
            return gens, results, down, back, pool.stats()

    gens, results, down, back, stats = run(main())
    assert all(len(r) == 12 for r in results)
    assert all(g.replica == a.url for g in gens)
    assert any(url == b.url for g in gens for url, _ in g.attempts)  # some went to b first
    assert down == [a.url] and back == [a.url, b.url]
    assert stats[b.url]["failures"] >= 1
    a.kill()
    b.kill()


def test_stalled_replica_is_skipped_and_comes_back(tiny_path, enc):
    a = procs.llama_server(tiny_path, parallel=2, ctx_per_slot=1024, name="stall-a")
    b = procs.llama_server(tiny_path, parallel=2, ctx_per_slot=1024, name="stall-b")

    async def main():
        async with UpstreamPool([a.url, b.url], read_timeout=1.5, health_timeout=1.0,
                                health_interval=0.5) as pool:
            b.signal(signal.SIGSTOP)
            gens = [pool.generate(prompt_of(enc, f"Stalled {k}"),
                                  SamplingParams(temperature=0.0, max_tokens=8, logit_bias=NO_EOG)) for k in range(6)]
            results = await asyncio.gather(*(collect(g) for g in gens))
            skipped = b.url not in pool.healthy_replicas
            b.signal(signal.SIGCONT)
            for _ in range(300):
                if b.url in pool.healthy_replicas:
                    break
                await asyncio.sleep(0.1)
            back = pool.healthy_replicas
            after = await collect(pool.generate(prompt_of(enc, "Resumed"),
                                                SamplingParams(temperature=0.0, max_tokens=4, logit_bias=NO_EOG)))
            return gens, results, skipped, back, after

    gens, results, skipped, back, after = run(main())
    assert all(len(r) == 8 for r in results) and all(g.replica == a.url for g in gens)
    assert skipped and sorted(back) == sorted([a.url, b.url]) and len(after) == 4
    a.kill()
    b.kill()


def test_stream_cut_midway_raises_typed_error(tiny_path, enc):
    a = procs.llama_server(tiny_path, parallel=1, ctx_per_slot=4096, name="cut-a")

    async def main():
        async with UpstreamPool([a.url], health_interval=3600) as pool:
            gen = pool.generate(prompt_of(enc, "Long answer"),
                                SamplingParams(temperature=0.0, max_tokens=3000, logit_bias=NO_EOG))
            n = 0
            with pytest.raises(UpstreamStreamError) as err:
                async with gen:
                    async for _ in gen:
                        n += 1
                        if n == 3:
                            a.signal(signal.SIGKILL)
            return err.value, n, pool.healthy_replicas

    err, n, healthy = run(main())
    assert err.upstream == a.url and err.tokens_yielded == n >= 3
    assert healthy == []


def test_no_replica_up_is_unavailable(enc):
    dead = f"http://127.0.0.1:{procs.free_port()}"

    async def main():
        async with UpstreamPool([dead]) as pool:
            assert pool.healthy_replicas == []
            with pytest.raises(UpstreamUnavailable) as err:
                await collect(pool.generate([1, 2, 3], SamplingParams(max_tokens=2)))
            return err.value

    assert dead in str(run(main()))


def test_prompt_longer_than_a_slot_is_a_request_error(pair):
    async def main():
        async with UpstreamPool([pair[0].url]) as pool:
            with pytest.raises(UpstreamRequestError) as err:
                await collect(pool.generate([1000 + (i % 5000) for i in range(CTX_PER_SLOT + 10)],
                                            SamplingParams(max_tokens=2)))
            return err.value, pool.healthy_replicas

    err, healthy = run(main())
    assert err.status == 400 and err.upstream == pair[0].url and healthy == [pair[0].url]


def test_api_key(tiny_path, enc):
    s = procs.llama_server(tiny_path, parallel=1, ctx_per_slot=1024, name="keyed", extra=["--api-key", "s3cret"])
    prompt = prompt_of(enc, "Key?")

    async def main():
        with pytest.raises(UpstreamAuthError) as err:
            async with UpstreamPool([s.url]):
                pass
        replica = LlamaServerReplica(s.url)
        with pytest.raises(UpstreamAuthError) as err2:
            async for _ in replica.stream(prompt, SamplingParams(max_tokens=2)):
                pass
        await replica.aclose()
        async with UpstreamPool([s.url], api_key="s3cret") as pool:
            steps = await collect(pool.generate(prompt, SamplingParams(temperature=0.0, max_tokens=3,
                                                                       logit_bias=NO_EOG)))
            return err.value, err2.value, steps, pool.model_name

    err, err2, steps, model = run(main())
    assert err.upstream == s.url and err.status == 401 and s.url in str(err)
    assert err2.status == 401 and len(steps) == 3 and model == "tiny"
    s.kill()


# ------------------------------------------------------------------------------------ RPC


def test_rpc_greedy_equals_local(pair, enc, tiny_path):
    """Greedy ids of one model split over two ggml-rpc-servers equal a local llama-server's,
    and llama-cpp-python's in-process greedy ids."""
    r1, r2 = procs.rpc_server(name="rpc-1"), procs.rpc_server(name="rpc-2")
    split = procs.llama_server(tiny_path, parallel=1, ctx_per_slot=1024, name="rpc-llama-server",
                               extra=["--rpc", f"127.0.0.1:{r1.port},127.0.0.1:{r2.port}", "-ngl", "99",
                                      "-fa", "off", "-lv", "4"])
    prompt = prompt_of(enc, "Greedy over RPC.")
    params = SamplingParams(temperature=0.0, max_tokens=32, logit_bias=NO_EOG)

    async def main():
        outs = []
        for url in (pair[0].url, split.url):
            async with UpstreamPool([url]) as pool:
                outs.append([s.id for s in await collect(pool.generate(prompt, params))])
        return outs

    local, over_rpc = run(main())
    assert len(local) == 32 and over_rpc == local
    llm = Llama(str(tiny_path), n_ctx=1024, n_batch=512, n_threads=1, verbose=False)
    ban = np.zeros(tiny_model.N_VOCAB, dtype=np.float32)
    ban[sorted(EOG_IDS)] = -np.inf
    in_process = []
    for tok in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                            logits_processor=LogitsProcessorList([lambda _ids, scores: scores + ban])):
        in_process.append(tok)
        if len(in_process) == 32:
            break
    assert in_process == local
    # both rpc-servers hold part of the model (llama-server's log names their buffers)
    log = split.log.read_text(errors="replace")
    assert f"[127.0.0.1:{r1.port}] model buffer size" in log and f"[127.0.0.1:{r2.port}] model buffer size" in log
    split.kill()
    r1.kill()
    r2.kill()
