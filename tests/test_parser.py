"""The streaming parser from Python: the reference's golden parse vectors (compat API), the
native event API, chunk-boundary invariance and the lenient mode's never-raise guarantee."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llama_harmony as lh
from llama_harmony import Role, StreamableParser, StreamState
from llama_harmony import _parser as P

from conftest import load_jsonl

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ROWS = load_jsonl("parse.jsonl")
START, MESSAGE, END, RETURN, CALL, CHANNEL, CONSTRAIN = 200006, 200008, 200007, 200002, 200012, 200005, 200003
SPECIALS = [199998, 199999, 200002, 200003, 200005, 200006, 200007, 200008, 200010, 200012, 201088]

# Golden rows where lenient mode intentionally differs from the reference's non-strict result
# (the reference loses text or misparses; see src/parser/mod.rs, "Lenient mode").
LENIENT_DEVIATIONS = {
    "final_constrain_json", "final_plain_json", "constrain_without_recipient_commentary",
    "channel_words_json_no_to", "constrain_twice", "missing_message_first", "missing_message_no_channel",
    "missing_message_second", "missing_message_then_valid", "role_given_but_start_present",
    "channel_then_recipient_then_channel", "to_with_space", "endoftext_in_content", "only_end_role_given",
    "start_token_in_content",
}


def role_of(row):
    return None if row["role"] is None else Role(row["role"])


def dicts(messages):
    return [m.to_dict() for m in messages]


def toks(enc, text: str) -> list[int]:
    return enc.encode(text, allowed_special="all")


# ---------------------------------------------------------------------------------------------
# golden vectors of the reference
# ---------------------------------------------------------------------------------------------

def test_goldens_present():
    assert len(ROWS) >= 100


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['name']}-{'strict' if r['strict'] else 'nonstrict'}" for r in ROWS])
def test_golden_compat_stream(enc, row):
    """Per token: state, delta, channel, recipient, content type, role, content; the error (text and
    position) and the messages; in strict mode and in the reference's non-strict mode."""
    mode = "strict" if row["strict"] else "non_strict"
    p = StreamableParser(enc, role_of(row), strict=row["strict"], mode=mode)
    for i, t in enumerate(row["tokens"]):
        try:
            assert p.process(t) is p
        except lh.HarmonyError as e:
            assert row["stream_error"] == {"error": str(e), "type": "HarmonyError", "at": i}
            assert dicts(p.messages) == row["messages_at_error"]
            return
        r = p.current_role
        got = {"state": p.state.value, "delta": p.last_content_delta, "channel": p.current_channel,
               "recipient": p.current_recipient, "content_type": p.current_content_type,
               "role": None if r is None else r.value, "content": p.current_content}
        assert got == row["stream"][i], f"token {i}"
        assert isinstance(p.state, StreamState)
        assert r is None or isinstance(r, Role)
    assert row["stream_error"] is None
    want = row["messages_after_eos"]
    if isinstance(want, dict):
        with pytest.raises(lh.HarmonyError) as ei:
            p.process_eos()
        assert str(ei.value) == want["error"]
    else:
        assert p.process_eos() is p
        assert dicts(p.messages) == want
        assert p.tokens == row["tokens"]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['name']}-{'strict' if r['strict'] else 'nonstrict'}" for r in ROWS])
def test_golden_parse_helper(enc, row):
    mode = "strict" if row["strict"] else "non_strict"
    want = row["result"]
    if isinstance(want, dict):
        with pytest.raises(lh.HarmonyError) as ei:
            P.parse_messages_from_completion_tokens(enc, row["tokens"], role_of(row), mode=mode)
        assert str(ei.value) == want["error"]
    else:
        assert dicts(P.parse_messages_from_completion_tokens(enc, row["tokens"], role_of(row), mode=mode)) == want
    if row["strict"]:
        # the encoding method (strict=True is the reference's strict mode)
        if isinstance(want, dict):
            with pytest.raises(lh.HarmonyError):
                enc.parse_messages_from_completion_tokens(row["tokens"], role_of(row), strict=True)
        else:
            assert dicts(enc.parse_messages_from_completion_tokens(row["tokens"], role_of(row), strict=True)) == want


@pytest.mark.parametrize("row", [r for r in ROWS if not r["strict"]], ids=lambda r: r["name"])
def test_golden_lenient(enc, row):
    """strict=False (lenient) never raises; same messages as the reference where it succeeds,
    except the documented deviations."""
    got = enc.parse_messages_from_completion_tokens(row["tokens"], role_of(row), strict=False)
    if isinstance(row["result"], list) and row["name"] not in LENIENT_DEVIATIONS:
        assert dicts(got) == row["result"]
    p = StreamableParser(enc, role_of(row), strict=False)
    events = p.feed(row["tokens"]) + p.finish()
    assert dicts(p.messages) == dicts(got)
    assert isinstance(events[-1], (P.Done, P.Incomplete))
    assert len(p.repaired) == len(p.messages)


