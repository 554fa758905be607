"""Shared by the HTTP server tests, in-process (tests/test_server.py) and in gateway mode over
llama-server (tests/test_gateway.py): recorded gpt-oss completions for the replay mode, a tool,
the ``replay`` fixture (over the importing module's ``engine`` fixture), the ``openai`` client
of a test server, its ``/metrics`` read through prometheus_client's parser, and the
log-probability oracle (llama-cpp-python's logits, log-softmaxed here).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator, List, Sequence, Tuple, Union

import pytest

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]

FINAL = ("<|channel|>analysis<|message|>User asks for a greeting. Say hello.<|end|>"
         "<|start|>assistant<|channel|>final<|message|>Hello there, friend!<|return|>")
TOOL_CALL = ("<|channel|>analysis<|message|>Need to use function get_weather.<|end|>"
             "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
             '<|message|>{"city":"Paris"}<|call|>')
AFTER_TOOL = ("<|channel|>analysis<|message|>The tool says sunny.<|end|>"
              "<|start|>assistant<|channel|>final<|message|>It is sunny in Paris.<|return|>")

Expected = List[Tuple[float, List[Tuple[int, float]]]]


@pytest.fixture()
def replay(engine: Any) -> Iterator[Callable[..., Any]]:
    """Set the engine's replay for one test (cleared afterwards): ``replay(text, ...)``."""
    from llama_harmony.replay import Replay

    def set_replay(*texts: str) -> Replay:
        engine.replay = Replay(list(texts))
        return engine.replay

    yield set_replay
    engine.replay = None


def metrics_of(url: str) -> List[Any]:
    """Every sample of ``GET url/metrics``, parsed by prometheus_client."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return [s for fam in text_string_to_metric_families(r.text) for s in fam.samples]


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with these labels."""
    return sum(s.value for s in metrics_of(url) if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def client(server: Any, key: str = "unused", **kw: Any) -> Any:
    """The official ``openai`` client of a test server (``server.url``), without retries."""
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, **kw)


