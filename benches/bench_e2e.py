"""End-to-end benchmarks on the tiny gpt-oss model (real llama.cpp through llama-cpp-python).

    .venv/bin/python benches/bench_e2e.py            # both workloads
    .venv/bin/python benches/bench_e2e.py --quick
    .venv/bin/python benches/bench_e2e.py --only share

(a) ``share``: how much of the time per generated token the Harmony layer takes. A realistic
    ~300-token completion (analysis + final answer) is replayed with ``ForcedTokens`` through
    ``HarmonyEngine.create_chat_completion(stream=True)`` after a 20-message conversation with
    tools. Two measurements:

    * instrumented: the engine's ``Llama`` is wrapped so the time spent inside
      ``Llama.generate`` (llama.cpp decode + llama-cpp-python's sampling + the forcing logits
      processor) is summed; everything else in the request (rendering, prompt splicing,
      streaming parser, chunk shaping, the engine's loop) is the Harmony layer. Row ratio =
      llama time / Harmony time per token; target 19x <=> the layer's share <= 5%.
    * differential: the same forced ids through a bare ``Llama.generate`` loop (no rendering,
      no parsing, no chunks) against the full engine request. Row ratio = bare / engine time;
      target 0.95 <=> overhead <= 5% of the request.

    The tiny model (64-dim, 2 layers) decodes far faster than gpt-oss-20b, so the share
    measured here is an upper bound of the share with a real model.

(b) ``prompt``: preparing the prompt of the same 20-message conversation with 6 tools:
    ``render_prompt`` (OpenAI messages -> Harmony conversation -> ids) against
    llama-cpp-python's Jinja chat-template path (``Jinja2ChatFormatter(...)(messages=...,
    tools=...)`` then ``Llama.tokenize(prompt.encode(), special=True)``). The gpt-oss chat
    template is not available offline: :data:`HARMONY_JINJA_TEMPLATE` is a stand-in written for
    this benchmark, of similar size and structure (macros for the system message, the
    TypeScript tool namespace with a recursive type macro, a message loop with reasoning
    dropping and tool-call / tool-result rendering). Its output is checked to be the exact text
    our renderer produces for the conversation, so both sides do the same job. On the Jinja
    side ``Llama.tokenize`` dominates: llama.cpp's pre-tokenizer split for the ``gpt-4o``
    pre-tokenizer type (the same with the real GGUF) costs ~20 us per byte here; the tiny
    model has one BPE merge, so the real 200k-merge vocabulary would only add to it (the
    Jinja side is under-estimated). The template alone is printed in the note.
    Rows: our render cache off (every message tokenized, the fair comparison) and on (what
    a chat loop gets: earlier messages are cache hits). Target 10x.

From bench.py::

    sys.path.insert(0, str(Path(__file__).parent)); import bench_e2e
    bench_e2e.run(repeat=repeat, record_fn=record)          # or bench_share / bench_prompt

Each workload prints rows in bench.py's ``record()`` format (and appends them to the
``record_fn``'s results list when one is passed).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import median_time, record  # noqa: E402

N_CTX = 4096
N_THREADS = 1  # a fuzzer may hold the other core

# ---------------------------------------------------------------------------------------------
# The stand-in Harmony chat template (Jinja), in the style of the gpt-oss template
# ---------------------------------------------------------------------------------------------

HARMONY_JINJA_TEMPLATE = r"""
{#- Stand-in for the gpt-oss Harmony chat template (see benches/bench_e2e.py). -#}
{#- Renders: system message, developer message (instructions + functions namespace as
    TypeScript), user / assistant (analysis, preamble, tool calls, final) / tool messages,
    reasoning of completed turns dropped, and the generation prompt. -#}

{%- macro render_typescript_type(param_spec, indent) -%}
    {%- if param_spec.type is defined and param_spec.type is not string and param_spec.type is iterable -%}
        {%- for t in param_spec.type -%}
            {{- render_typescript_type({"type": t}, indent) -}}
            {%- if not loop.last -%}{{- " | " -}}{%- endif -%}
        {%- endfor -%}
    {%- elif param_spec.oneOf is defined -%}
        {%- for variant in param_spec.oneOf -%}
            {{- render_typescript_type(variant, indent) -}}
            {%- if not loop.last -%}{{- " | " -}}{%- endif -%}
        {%- endfor -%}
    {%- elif param_spec.type == "array" -%}
        {%- if param_spec["items"] is defined -%}
            {%- set item = param_spec["items"] -%}
            {%- if item.type == "string" -%}{{- "string[]" -}}
            {%- elif item.type in ("number", "integer") -%}{{- "number[]" -}}
            {%- elif item.type == "boolean" -%}{{- "boolean[]" -}}
            {%- else -%}
                {%- set inner = render_typescript_type(item, indent) -%}
                {%- if inner | length > 40 or " | " in inner -%}{{- "Array<" ~ inner ~ ">" -}}
                {%- else -%}{{- inner ~ "[]" -}}
                {%- endif -%}
            {%- endif -%}
        {%- else -%}{{- "any[]" -}}
        {%- endif -%}
    {%- elif param_spec.enum is defined -%}
        {%- for value in param_spec.enum -%}
            {%- if value is string -%}{{- '"' ~ value ~ '"' -}}{%- else -%}{{- value -}}{%- endif -%}
            {%- if not loop.last -%}{{- " | " -}}{%- endif -%}
        {%- endfor -%}
    {%- elif param_spec.type == "string" -%}{{- "string" -}}
    {%- elif param_spec.type in ("number", "integer") -%}{{- "number" -}}
    {%- elif param_spec.type == "boolean" -%}{{- "boolean" -}}
    {%- elif param_spec.type == "object" -%}
        {%- if param_spec.properties is defined and param_spec.properties -%}
            {{- "{\n" -}}
            {%- for name, spec in param_spec.properties.items() -%}
                {{- indent ~ "    " ~ name -}}
                {%- if name not in (param_spec.required or []) -%}{{- "?" -}}{%- endif -%}
                {{- ": " ~ render_typescript_type(spec, indent ~ "    ") ~ ",\n" -}}
            {%- endfor -%}
            {{- indent ~ "    }" -}}
        {%- else -%}{{- "object" -}}
        {%- endif -%}
    {%- else -%}{{- "any" -}}
    {%- endif -%}
{%- endmacro -%}

{%- macro render_tool_namespace(namespace_name, tools) -%}
    {{- "## " ~ namespace_name ~ "\n\nnamespace " ~ namespace_name ~ " {\n\n" -}}
    {%- for tool in tools -%}
        {%- set fn = tool.function if tool.function is defined else tool -%}
        {%- if fn.description -%}
            {%- for line in fn.description.split("\n") -%}{{- "// " ~ line ~ "\n" -}}{%- endfor -%}
        {%- endif -%}
        {%- set params = fn.parameters if fn.parameters is defined else none -%}
        {%- if params and params.properties -%}
            {{- "type " ~ fn.name ~ " = (_: {\n" -}}
            {%- for name, spec in params.properties.items() -%}
                {%- if spec.description is defined and spec.description -%}
                    {{- "// " ~ spec.description ~ "\n" -}}
                {%- endif -%}
                {{- name -}}
                {%- if name not in (params.required or []) -%}{{- "?" -}}{%- endif -%}
                {{- ": " ~ render_typescript_type(spec, "") ~ "," -}}
                {%- if spec.default is defined -%}
                    {%- if spec.default is string -%}{{- " // default: " ~ spec.default -}}
                    {%- else -%}{{- " // default: " ~ (spec.default | tojson) -}}
                    {%- endif -%}
                {%- endif -%}
                {{- "\n" -}}
            {%- endfor -%}
            {{- "}) => any;\n\n" -}}
        {%- else -%}
            {{- "type " ~ fn.name ~ " = () => any;\n\n" -}}
        {%- endif -%}
    {%- endfor -%}
    {{- "} // namespace " ~ namespace_name -}}
{%- endmacro -%}

{%- macro render_system_message(reasoning_effort, has_functions, model_identity) -%}
    {{- model_identity ~ "\nKnowledge cutoff: 2024-06\n" -}}
    {%- if conversation_start_date is defined and conversation_start_date -%}
        {{- "Current date: " ~ conversation_start_date ~ "\n" -}}
    {%- endif -%}
    {{- "\nReasoning: " ~ reasoning_effort ~ "\n\n" -}}
    {{- "# Valid channels: analysis, commentary, final. Channel must be included for every message." -}}
    {%- if has_functions -%}
        {{- "\nCalls to these tools must go to the commentary channel: 'functions'." -}}
    {%- endif -%}
{%- endmacro -%}

{%- macro text_of(content) -%}
    {%- if content is string -%}{{- content -}}
    {%- elif content -%}
        {%- for part in content -%}{%- if part.type == "text" -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
    {%- endif -%}
{%- endmacro -%}

{#- ---- system message ---- -#}
{%- set has_functions = tools is defined and tools and tool_choice != "none" -%}
{{- "<|start|>system<|message|>" -}}
{{- render_system_message(reasoning_effort | default("medium"), has_functions,
                          model_identity | default("You are ChatGPT, a large language model trained by OpenAI.")) -}}
{{- "<|end|>" -}}

{#- ---- developer message: leading system/developer messages + tools ---- -#}
{%- set ns = namespace(first=0, instructions=[], last_user=-1, tool_name="") -%}
{%- for message in messages -%}
    {%- if loop.index0 == ns.first and message.role in ("system", "developer") -%}
        {%- set ns.instructions = ns.instructions + [text_of(message.content)] -%}
        {%- set ns.first = ns.first + 1 -%}
    {%- endif -%}
    {%- if message.role == "user" -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- if ns.instructions or has_functions -%}
    {{- "<|start|>developer<|message|>" -}}
    {%- if ns.instructions -%}
        {{- "# Instructions\n\n" ~ (ns.instructions | join("\n\n")) -}}
        {%- if has_functions -%}{{- "\n\n" -}}{%- endif -%}
    {%- endif -%}
    {%- if has_functions -%}
        {{- "# Tools\n\n" ~ render_tool_namespace("functions", tools) -}}
    {%- endif -%}
    {{- "<|end|>" -}}
{%- endif -%}

{#- ---- messages ---- -#}
{%- for message in messages[ns.first:] -%}
    {%- set index = loop.index0 + ns.first -%}
    {%- if message.role in ("system", "developer") -%}
        {{- "<|start|>developer<|message|># Instructions\n\n" ~ text_of(message.content) ~ "<|end|>" -}}
    {%- elif message.role == "user" -%}
        {{- "<|start|>user<|message|>" ~ text_of(message.content) ~ "<|end|>" -}}
    {%- elif message.role == "assistant" -%}
        {%- set reasoning = message.reasoning_content or message.reasoning or message.thinking -%}
        {%- if reasoning and index > ns.last_user -%}
            {{- "<|start|>assistant<|channel|>analysis<|message|>" ~ reasoning ~ "<|end|>" -}}
        {%- endif -%}
        {%- set content = text_of(message.content) -%}
        {%- if message.tool_calls -%}
            {%- if content -%}
                {{- "<|start|>assistant<|channel|>commentary<|message|>" ~ content ~ "<|end|>" -}}
            {%- endif -%}
            {%- for call in message.tool_calls -%}
                {%- set fn = call.function -%}
                {{- "<|start|>assistant to=functions." ~ fn.name ~ "<|channel|>commentary <|constrain|>json<|message|>" -}}
                {%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}
                {{- "<|call|>" -}}
            {%- endfor -%}
        {%- elif content -%}
            {{- "<|start|>assistant<|channel|>final<|message|>" ~ content ~ "<|end|>" -}}
        {%- endif -%}
    {%- elif message.role == "tool" -%}
        {%- set ns.tool_name = "" -%}
        {%- for previous in messages[:index] | reverse -%}
            {%- if previous.role == "assistant" and previous.tool_calls and not ns.tool_name -%}
                {%- for call in previous.tool_calls -%}
                    {%- if call.id == message.tool_call_id -%}{%- set ns.tool_name = call.function.name -%}{%- endif -%}
                {%- endfor -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if not ns.tool_name -%}{{- raise_exception("tool message without a matching tool call") -}}{%- endif -%}
        {{- "<|start|>functions." ~ ns.tool_name ~ " to=assistant<|channel|>commentary<|message|>"
            ~ text_of(message.content) ~ "<|end|>" -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- "<|start|>assistant" -}}{%- endif -%}
"""

# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _words(seed: int) -> List[str]:
    import random

    rng = random.Random(seed)
    base = ("the weather service returns a forecast for each city and the user wants to compare "
            "temperatures rain wind and humidity over the next days so we should call the tools "
            "carefully check units and summarize results in a short friendly answer with numbers").split()
    return [rng.choice(base) for _ in range(20000)]


def _text(words: List[str], start: int, n: int) -> str:
    chunk = words[start:start + n]
    return " ".join(chunk).capitalize() + "."


def bench_tools() -> List[Dict[str, Any]]:
    """Six realistic function tools (descriptions, enums, defaults, arrays, a nested object)."""
    def fn(name, desc, props=None, required=()):
        params = {"type": "object", "properties": props or {}}
        if required:
            params["required"] = list(required)
        return {"type": "function", "function": {"name": name, "description": desc, "parameters": params}}

    return [
        fn("get_weather", "Get the current weather for a city.",
           {"city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"}}, ["city"]),
        fn("get_forecast", "Get the forecast for the next days.\nUp to 14 days.",
           {"city": {"type": "string", "description": "City name"},
            "days": {"type": "integer", "description": "How many days", "default": 3},
            "fields": {"type": "array", "items": {"type": "string"}, "description": "Fields to return"}},
           ["city"]),
        fn("search_places", "Search places by name.",
           {"query": {"type": "string", "description": "What to look for"},
            "limit": {"type": "integer", "default": 10},
            "filters": {"type": "object", "properties": {"country": {"type": "string"},
                                                         "min_population": {"type": "integer"}},
                        "required": ["country"]}}, ["query"]),
        fn("convert_units", "Convert a value between units.",
           {"value": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
           ["value", "from", "to"]),
        fn("get_time", "Current local time.", {}),
        fn("send_message", "Send a message to the user's phone.",
           {"text": {"type": "string", "description": "Message body"},
            "urgent": {"type": "boolean"}}, ["text"]),
    ]


def bench_messages(n_messages: int = 20, words_per_message: int = 60) -> List[Dict[str, Any]]:
    """A realistic chat with tools: a system message, then user turns, each answered by a tool
    chain (reasoning + call, tool result) and a final answer with reasoning."""
    words = _words(5)
    pos = 0

    def text(n: int = words_per_message) -> str:
        nonlocal pos
        pos += n
        return _text(words, pos - n, n)

    msgs: List[Dict[str, Any]] = [{"role": "system", "content": "You are a weather assistant. " + text(30)}]
    k = 0
    while len(msgs) < n_messages:
        msgs.append({"role": "user", "content": text()})
        for city in ("Paris", "Lyon"):
            if len(msgs) >= n_messages - 1:
                break
            k += 1
            call_id = f"call_{k:04d}"
            msgs.append({"role": "assistant", "content": None, "reasoning_content": text(40),
                         "tool_calls": [{"id": call_id, "type": "function", "function": {
                             "name": "get_forecast", "arguments": f'{{"city":"{city}","days":3}}'}}]})
            msgs.append({"role": "tool", "tool_call_id": call_id,
                         "content": f'{{"city":"{city}","forecast":[{{"day":1,"temp":21}},{{"day":2,"temp":19}}],'
                                    f'"note":"{text(20)}"}}'})
        if len(msgs) < n_messages:
            msgs.append({"role": "assistant", "content": text(), "reasoning_content": text(40)})
    msgs = msgs[:n_messages]
    if msgs[-1]["role"] != "user":  # the request is a user turn
        msgs[-1] = {"role": "user", "content": text()}
    return msgs


def completion_text(enc: Any, n_tokens: int = 300) -> str:
    """A realistic ~n_tokens completion: analysis, then the final answer, then <|return|>."""
    words = _words(9)
    a_words, f_words = 1, 1
    while True:
        text = ("<|channel|>analysis<|message|>" + _text(words, 0, a_words) + "<|end|>"
                "<|start|>assistant<|channel|>final<|message|>" + _text(words, 5000, f_words) + "<|return|>")
        n = len(enc.encode(text, allowed_special="all"))
        if n >= n_tokens:
            return text
        if a_words < 2 * f_words + 8:
            a_words += 2
        else:
            f_words += 2


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def load_tiny(enc: Any = None, cache_dir: Optional[str] = None, n_ctx: int = N_CTX) -> Tuple[Any, Any]:
    """``(llama, encoding)``: the tiny gpt-oss model (built into the cache dir on first use)."""
    from llama_harmony import HarmonyEncodingName, load_harmony_encoding, tiny_model
    from llama_harmony.engine import install_llama_log_filter

    install_llama_log_filter()
    from llama_cpp import Llama

    if enc is None:
        enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    path = tiny_model.ensure_tiny_model(enc.token_bytes_table(tiny_model.N_VOCAB), cache_dir=cache_dir)
    llm = Llama(str(path), n_ctx=n_ctx, n_batch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    return llm, enc


# ---------------------------------------------------------------------------------------------
# (a) Harmony layer share of the time per generated token
# ---------------------------------------------------------------------------------------------


class _TimedGenerator:
    def __init__(self, gen: Any, acc: List[float]):
        self._gen, self._acc = gen, acc

    def __iter__(self) -> "_TimedGenerator":
        return self

    def __next__(self) -> int:
        t = time.perf_counter()
        try:
            return next(self._gen)
        finally:
            self._acc[0] += time.perf_counter() - t

    def close(self) -> None:
        t = time.perf_counter()
        try:
            self._gen.close()
        finally:
            self._acc[0] += time.perf_counter() - t


class _TimedLlama:
    """Forwards to a ``Llama``; sums the time spent inside ``generate``."""

    def __init__(self, llama: Any):
        self.__dict__["_llama"] = llama
        self.__dict__["acc"] = [0.0]

    def generate(self, *args: Any, **kwargs: Any) -> _TimedGenerator:
        t = time.perf_counter()
        gen = self._llama.generate(*args, **kwargs)
        self.acc[0] += time.perf_counter() - t
        return _TimedGenerator(gen, self.acc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._llama, name, value)


def bench_share(llm: Any, enc: Any, repeat: int = 7, record_fn: Callable[..., None] = record,
                verbose: bool = True) -> Dict[str, float]:
    """(a): see the module docstring. Returns the measured numbers."""
    from llama_cpp import LogitsProcessorList

    from llama_harmony.engine import EOG_IDS, HarmonyEngine
    from llama_harmony.tiny_model import ForcedTokens

    messages, tools = bench_messages(), bench_tools()
    text = completion_text(enc, 300)
    ids = enc.encode(text, allowed_special="all")
    engine = HarmonyEngine(llm, encoding=enc)
    timed = _TimedLlama(llm)
    sampling = dict(temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0)

    def through_engine(eng: Any) -> int:
        n = 0
        for _ in eng.create_chat_completion(messages, tools=tools, stream=True,
                                            logits_processor=LogitsProcessorList([ForcedTokens(ids)]), **sampling):
            n += 1
        return n

    # correctness of the replay, once
    full = engine.create_chat_completion(messages, tools=tools,
                                         logits_processor=LogitsProcessorList([ForcedTokens(ids)]), **sampling)
    assert engine.last_completion_ids == ids, "the forced sequence was not replayed"
    assert full["choices"][0]["message"]["content"] and full["choices"][0]["message"]["reasoning_content"]
    prompt = list(engine.last_prompt_ids)
    n_gen = len(ids)

    def bare() -> None:  # the same ids through Llama.generate alone
        out = 0
        gen = llm.generate(prompt, temp=1.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0,
                           logits_processor=LogitsProcessorList([ForcedTokens(ids)]))
        try:
            for tok in gen:
                out += 1
                if tok in EOG_IDS:
                    break
        finally:
            gen.close()
        assert out == n_gen

    # instrumented runs: total request time vs time inside Llama.generate
    inst = HarmonyEngine(timed, encoding=enc)
    through_engine(inst)  # warm-up (the prompt is in the KV cache from here on)
    totals, llamas, chunks = [], [], 0
    for _ in range(repeat):
        timed.acc[0] = 0.0
        t = time.perf_counter()
        chunks = through_engine(inst)
        totals.append(time.perf_counter() - t)
        llamas.append(timed.acc[0])
    ours = [tot - ll for tot, ll in zip(totals, llamas)]
    share = statistics.median(o / tot for o, tot in zip(ours, totals))
    ours_tok = statistics.median(ours) / n_gen
    llama_tok = statistics.median(llamas) / n_gen
    record_fn(f"e2e stream {n_gen} tokens: llama time / Harmony-layer time, per token",
              llama_tok, ours_tok, 19,
              note=f"(instrumented; Harmony share {share:.1%}, target <= 5%; {ours_tok * 1e6:.1f} us of "
                   f"{(ours_tok + llama_tok) * 1e6:.0f} us per token, {chunks} chunks, prompt {len(prompt)} tokens)")

    # differential: bare Llama.generate loop vs the full engine request, interleaved
    t_bare, t_engine = [], []
    bare()
    through_engine(engine)
    for _ in range(repeat):
        t = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        through_engine(engine)
        t_engine.append(time.perf_counter() - t)
    tb, te = statistics.median(t_bare), statistics.median(t_engine)
    record_fn(f"e2e stream {n_gen} tokens: bare Llama.generate loop vs engine request", tb, te, 0.95,
              note=f"(differential; overhead {(te - tb) / te:.1%} of the request, target <= 5%)")

    # breakdown of the Harmony layer (separate, wrapped run; informational)
    breakdown = _breakdown(engine, through_engine, repeat) if verbose else {}
    if verbose:
        parts = ", ".join(f"{k} {v / n_gen * 1e6:.2f} us/token" for k, v in breakdown.items())
        print(f"    breakdown per generated token: {parts}", flush=True)
    return {"share": share, "ours_per_token": ours_tok, "llama_per_token": llama_tok, "bare": tb, "engine": te}


def _breakdown(engine: Any, run: Callable[[Any], int], repeat: int) -> Dict[str, float]:
    """Median time per request in the render, the parser tracker and the chunk shaping."""
    from llama_harmony import engine as engine_mod
    from llama_harmony import openai_format

    acc: Dict[str, float] = {"render+splice": 0.0, "parser": 0.0, "chunks": 0.0}
    targets = [(engine_mod.HarmonyEngine, "render", "render+splice"), (engine_mod.HarmonyEngine, "_splice", "render+splice"),
               (openai_format.ParserTracker, "process", "parser"), (openai_format.ParserTracker, "process_eos", "parser"),
               (openai_format.ChunkStream, "feed", "chunks"), (openai_format.ChunkStream, "finish", "chunks"),
               (openai_format.ChunkStream, "start", "chunks")]
    saved = []

    def wrap(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[key] += time.perf_counter() - t
        return timed

    for cls, name, key in targets:
        saved.append((cls, name, cls.__dict__[name]))
        setattr(cls, name, wrap(cls.__dict__[name], key))
    try:
        per_run: Dict[str, List[float]] = {k: [] for k in acc}
        for _ in range(max(3, repeat)):
            for k in acc:
                acc[k] = 0.0
            run(engine)
            for k in acc:
                per_run[k].append(acc[k])
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
    return {k: statistics.median(v) for k, v in per_run.items()}


# ---------------------------------------------------------------------------------------------
# (b) prompt preparation vs llama-cpp-python's Jinja chat-template path
# ---------------------------------------------------------------------------------------------


def bench_prompt(llm: Any, enc: Any, repeat: int = 15, record_fn: Callable[..., None] = record) -> Dict[str, float]:
    """(b): see the module docstring. Returns the measured medians."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from llama_harmony import HarmonyEncodingName, load_harmony_encoding
    from llama_harmony.openai_format import render_prompt

    messages, tools = bench_messages(), bench_tools()
    formatter = Jinja2ChatFormatter(template=HARMONY_JINJA_TEMPLATE, eos_token="<|return|>",
                                    bos_token="<|startoftext|>")
    jinja_text = formatter(messages=messages, tools=tools).prompt
    ours_ids = render_prompt(enc, messages, tools=tools)
    ours_text = enc.decode(ours_ids)
    if jinja_text != ours_text:
        import difflib

        diff = "\n".join(list(difflib.unified_diff(ours_text.splitlines(), jinja_text.splitlines(),
                                                   "llama_harmony", "jinja", lineterm=""))[:40])
        raise AssertionError("the stand-in template does not render what llama_harmony renders:\n" + diff)

    def jinja_path() -> List[int]:
        prompt = formatter(messages=messages, tools=tools).prompt
        return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    cold = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS, render_cache=False)
    n_jinja = len(jinja_path())
    t_jinja = median_time(jinja_path, repeat, min_time=0.5)
    t_cold = median_time(lambda: render_prompt(cold, messages, tools=tools), repeat, min_time=0.5)
    t_warm = median_time(lambda: render_prompt(enc, messages, tools=tools), repeat, min_time=0.5)
    t_template = median_time(lambda: formatter(messages=messages, tools=tools), repeat, min_time=0.5)
    note = (f"({len(messages)} messages, {len(tools)} tools, {len(ours_ids)} tokens; Jinja side: template "
            f"{t_template * 1e3:.2f} ms + tokenize, {n_jinja} tiny-vocab tokens)")
    record_fn("prompt prep, 20 msgs + tools: Jinja template + tokenize vs render_prompt", t_jinja, t_cold, 10,
              note=note + " render cache off")
    record_fn("  the same, render cache on (earlier messages cached)", t_jinja, t_warm, 10)
    return {"jinja": t_jinja, "ours_cold": t_cold, "ours_warm": t_warm, "template_only": t_template}


# ---------------------------------------------------------------------------------------------


def run(repeat: int = 7, record_fn: Callable[..., None] = record, only: Optional[Sequence[str]] = None,
        cache_dir: Optional[str] = None, enc: Any = None) -> None:
    """Both workloads (or ``only`` some of ``"share"``, ``"prompt"``) on the tiny model."""
    llm, enc = load_tiny(enc, cache_dir)
    try:
        groups = list(only or ["share", "prompt"])
        if "share" in groups:
            bench_share(llm, enc, repeat=repeat, record_fn=record_fn)
        if "prompt" in groups:
            bench_prompt(llm, enc, repeat=max(repeat, 15), record_fn=record_fn)
    finally:
        llm.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--only", choices=["share", "prompt"], action="append", help="run only these workloads")
    ap.add_argument("--cache-dir", help="where the tiny model is built/cached (default: the llama-harmony cache)")
    args = ap.parse_args(argv)
    import platform

    import bench

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"tiny gpt-oss model, n_threads={N_THREADS}")
    start = len(bench.RESULTS)
    run(repeat=3 if args.quick else 7, only=args.only, cache_dir=args.cache_dir)
    rows = bench.RESULTS[start:]
    missed = [r["workload"] for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} targets met" + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