def test_state_data(enc):
    p = StreamableParser(enc, None)
    assert p.state_data == {"state": "ExpectStart"}
    for t in toks(enc, "<|start|>functions.f to=assistant<|channel|>commentary json<|message|>ab"):
        p.process(t)
    assert p.state_data == {"state": "Content", "header": {"author": {"role": "tool", "name": "functions.f"},
                            "recipient": "assistant", "channel": "commentary", "content_type": "json"},
                            "content_tokens": [378]}
    p = StreamableParser(enc, Role.ASSISTANT)
    p.process(CHANNEL)
    assert p.state_data == {"state": "Header", "header_tokens": [CHANNEL]}
    assert p.state is StreamState.HEADER


def test_out_of_range_ids(enc):
    with pytest.raises(OverflowError):
        StreamableParser(enc, None).process(-1)
    p = StreamableParser(enc, Role.ASSISTANT, strict=False)
    p.feed(toks(enc, "<|channel|>final<|message|>a") + [-5, 2**40, 999_999] + toks(enc, "b<|end|>"))
    assert p.messages[0].content[0].text == "a\ufffd\ufffd\ufffdb"


# ---------------------------------------------------------------------------------------------
# the event API
# ---------------------------------------------------------------------------------------------

def test_events_tool_call_and_final(enc):
    ids = toks(enc, "<|channel|>analysis<|message|>Need weather.<|end|>"
                    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
                    "<|message|>{\"city\":\"Paris\"}<|call|>")
    p = StreamableParser(enc, Role.ASSISTANT, strict=False)
    events = p.feed(ids) + p.finish()
    types = [e.type for e in events]
    assert types[0] == "message_start" and events[0].channel == "analysis"
    start = next(e for e in events if isinstance(e, P.ToolCallStart))
    assert (start.index, start.call_index, start.name, start.recipient) == (1, 0, "get_weather", "functions.get_weather")
    args = "".join(e.arguments for e in events if isinstance(e, P.ToolCallDelta))
    assert json.loads(args) == {"city": "Paris"}
    assert P.ToolCallDone(1, 0) in events
    assert P.MessageDone(1, CALL) in events
    assert events[-1] == P.Done("call")
    assert P.ToolCallStart.__match_args__ == ("index", "call_index", "name", "recipient")
    # one feed() merges the per-token deltas of a message into one event
    assert "ContentDelta(index=0, text='Need weather.')" in repr(events)
    assert sum(isinstance(e, P.ContentDelta) for e in events) == 1


def test_events_repairs_and_lengths(enc):
    ids = toks(enc, "<|start|>assistant<|channel|>final<|message|>Hi<|end|><|return|>stray")
    p = StreamableParser(enc, None, strict=False)
    events = p.feed(ids) + p.finish()
    kinds = [e.kind for e in events if isinstance(e, P.Repair)]
    assert kinds == ["stray_token", "stray_text"]
    assert [m.content[0].text for m in p.messages] == ["Hi", "stray"]
    assert p.repaired == [False, True]
    p = StreamableParser(enc, None, strict=False)
    p.feed(toks(enc, "<|start|>assistant<|channel|>final<|message|>Hello wor"))
    assert p.finish(length=True)[-1] == P.Incomplete("length")


def test_lenient_missing_end_before_start(enc):
    """gpt-oss sometimes omits <|end|> before the next <|start|>: lenient mode ends the message
    there (repair ``missing_end``); the reference's modes keep the next header as text."""
    s = ("<|start|>assistant<|channel|>analysis<|message|>Let me think."
         "<|start|>assistant<|channel|>final<|message|>4<|return|>")
    p = StreamableParser(enc, None, strict=False)
    events = p.feed(toks(enc, s)) + p.finish()
    assert [(m.channel, m.content[0].text) for m in p.messages] == [("analysis", "Let me think."), ("final", "4")]
    assert p.repaired == [True, False]
    assert P.Repair(0, "missing_end", "") in events
    assert P.MessageDone(0, None) in events and P.MessageDone(1, RETURN) in events
    assert events[-1] == P.Done("return")
    for mode in ("strict", "non_strict"):
        ms = P.parse_messages_from_completion_tokens(enc, toks(enc, s), None, mode=mode)
        assert [m.content[0].text for m in ms] == ["Let me think.<|start|>assistant<|channel|>final<|message|>4"]
    # per token (the compat API) the same
    p = StreamableParser(enc, None, strict=False)
    for t in toks(enc, s):
        p.process(t)
    p.process_eos()
    assert [m.content[0].text for m in p.messages] == ["Let me think.", "4"]


