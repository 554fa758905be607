"""HarmonyEngine and HarmonyChatHandler on the real llama.cpp (llama-cpp-python).

The tiny random-weight gpt-oss model (llama_harmony.tiny_model) is driven with
``ForcedTokens``: realistic Harmony completions, written as text and encoded with
``enc.encode(text, allowed_special="all")``, are replayed token for token through llama.cpp's
sampling loop. A forced sequence starts AFTER the prompt's ``<|start|>assistant``.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from llama_cpp import Llama, LogitsProcessorList

from chat_samples import FINAL as ANSWER
from chat_samples import TOOL_CALL, USER, WEATHER
from llama_harmony.engine import (
    ContextOverflowError,
    HarmonyChatHandler,
    HarmonyEngine,
    ModelError,
    ModelNotFoundError,
    register_chat_format,
)
from llama_harmony.openai_format import OpenAIFormatError
from llama_harmony.tiny_model import ForcedTokens

N_CTX = 1024


@pytest.fixture(scope="session")
def llm(tiny_path):
    return Llama(str(tiny_path), n_ctx=N_CTX, n_batch=256, n_threads=1, verbose=False)


@pytest.fixture(scope="session")
def engine(llm, enc):
    return HarmonyEngine(llm, encoding=enc)


def forced(enc, text):
    return LogitsProcessorList([ForcedTokens(enc.encode(text, allowed_special="all"))])


def run(engine, enc, text, messages=USER, **kw):
    """Non-streamed and streamed completions of the same forced output."""
    full = engine.create_chat_completion(messages, logits_processor=forced(enc, text), **kw)
    chunks = list(engine.create_chat_completion(messages, logits_processor=forced(enc, text), stream=True, **kw))
    return full, chunks


def concat(chunks):
    msg = {"content": "", "reasoning_content": "", "reasoning": "", "tool_calls": {}}
    finish, ids = None, set()
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        ids.add(c["id"])
        if not c["choices"]:
            continue
        d = c["choices"][0]["delta"]
        for k in ("content", "reasoning_content", "reasoning"):
            msg[k] += d.get(k) or ""
        for tc in d.get("tool_calls", []):
            slot = msg["tool_calls"].setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
            if "id" in tc:
                assert slot["id"] is None
                slot.update(id=tc["id"], name=tc["function"]["name"])
            slot["arguments"] += tc["function"].get("arguments", "")
        finish = c["choices"][0]["finish_reason"] or finish
    assert len(ids) == 1
    return msg, finish


# ------------------------------------------------------------------------------- (1) analysis -> final

def test_analysis_then_final(engine, enc):
    full, chunks = run(engine, enc, ANSWER)
    choice = full["choices"][0]
    assert full["object"] == "chat.completion"
    assert choice["message"] == {"role": "assistant", "content": "Hello there, friend!",
                                 "reasoning_content": "User asks for a greeting. Say hello.",
                                 "reasoning": "User asks for a greeting. Say hello."}
    assert choice["finish_reason"] == "stop"
    n = len(enc.encode(ANSWER, allowed_special="all"))
    assert full["usage"]["completion_tokens"] == n  # the final <|return|> is counted, as OpenAI does
    assert full["usage"]["total_tokens"] == full["usage"]["prompt_tokens"] + n
    assert full["usage"]["prompt_tokens"] == len(engine.last_prompt_ids)
    assert engine.last_completion_ids == enc.encode(ANSWER, allowed_special="all")
    msg, finish = concat(chunks)
    assert finish == "stop"
    assert msg["content"] == "Hello there, friend!"
    assert msg["reasoning_content"] == msg["reasoning"] == "User asks for a greeting. Say hello."
    assert not msg["tool_calls"]
    assert len(chunks) > 10  # token by token


# ------------------------------------------------------------------------------- (2) tool call

def test_tool_call(engine, enc):
    full, chunks = run(engine, enc, TOOL_CALL, tools=[WEATHER])
    choice = full["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] is None
    assert msg["reasoning_content"] == "Need to use function get_weather."
    [call] = msg["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}

    streamed, finish = concat(chunks)
    assert finish == "tool_calls"
    assert list(streamed["tool_calls"]) == [0]
    slot = streamed["tool_calls"][0]
    assert slot["name"] == "get_weather" and slot["id"].startswith("call_")
    assert json.loads(slot["arguments"]) == {"city": "Paris"}
    tool_deltas = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert len(tool_deltas) > 2 and all(tc["index"] == 0 for tc in tool_deltas)
    assert streamed["reasoning_content"] == "Need to use function get_weather."
    # every sampled id is counted, the final <|call|> included
    assert full["usage"]["completion_tokens"] == len(enc.encode(TOOL_CALL, allowed_special="all"))


@pytest.mark.parametrize("text", [
    # recipient before the channel (the reference's rendering order)
    ' to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
    # a call from the analysis channel (frequent with gpt-oss-120b)
    '<|channel|>analysis to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
    # content type as plain text, and none at all
    '<|channel|>commentary to=functions.get_weather json<|message|>{"city":"Paris"}<|call|>',
    '<|channel|>commentary to=functions.get_weather<|message|>{"city":"Paris"}<|call|>',
])
def test_tool_call_header_variants(engine, enc, text):
    full, chunks = run(engine, enc, text, tools=[WEATHER])
    [call] = full["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert full["choices"][0]["finish_reason"] == "tool_calls"
    assert full["choices"][0]["message"]["content"] is None
    streamed, finish = concat(chunks)
    assert finish == "tool_calls" and streamed["tool_calls"][0]["arguments"] == '{"city":"Paris"}'


# ------------------------------------------------------------------------------- (3) tool result turn + KV cache

def test_tool_result_turn_reuses_kv_cache(engine, enc, llm):
    first = engine.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    first_prompt = list(engine.last_prompt_ids)
    assert llm.n_tokens == len(first_prompt) + len(engine.last_completion_ids) - 1
    msg = first["choices"][0]["message"]
    call_id = msg["tool_calls"][0]["id"]
    history = USER + [
        {"role": "assistant", "content": msg["content"], "reasoning_content": msg["reasoning_content"],
         "tool_calls": msg["tool_calls"]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    final = "<|channel|>final<|message|>It is 21 degrees and clear in Paris.<|return|>"
    second = engine.create_chat_completion(history, tools=[WEATHER], logits_processor=forced(enc, final))
    prompt = engine.last_prompt_ids
    assert prompt[:len(first_prompt)] == first_prompt  # the second prompt extends the first
    text = enc.decode(prompt)
    assert "Need to use function get_weather." in text  # reasoning of the turn in progress kept
    assert text.endswith('<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>'
                         '{"temperature": 21, "sky": "clear"}<|end|><|start|>assistant')
    assert engine.last_reused_tokens > len(first_prompt)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == engine.last_reused_tokens
    assert second["choices"][0]["message"]["content"] == "It is 21 degrees and clear in Paris."
    assert second["choices"][0]["finish_reason"] == "stop"
    # a follow-up user turn: spec policy drops the completed turn's reasoning
    third_msgs = history + [{"role": "assistant", "content": "It is 21 degrees and clear in Paris."},
                            {"role": "user", "content": "Thanks"}]
    engine.create_chat_completion(third_msgs, tools=[WEATHER], max_tokens=3,
                                  logits_processor=forced(enc, "<|channel|>final<|message|>Bye<|return|>"))
    assert "Need to use function" not in enc.decode(engine.last_prompt_ids)


# ------------------------------------------------------------------------------- (3b) prompt splicing

TOOL_CALL_2 = ("<|channel|>analysis<|message|>Paris done. Now Lyon.<|end|>"
               "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
               '<|message|>{"city":"Lyon"}<|call|>')
MODEL_HEADER = ("<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>")
TAIL = [200006, 173781]  # <|start|>assistant


def _messages(enc, ids):
    """The messages of a prompt (without its trailing <|start|>assistant), strictly parsed."""
    assert ids[-2:] == TAIL
    return [m.to_dict() for m in enc.parse_messages_from_completion_tokens(ids[:-2], None, strict=True)]


def _reply(completion):
    msg = completion["choices"][0]["message"]
    out = {"role": "assistant", "content": msg["content"], "reasoning_content": msg["reasoning_content"]}
    if msg.get("tool_calls"):
        out["tool_calls"] = msg["tool_calls"]
    return out


def _result(completion, text):
    return {"role": "tool", "tool_call_id": completion["choices"][0]["message"]["tool_calls"][0]["id"],
            "content": text}


def test_tool_chain_splices_generated_ids(llm, enc):
    eng = HarmonyEngine(llm, encoding=enc)
    first = eng.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    p1, g1 = list(eng.last_prompt_ids), list(eng.last_completion_ids)
    assert g1[-1] == 200012 and llm.n_tokens == len(p1) + len(g1) - 1  # <|call|> is never evaluated
    history = USER + [_reply(first), _result(first, '{"temperature": 21}')]
    second = eng.create_chat_completion(history, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL_2))
    p2, g2 = list(eng.last_prompt_ids), list(eng.last_completion_ids)
    # the tool-result turn's prompt is the previous prompt + the ids the model wrote (tool call
    # header in the model's order, <|call|> kept) + the tool result: the whole KV cache is reused
    assert p2[:len(p1) + len(g1)] == p1 + g1
    assert eng.last_reused_tokens == len(p1) + len(g1) - 1
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == eng.last_reused_tokens
    assert eng.last_spliced_tokens == len(g1)
    assert MODEL_HEADER in enc.decode(p2)
    # ... and it is the same Harmony history as the canonical render, message for message
    canonical = eng.render(history, tools=[WEATHER])
    assert canonical != p2 and "assistant to=functions.get_weather<|channel|>" in enc.decode(canonical)
    assert _messages(enc, p2) == _messages(enc, canonical)
    assert second["usage"]["prompt_tokens"] == len(p2)

    # the next link of the chain splices the second call too (and keeps the first)
    history2 = history + [_reply(second), _result(second, '{"temperature": 18}')]
    final = "<|channel|>final<|message|>Paris 21, Lyon 18.<|return|>"
    eng.create_chat_completion(history2, tools=[WEATHER], logits_processor=forced(enc, final))
    p3 = list(eng.last_prompt_ids)
    assert p3[:len(p2) + len(g2)] == p2 + g2
    assert eng.last_reused_tokens == len(p2) + len(g2) - 1
    assert eng.last_spliced_tokens == len(g1) + len(g2)
    assert _messages(enc, p3) == _messages(enc, eng.render(history2, tools=[WEATHER]))

    # a new user turn: the spec policy drops the chain's reasoning -> the canonical render
    history3 = history2 + [{"role": "assistant", "content": "Paris 21, Lyon 18."},
                           {"role": "user", "content": "Thanks"}]
    eng.create_chat_completion(history3, tools=[WEATHER], max_tokens=2)
    assert eng.last_prompt_ids == eng.render(history3, tools=[WEATHER]) and eng.last_spliced_tokens == 0
    assert "Paris done" not in enc.decode(eng.last_prompt_ids)


def test_splicing_only_for_an_unchanged_history(llm, enc):
    eng = HarmonyEngine(llm, encoding=enc)
    first = eng.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    reply, result = _reply(first), _result(first, "sunny")
    cases = {
        "reasoning left out": dict(reply, reasoning_content=None),
        "arguments edited": dict(reply, tool_calls=[{**reply["tool_calls"][0], "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]),
        "content added": dict(reply, content="Let me check."),
    }
    for label, changed in cases.items():
        eng.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
        history = USER + [changed, result]
        eng.create_chat_completion(history, tools=[WEATHER], max_tokens=1)
        assert eng.last_prompt_ids == eng.render(history, tools=[WEATHER]), label
        assert eng.last_spliced_tokens == 0, label
    # other tools or settings: canonical render
    eng.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    history = USER + [reply, result]
    eng.create_chat_completion(history, tools=[WEATHER], reasoning_effort="high", max_tokens=1)
    assert eng.last_prompt_ids == eng.render(history, tools=[WEATHER], reasoning_effort="high")
    # the same request again (a retry) gets the same prompt as the first time
    eng.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    eng.create_chat_completion(history, tools=[WEATHER], max_tokens=1)
    spliced = list(eng.last_prompt_ids)
    assert spliced != eng.render(history, tools=[WEATHER])
    eng.create_chat_completion(history, tools=[WEATHER], max_tokens=1)
    assert eng.last_prompt_ids == spliced
    # switched off: always the canonical render
    off = HarmonyEngine(llm, encoding=enc, reuse_generated_ids=False)
    off.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    off.create_chat_completion(history, tools=[WEATHER], max_tokens=1)
    assert off.last_prompt_ids == off.render(history, tools=[WEATHER])


@pytest.mark.parametrize("text", [
    # the model's content type differs from the history's (<|constrain|>json): the re-render differs
    '<|channel|>commentary to=functions.get_weather json<|message|>{"city":"Paris"}<|call|>',
    # a call from the analysis channel: history puts it on commentary
    '<|channel|>analysis to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
    # a special token inside a body is never replayed
    '<|channel|>analysis<|message|>odd <|channel|> text<|end|><|start|>assistant<|channel|>commentary '
    'to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
    # two reasoning messages (history joins them into one)
    '<|channel|>analysis<|message|>One.<|end|><|start|>assistant<|channel|>analysis<|message|>Two.<|end|>'
    '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{}<|call|>',
])
def test_no_splice_when_the_output_is_not_its_history(llm, enc, text):
    eng = HarmonyEngine(llm, encoding=enc)
    first = eng.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, text))
    history = USER + [_reply(first), _result(first, "sunny")]
    eng.create_chat_completion(history, tools=[WEATHER], max_tokens=1)
    assert eng.last_prompt_ids == eng.render(history, tools=[WEATHER])
    assert eng.last_spliced_tokens == 0


def test_keep_policy_splices_a_final_answer_with_end(llm, enc):
    eng = HarmonyEngine(llm, encoding=enc, cot_policy="keep")
    first = eng.create_chat_completion(USER, logits_processor=forced(enc, ANSWER))
    p1, g1 = list(eng.last_prompt_ids), list(eng.last_completion_ids)
    assert g1[-1] == 200002
    history = USER + [_reply(first), {"role": "user", "content": "And tomorrow?"}]
    eng.create_chat_completion(history, max_tokens=1)
    p2 = eng.last_prompt_ids
    # history never holds <|return|>: the final message ends with <|end|> (same ids otherwise)
    assert p2[:len(p1) + len(g1)] == p1 + g1[:-1] + [200007]
    assert eng.last_reused_tokens == len(p1) + len(g1) - 1
    assert _messages(enc, p2) == _messages(enc, eng.render(history))
    # a stop string cut the reply: its text is not what the model wrote -> canonical render
    cut = eng.create_chat_completion(USER, stop=["friend"], logits_processor=forced(enc, ANSWER))
    history = USER + [_reply(cut), {"role": "user", "content": "And tomorrow?"}]
    eng.create_chat_completion(history, max_tokens=1)
    assert eng.last_prompt_ids == eng.render(history) and eng.last_spliced_tokens == 0


# ------------------------------------------------------------------------------- llama.cpp's log

QUIET_SCRIPT = r"""
import sys
from llama_harmony.engine import HarmonyEngine
eng = HarmonyEngine.from_path(sys.argv[1], n_ctx=256, n_batch=64, n_threads=1)
prompt = eng.render([{"role": "user", "content": "hi " * 200}])
try:  # run past the context on purpose: llama.cpp warns "failed to find a memory slot"
    for i, _ in enumerate(eng.llama.generate(prompt, temp=0.0)):
        if i > 300:
            break