def expected_logprobs(model_path: Union[str, Path], prompt: Sequence[int], generated: Sequence[int], k: int, *,
                      n_ctx: int) -> Expected:
    """For each generated id: (its log-probability, the ``k`` most likely ``(id, logprob)``),
    the log-softmax of llama.cpp's logits (llama-cpp-python, every position evaluated)."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(str(model_path), n_ctx=n_ctx, n_batch=512, n_threads=2, logits_all=True, verbose=False)
    try:
        llm.eval(list(prompt) + list(generated))
        scores = np.array(llm.scores[: len(prompt) + len(generated)], dtype=np.float64)
    finally:
        llm.close()
    out = []
    for i, tok in enumerate(generated):
        row = scores[len(prompt) + i - 1]
        lse = row.max() + math.log(np.exp(row - row.max()).sum())
        top = np.argsort(-row, kind="stable")[:k]
        out.append((row[tok] - lse, [(int(t), row[t] - lse) for t in top]))
    return out


def check_content_logprobs(entries: Sequence[Any], enc: Any, *, text: str, model_path: Union[str, Path],
                           prompt: Sequence[int], generated: Sequence[int], k: int, tolerance: float,
                           n_ctx: int) -> None:
    """``entries`` (the ``choices[0].logprobs.content`` of a reply whose content is ``text``)
    against :func:`expected_logprobs` for the same prompt and generated ids."""
    content_ids = enc.encode(text)
    assert [e.token for e in entries] == [enc.decode([t]) for t in content_ids]
    assert all(e.logprob <= 0 and len(e.top_logprobs) == k for e in entries)
    assert all(e.bytes == list(enc.decode_bytes([t])) for e, t in zip(entries, content_ids))
    expected = expected_logprobs(model_path, prompt, generated, k, n_ctx=n_ctx)
    offset = list(generated).index(content_ids[0])
    for j, e in enumerate(entries):
        lp, top = expected[offset + j]
        assert e.logprob == pytest.approx(lp, abs=tolerance)
        assert [t.logprob for t in e.top_logprobs] == pytest.approx([x for _, x in top], abs=tolerance)
        assert [t.token for t in e.top_logprobs] == [enc.decode([t]) for t, _ in top]


def logprobs_both_ways(c: Any, model: str, set_replay: Any, engine: Any, enc: Any, *, model_path: Union[str, Path],
                       tolerance: float, n_ctx: int) -> Tuple[List[Any], List[Any]]:
    """Ask ``c`` (an ``openai.OpenAI`` client) for a replayed answer with ``logprobs`` and
    ``top_logprobs=3``, not streamed, then streamed (``set_replay(text)`` sets the engine's
    replay). The first is checked against llama-cpp-python (:func:`check_content_logprobs`);
    returns both lists of content entries."""
    text = "Hello there, friend!"
    set_replay(f"<|channel|>final<|message|>{text}<|return|>")
    r = c.chat.completions.create(model=model, messages=USER, logprobs=True, top_logprobs=3)
    entries = r.choices[0].logprobs.content
    check_content_logprobs(entries, enc, text=text, model_path=model_path, prompt=engine.last_prompt_ids,
                           generated=engine.last_completion_ids, k=3, tolerance=tolerance, n_ctx=n_ctx)
    set_replay(f"<|channel|>final<|message|>{text}<|return|>")
    stream = c.chat.completions.create(model=model, messages=USER, logprobs=True, top_logprobs=3, stream=True)
    streamed = [e for ch in stream if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    return list(entries), streamed


def stream_text(c: Any, model: str, **kw: Any) -> Tuple[str, str, Any, Any, int]:
    """A streamed chat completion (``include_usage``): (content, reasoning, finish_reason,
    usage, number of chunks)."""
    content, reasoning, finish, usage, n_chunks = "", "", None, None, 0
    for chunk in c.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True}, **kw):
        n_chunks += 1
        usage = chunk.usage or usage
        if chunk.choices:
            d = chunk.choices[0].delta
            content += d.content or ""
            reasoning += getattr(d, "reasoning_content", None) or ""
            finish = chunk.choices[0].finish_reason or finish
    return content, reasoning, finish, usage, n_chunks


def check_tool_call_then_final_turn(c: Any, model: str, set_replay: Any, enc: Any) -> None:
    """A replayed tool call (not streamed), then the turn after the tool's result (streamed),
    exactly as recorded; the second turn reports the first exchange as cached (the model's own
    call ids are spliced back into its prompt, so the KV cache is kept)."""
    set_replay(TOOL_CALL, AFTER_TOOL)
    r = c.chat.completions.create(model=model, messages=USER, tools=[WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.reasoning_content == "Need to use function get_weather."
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == '{"city":"Paris"}'
    assert r.usage.completion_tokens == len(enc.encode(TOOL_CALL, allowed_special="all"))

    messages = USER + [choice.message.model_dump(exclude_none=True),
                       {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}]
    content, reasoning, finish, usage, n_chunks = stream_text(c, model, messages=messages, tools=[WEATHER])
    assert (content, reasoning, finish) == ("It is sunny in Paris.", "The tool says sunny.", "stop")
    assert n_chunks > 8  # one event per parser delta
    assert usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens + r.usage.completion_tokens - 1


def check_model_names(c: Any, model: str, alias: str, set_replay: Any) -> None:
    """``/v1/models`` lists ``model`` then ``alias``; an unknown model is a 404
    ``model_not_found`` (``param: model``); a request for the alias is answered as ``model``."""
    import openai

    assert [m.id for m in c.models.list().data] == [model, alias]
    assert c.models.retrieve(alias).id == alias
    with pytest.raises(openai.NotFoundError) as e:
        c.models.retrieve("anything")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="anything", messages=USER)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    set_replay(FINAL)
    r = c.chat.completions.create(model=alias, messages=USER)
    assert r.model == model and r.choices[0].message.content == "Hello there, friend!"