def test_feed_inputs(enc):
    """feed() takes a list, a tuple or any iterable of ints; one event per message part."""
    ids = toks(enc, "<|channel|>final<|message|>Hello world, how are you?<|end|>")
    want = StreamableParser(enc, Role.ASSISTANT, strict=False).feed(ids)
    assert sum(isinstance(e, P.ContentDelta) for e in want) == 1
    for form in (tuple(ids), iter(ids), (t for t in ids), range(0)):
        p = StreamableParser(enc, Role.ASSISTANT, strict=False)
        got = p.feed(form)
        assert got == (want if form != range(0) else [])
    p = StreamableParser(enc, Role.ASSISTANT, strict=False)
    with pytest.raises(TypeError):
        p.feed("abc")
    with pytest.raises(TypeError):
        p.feed([1, "2"])
    with pytest.raises(OverflowError):
        StreamableParser(enc, Role.ASSISTANT).feed([2**40])
    # the Python-level method works too (subclasses, unbound calls)
    assert StreamableParser.feed(StreamableParser(enc, Role.ASSISTANT, strict=False), ids) == want
    # last_content_delta after a batch: the last id's text, as per token
    p, q = StreamableParser(enc, Role.ASSISTANT, strict=False), StreamableParser(enc, Role.ASSISTANT, strict=False)
    p.feed(ids[:-1])
    for t in ids[:-1]:
        q.process(t)
    assert p.last_content_delta == q.last_content_delta == enc.decode([ids[-2]])
    assert p.current_content == q.current_content


def test_feed_reads_any_int_like_ids(enc):
    """Exact ints take the fast path; int subclasses and ``__index__`` objects (numpy-like
    scalars) give the same events; an item that mutates the list while it is read neither
    crashes nor reads freed memory."""
    import enum

    ids = toks(enc, "<|channel|>final<|message|>Hello world, how are you?<|end|>")
    want = StreamableParser(enc, Role.ASSISTANT, strict=False).feed(ids)

    class Sub(int):
        pass

    class Idx:
        def __init__(self, v):
            self.v = v

        def __index__(self):
            return self.v

    E = enum.IntEnum("E", {f"t{t}": t for t in set(ids)})
    for conv in (Sub, Idx, lambda t: E(t)):
        assert StreamableParser(enc, Role.ASSISTANT, strict=False).feed([conv(t) for t in ids]) == want
        assert StreamableParser(enc, Role.ASSISTANT, strict=False).feed(tuple(conv(t) for t in ids)) == want

    class Shrinker:
        def __init__(self, lst, v):
            self.lst, self.v = lst, v

        def __index__(self):
            self.lst.clear()  # drops the list's references, this object's included
            return self.v

    lst = list(ids)
    lst[3] = Shrinker(lst, ids[3])
    with pytest.raises(IndexError):
        StreamableParser(enc, Role.ASSISTANT, strict=False).feed(lst)
    with pytest.raises(OverflowError):  # the reference's modes; lenient: see test_input_contract.py
        StreamableParser(enc, Role.ASSISTANT, strict=True).feed([2**70])
    with pytest.raises(TypeError):
        StreamableParser(enc, Role.ASSISTANT, strict=False).feed([1.0])


def test_snapshot_restore_reset(enc):
    p = StreamableParser(enc, Role.ASSISTANT, strict=False)
    p.feed(toks(enc, "<|channel|>final<|message|>Hel"))
    snap = p.snapshot()
    a = p.feed(toks(enc, "lo<|end|>"))
    assert len(p.messages) == 1
    p.restore(snap)
    assert p.messages == [] and p.current_content == "Hel"
    assert p.feed(toks(enc, "lo<|end|>")) == a
    p.restore(snap)
    assert p.current_content == "Hel"
    p.reset()
    assert p.state is StreamState.HEADER and p.tokens == [] and p.messages == []


def test_raw_mode(enc):
    p = StreamableParser(enc, None, mode="raw")
    ids = toks(enc, "<|start|>assistant<|message|>x<|end|>")
    text = "".join(e.text for e in p.feed(ids) if isinstance(e, P.ContentDelta))
    assert text == "<|start|>assistant<|message|>x<|end|>"


def test_memory_caps_from_python(enc):
    limits = lh.Limits(max_parsed_total_bytes=200, max_parsed_message_bytes=50)
    p = StreamableParser(enc, None, strict=False, limits=limits, token_history=100)
    unit = toks(enc, "<|start|>assistant<|channel|>final<|message|>" + "x" * 80 + "<|end|>")
    for _ in range(50):
        p.feed(unit)
    assert len(p.tokens) < 200
    assert sum(len(m.content[0].text) for m in p.messages) <= 200
    assert all(len(m.content[0].text) <= 50 for m in p.messages)
    assert p.first_message_index + len(p.messages) == 50


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