except RuntimeError:
    pass
from llama_cpp import Llama
Llama(sys.argv[1], n_ctx=256, n_batch=64, n_threads=1, verbose=False).close()
sys.stdout.write("done")
"""


def test_llama_cpp_is_quiet_when_not_verbose(tiny_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, str(tiny_path)], capture_output=True, timeout=120)
    assert out.stdout == b"done" and out.returncode == 0, out.stderr.decode(errors="replace")
    assert out.stderr == b""  # file-descriptor level: nothing from llama.cpp or llama-cpp-python
    loud = subprocess.run([sys.executable, "-c", "import sys\nfrom llama_harmony.engine import HarmonyEngine\n"
                           "HarmonyEngine.from_path(sys.argv[1], n_ctx=256, n_threads=1, verbose=True)",
                           str(tiny_path)], capture_output=True, timeout=120)
    assert loud.returncode == 0 and b"llama_kv_cache_iswa: using full-size SWA cache" in loud.stderr


def test_log_filter_levels(capsys):
    import logging

    from llama_harmony import llama_backend as engine_mod

    logger = logging.getLogger("llama-cpp-python")
    saved = logger.level
    try:
        logger.setLevel(logging.ERROR)  # what llama-cpp-python's verbose=False sets
        for level, text in [(1, b"debug\n"), (2, b"info\n"), (3, b"warn\n"), (5, b"warn cont\n"),
                            (4, b"error: "), (5, b"continued\n"), (2, b"info again\n")]:
            engine_mod._llama_log(level, text, None)
        assert capsys.readouterr().err == "error: continued\n"
        logger.setLevel(logging.DEBUG)  # verbose=True: everything
        engine_mod._llama_log(2, b"info\n", None)
        assert capsys.readouterr().err == "info\n"
    finally:
        logger.setLevel(saved)


# ------------------------------------------------------------------------------- (4) length

def test_length_cut_mid_final(engine, enc):
    n_analysis = len(enc.encode("<|channel|>analysis<|message|>User asks for a greeting. Say hello.<|end|>"
                                "<|start|>assistant<|channel|>final<|message|>Hello", allowed_special="all"))
    full, chunks = run(engine, enc, ANSWER, max_tokens=n_analysis + 1)
    choice = full["choices"][0]
    assert choice["finish_reason"] == "length"
    assert full["usage"]["completion_tokens"] == n_analysis + 1
    content = choice["message"]["content"]
    assert content and "Hello there, friend!".startswith(content) and content != "Hello there, friend!"
    assert choice["message"]["reasoning_content"] == "User asks for a greeting. Say hello."
    msg, finish = concat(chunks)
    assert finish == "length" and msg["content"] == content


def test_length_cut_mid_tool_call(engine, enc):
    ids = enc.encode(TOOL_CALL, allowed_special="all")
    full = engine.create_chat_completion(USER, tools=[WEATHER], max_tokens=len(ids) - 2,
                                         logits_processor=forced(enc, TOOL_CALL))
    choice = full["choices"][0]
    assert choice["finish_reason"] == "length"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert '{"city":"Paris"}'.startswith(call["function"]["arguments"])
    assert call["function"]["arguments"] != '{"city":"Paris"}'


# ------------------------------------------------------------------------------- (5) malformed output

@pytest.mark.parametrize("text, content, reasoning", [
    # stray text between two messages
    ("<|channel|>analysis<|message|>Thinking.<|end|>Stray words<|start|>assistant<|channel|>final"
     "<|message|>Done.<|return|>", ["Stray words", "Done."], "Thinking."),
    # <|return|> right after <|end|>
    ("<|channel|>final<|message|>All good.<|end|><|return|>", ["All good."], None),
    # a later message without <|message|>
    ("<|channel|>analysis<|message|>Hmm.<|end|><|start|>assistant<|channel|>final Plain reply here<|return|>",
     ["Plain reply here"], "Hmm."),
    # no channel, no <|message|> at all (a refusal shape)
    ("I cannot help with that.<|return|>", ["I cannot help with that."], None),
    # garbage after the call token is never sampled (<|call|> ends generation); a doubled channel
    ("<|channel|>final<|channel|>final<|message|>Twice.<|return|>", ["Twice."], None),
])
def test_malformed_output_keeps_text(engine, enc, text, content, reasoning):
    full, chunks = run(engine, enc, text)
    msg = full["choices"][0]["message"]
    for piece in content:
        assert piece in (msg["content"] or "")
    assert "<|message|>" not in (msg["content"] or "")
    if reasoning is not None:
        assert reasoning in msg["reasoning_content"]
    streamed, finish = concat(chunks)
    assert finish == full["choices"][0]["finish_reason"] == "stop"
    for piece in content:
        assert piece in streamed["content"]


# ------------------------------------------------------------------------------- stop strings, seeds, threads

def test_stop_string(engine, enc):
    text = "<|channel|>final<|message|>One, two, STOP three four five six seven.<|return|>"
    full, chunks = run(engine, enc, text, stop=["STOP"])
    assert full["choices"][0]["message"]["content"] == "One, two, "
    assert full["choices"][0]["finish_reason"] == "stop"
    assert len(engine.last_completion_ids) < len(enc.encode(text, allowed_special="all"))
    assert concat(chunks) == ({"content": "One, two, ", "reasoning_content": "", "reasoning": "",
                               "tool_calls": {}}, "stop")


def test_seed_and_sampling_are_honoured(engine):
    def sample(seed, **kw):
        kw.setdefault("temperature", 1.5)
        engine.create_chat_completion(USER, max_tokens=6, seed=seed, **kw)
        return list(engine.last_completion_ids)

    assert sample(7) == sample(7)
    assert len({tuple(sample(s)) for s in (1, 2, 3)}) > 1
    greedy = sample(1, temperature=0.0)
    assert greedy == sample(2, temperature=0.0)
    biased = sample(1, logit_bias={"12345": 1000.0})
    assert biased == [12345] * 6


def test_usage_in_stream(engine, enc):
    chunks = list(engine.create_chat_completion(USER, stream=True, logits_processor=forced(enc, ANSWER),
                                                stream_options={"include_usage": True}, model="tiny"))
    assert all(c["model"] == "tiny" for c in chunks)
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(enc.encode(ANSWER, allowed_special="all"))
    assert last["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


def test_concurrent_calls_are_serialized(engine, enc):
    results = {}

    def worker(i):
        text = f"<|channel|>final<|message|>Reply number {i}.<|return|>"
        results[i] = engine.create_chat_completion([{"role": "user", "content": f"q{i}"}],
                                                   logits_processor=forced(enc, text))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {i: r["choices"][0]["message"]["content"] for i, r in results.items()} == {
        i: f"Reply number {i}." for i in range(3)}


def test_unfinished_stream_in_same_thread(engine, enc):
    it = engine.create_chat_completion(USER, stream=True, logits_processor=forced(enc, ANSWER))
    next(it)
    with pytest.raises(RuntimeError, match="busy"):
        engine.create_chat_completion(USER, max_tokens=1)
    it.close()  # releases the engine
    assert engine.create_chat_completion(USER, max_tokens=2)["choices"][0]["finish_reason"] == "length"


def test_generate_ids(engine, enc):
    prompt = engine.render(USER)
    text = "<|channel|>final<|message|>Hi<|return|>"
    out = list(engine.generate_ids(prompt, max_tokens=20, logits_processor=forced(enc, text)))
    assert out == enc.encode(text, allowed_special="all")
    assert len(list(engine.generate_ids(prompt, max_tokens=3))) == 3


# ------------------------------------------------------------------------------- (6) llama-cpp-python handler

def test_chat_handler_through_llama(tiny_path, enc):
    llm = Llama(str(tiny_path), n_ctx=512, n_batch=256, n_threads=1, verbose=False,
                chat_handler=HarmonyChatHandler(reasoning_effort="high"))
    out = llm.create_chat_completion(messages=USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    engine = llm.chat_handler.engine_for(llm)
    assert "Reasoning: high" in enc.decode(engine.last_prompt_ids)
    chunks = list(llm.create_chat_completion(messages=USER, stream=True, logits_processor=forced(enc, ANSWER)))
    msg, finish = concat(chunks)
    assert (msg["content"], finish) == ("Hello there, friend!", "stop")
    # sampling arguments reach llama.cpp: max_tokens, stop, seed
    out = llm.create_chat_completion(messages=USER, max_tokens=4, seed=3, temperature=1.0, top_k=0, top_p=1.0)
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 4
    first_ids = list(engine.last_completion_ids)
    llm.create_chat_completion(messages=USER, max_tokens=4, seed=3, temperature=1.0, top_k=0, top_p=1.0)
    assert engine.last_completion_ids == first_ids
    stopped = llm.create_chat_completion(
        messages=USER, stop="two", logits_processor=forced(enc, "<|channel|>final<|message|>one two three<|return|>"))
    assert stopped["choices"][0]["message"]["content"] == "one "
    # per-request effort when the handler is called directly
    llm.chat_handler(llama=llm, messages=USER, max_tokens=1, reasoning_effort="low")
    assert "Reasoning: low" in enc.decode(engine.last_prompt_ids)
    llm.close()


def test_chat_handler_passes_engine_options(tiny_path, enc):
    llm = Llama(str(tiny_path), n_ctx=512, n_batch=256, n_threads=1, verbose=False,
                chat_handler=HarmonyChatHandler(reuse_generated_ids=False, cot_policy="keep", constrained=True))
    engine = llm.chat_handler.engine_for(llm)
    assert (engine.reuse_generated_ids, engine.cot_policy, engine.constrained) == (False, "keep", True)
    first = llm.create_chat_completion(messages=USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    history = USER + [_reply(first), _result(first, "sunny")]
    llm.create_chat_completion(messages=history, tools=[WEATHER], max_tokens=1)
    # no splicing of the model's own ids: the canonical render of the history
    assert engine.last_prompt_ids == engine.render(history, tools=[WEATHER]) and engine.last_spliced_tokens == 0
    llm.close()


def test_registered_chat_format(tiny_path, enc):
    handler = register_chat_format()
    assert register_chat_format() is not handler  # registering again replaces it
    llm = Llama(str(tiny_path), n_ctx=512, n_batch=256, n_threads=1, verbose=False, chat_format="gpt-oss-harmony")
    out = llm.create_chat_completion(messages=USER, logits_processor=forced(enc, ANSWER))
    assert out["choices"][0]["message"]["content"] == "Hello there, friend!"
    assert out["choices"][0]["message"]["reasoning_content"] == "User asks for a greeting. Say hello."
    llm.close()


# ------------------------------------------------------------------------------- (7) errors

def test_missing_model_path(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        HarmonyEngine.from_path(tmp_path / "nope.gguf")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ModelError)
    assert "nope.gguf" in str(info.value)


def test_truncated_model_file(tmp_path, tiny_path):
    bad = tmp_path / "truncated.gguf"
    with open(tiny_path, "rb") as f:
        bad.write_bytes(f.read(1 << 20))
    with pytest.raises(ModelError, match="could not load"):
        HarmonyEngine.from_path(bad, n_ctx=256)


def _llama_arch_gguf(path):
    """A valid, loadable 1-layer *llama*-architecture GGUF with a 259-token byte vocabulary."""
    import gguf

    from llama_harmony.tiny_model import _byte_to_unicode_table

    table = _byte_to_unicode_table()
    tokens = [table[b] for b in range(256)] + ["\u0120\u0120", "<s>", "</s>"]
    types = [int(gguf.TokenType.NORMAL)] * 257 + [int(gguf.TokenType.CONTROL)] * 2
    n_embd, n_ff, n_vocab = 32, 64, len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(8)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["\u0120 \u0120"])
    w.add_bos_token_id(257)
    w.add_eos_token_id(258)
    rng = np.random.default_rng(0)

    def rand(name, shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    rand("token_embd.weight", (n_vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    rand("output.weight", (n_vocab, n_embd))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        rand(f"blk.0.{name}.weight", (n_embd, n_embd))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, np.float32))
    rand("blk.0.ffn_gate.weight", (n_ff, n_embd))
    rand("blk.0.ffn_up.weight", (n_ff, n_embd))
    rand("blk.0.ffn_down.weight", (n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_not_a_gpt_oss_model(tmp_path):
    path = _llama_arch_gguf(tmp_path / "llama.gguf")
    with pytest.raises(ModelError, match="'llama' model, not gpt-oss"):
        HarmonyEngine.from_path(path, n_ctx=64)


def test_from_path_loads_gpt_oss(tiny_path):
    eng = HarmonyEngine.from_path(tiny_path, n_ctx=256, n_threads=1, n_batch=64)
    assert eng.n_ctx == 256 and eng.llama.metadata["general.architecture"] == "gpt-oss"
    eng.llama.close()


def test_context_overflow(engine, llm):
    before = (llm.n_tokens, list(llm.input_ids[:llm.n_tokens]))
    long_messages = [{"role": "user", "content": "word " * (N_CTX + 10)}]
    with pytest.raises(ContextOverflowError) as info:
        engine.create_chat_completion(long_messages)
    assert isinstance(info.value, ValueError) and info.value.n_ctx == N_CTX
    assert info.value.prompt_tokens > N_CTX
    with pytest.raises(ContextOverflowError):  # raised at call time when streaming too
        engine.create_chat_completion(long_messages, stream=True)
    assert (llm.n_tokens, list(llm.input_ids[:llm.n_tokens])) == before  # nothing evaluated
    # max_tokens is clamped to the room left in the context
    out = engine.create_chat_completion([{"role": "user", "content": "word " * (N_CTX - 80)}], max_tokens=500)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"] <= N_CTX


def test_request_errors_at_call_time(engine):
    with pytest.raises(OpenAIFormatError):
        engine.create_chat_completion([{"role": "tool", "tool_call_id": "x", "content": "?"}], stream=True)


# ------------------------------------------------------------------------------- constrained decoding

class ForcedPrefix:
    """Forces ``ids`` then leaves the logits alone (the model samples freely)."""

    def __init__(self, ids):
        self.ids, self.start = list(ids), None

    def __call__(self, input_ids, scores):
        if self.start is None:
            self.start = len(input_ids)
        k = len(input_ids) - self.start
        if k < len(self.ids):
            scores[...] = -np.inf
            scores[self.ids[k]] = 0.0
        return scores


UNIT = {"type": "function", "function": {
    "name": "set_unit", "description": "Set the unit.",
    "parameters": {"type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]},
                                                     "loud": {"type": "boolean"}},
                   "required": ["unit", "loud"]}}}


def test_constrained_tool_arguments(llm, enc):
    eng = HarmonyEngine(llm, encoding=enc, constrained=True)
    # a conforming forced call goes through unchanged, with the grammar applied to the body
    full = eng.create_chat_completion(USER, tools=[WEATHER], logits_processor=forced(enc, TOOL_CALL))
    assert eng.last_constraints == ["tool:get_weather"]
    assert json.loads(full["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    # free sampling of random weights under the grammar still yields schema-valid JSON
    header = enc.encode("<|channel|>commentary to=functions.set_unit <|constrain|>json<|message|>",
                        allowed_special="all")
    for seed in (1,):
        out = eng.create_chat_completion(USER, tools=[UNIT], seed=seed, max_tokens=60, temperature=1.0,
                                         logits_processor=LogitsProcessorList([ForcedPrefix(header)]))
        choice = out["choices"][0]
        assert eng.last_constraints == ["tool:set_unit"]
        assert choice["finish_reason"] == "tool_calls"
        args = json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])
        assert args["unit"] in ("celsius", "fahrenheit") and isinstance(args["loud"], bool)
        assert eng.last_completion_ids[-1] in (199999, 200002, 200012)


def test_constrained_response_format(llm, enc):
    eng = HarmonyEngine(llm, encoding=enc, constrained=True)
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}
    header = enc.encode("<|channel|>final<|message|>", allowed_special="all")
    out = eng.create_chat_completion(USER, response_format=rf, seed=5, max_tokens=40,
                                     logits_processor=LogitsProcessorList([ForcedPrefix(header)]))
    assert eng.last_constraints == ["response_format"]
    assert isinstance(json.loads(out["choices"][0]["message"]["content"])["ok"], bool)
    # unconstrained engine: nothing applied
    plain = HarmonyEngine(llm, encoding=enc)
    plain.create_chat_completion(USER, response_format=rf, max_tokens=3)
    assert plain.last_constraints == []


def test_small_context_is_the_size_asked_for(tiny_path, enc):
    """llama.cpp rounds a small context up (64 -> 256) but llama-cpp-python's token buffer keeps
    the size asked for: the engine uses the smaller, so a long prompt is a clear
    ContextOverflowError and generation stops at the context instead of overrunning the buffer."""
    eng = HarmonyEngine.from_path(tiny_path, n_ctx=64, n_threads=1, encoding=enc)
    assert eng.n_ctx == 64
    with pytest.raises(ContextOverflowError, match="context window"):
        eng.create_chat_completion([{"role": "user", "content": "hello there " * 10}], max_tokens=500)
    eng = HarmonyEngine.from_path(tiny_path, n_ctx=100, n_threads=1, encoding=enc)
    r = eng.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=500)
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"]["total_tokens"] == 100