PIECES = [
    "<|start|>assistant<|channel|>analysis<|message|>Let me think.<|end|>",
    "<|start|>assistant<|channel|>final<|message|>The answer is 4.<|return|>",
    "<|start|>assistant to=functions.f<|channel|>commentary <|constrain|>json<|message|>{\"a\": 1}<|call|>",
    "<|start|>functions.f to=assistant<|channel|>commentary<|message|>42<|end|>",
    "<|channel|>", " to=functions.g", " json", "assistant", "Hello", "é😀", "\n",
]


@st.composite
def streams(draw):
    enc = lh.load_harmony_encoding()
    ids: list[int] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            ids += toks(enc, draw(st.sampled_from(PIECES)))
        elif kind == 1:
            ids.append(draw(st.sampled_from(SPECIALS)))
        elif kind == 2:
            ids.append(draw(st.integers(0, 201_100)))
        else:
            ids += enc.encode_ordinary(draw(st.text(max_size=8)))
    return ids


@SETTINGS
@given(ids=streams(), cuts=st.lists(st.integers(0, 200), max_size=6), role=st.sampled_from([None, Role.ASSISTANT]),
       mode=st.sampled_from(["lenient", "strict", "raw"]))
def test_chunk_boundaries_do_not_matter(enc, ids, cuts, role, mode):
    def coalesce(events):
        # feed() merges adjacent deltas of one message within a batch; compare merged forms
        out = []
        for e in events:
            last = out[-1] if out else None
            if isinstance(e, P.ContentDelta) and isinstance(last, P.ContentDelta) and last.index == e.index:
                out[-1] = P.ContentDelta(e.index, last.text + e.text)
            elif isinstance(e, P.ToolCallDelta) and isinstance(last, P.ToolCallDelta) and (last.index, last.call_index) == (e.index, e.call_index):
                out[-1] = P.ToolCallDelta(e.index, e.call_index, last.arguments + e.arguments)
            else:
                out.append(e)
        return out

    def run(bounds):
        p = StreamableParser(enc, role, mode=mode)
        events, prev = [], 0
        try:
            for c in sorted(set(b % (len(ids) + 1) for b in bounds)) + [len(ids)]:
                events += p.feed(ids[prev:c])
                prev = c
            events += p.finish()
        except lh.HarmonyError as e:
            return coalesce(events), str(e), dicts(p.messages)
        return coalesce(events), None, dicts(p.messages)

    whole = run([])
    for bounds in (cuts, list(range(len(ids)))):
        got = run(bounds)
        if whole[1] is None:
            assert got == whole
        else:  # a strict error: the events of the failing batch are not returned
            assert got[1:] == whole[1:]


@SETTINGS
@given(ids=st.lists(st.one_of(st.integers(-10, 201_200), st.sampled_from(SPECIALS)), max_size=60) | streams(),
       role=st.sampled_from([None, Role.ASSISTANT]))
def test_lenient_never_raises(enc, ids, role):
    p = StreamableParser(enc, role, strict=False)
    for t in ids[: len(ids) // 2]:
        p.process(t)
        _ = (p.current_content, p.last_content_delta, p.state, p.state_data, p.current_role)
    events = p.feed(ids[len(ids) // 2:]) + p.finish()
    assert isinstance(events[-1], (P.Done, P.Incomplete))
    enc.parse_messages_from_completion_tokens(ids, role, strict=False)


def test_subclassing_and_native_members(enc):
    """StreamableParser subclasses the native parser; user subclasses keep working: their
    overrides are called, they can hold their own attributes, and the reference API returns
    the subclass instance."""
    calls = []

    class Mine(StreamableParser):
        def __init__(self, encoding, role, **kw):
            super().__init__(encoding, role, **kw)  # as one would with the reference's class
            self.note = None

        def feed(self, tokens):
            calls.append(len(tokens))
            return super().feed(tokens)

    ids = toks(enc, "<|channel|>final<|message|>Hi there<|end|>")
    p = Mine(enc, Role.ASSISTANT, strict=False)
    p.note = "mine"
    events = p.feed(ids)
    assert calls == [len(ids)] and p.note == "mine"
    assert events == StreamableParser(enc, Role.ASSISTANT, strict=False).feed(ids)
    assert p.process(200006) is p and p.reset() is p and p.messages == [] and p.state is StreamState.HEADER
    q = StreamableParser(enc, Role.ASSISTANT)
    with pytest.raises(AttributeError):
        q.note = "no dict"  # the class has __slots__: parsers stay small
    for t in ids:
        assert q.process(t) is q
    assert [m.to_dict() for m in q.messages] == [m.to_dict() for m in enc.parse_messages_from_completion_tokens(ids, Role.ASSISTANT)]
    assert "StreamableParser(mode='strict'" in repr(q)
    with pytest.raises(ValueError):
        StreamableParser(enc, Role.ASSISTANT, mode="nope")
