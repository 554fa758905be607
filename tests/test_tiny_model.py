"""Tests for llama_harmony.tiny_model: the random-weight gpt-oss GGUF and ForcedTokens.

These load the tiny model into the real llama.cpp (llama-cpp-python). The vocabulary fixture is
the o200k_base ranks file rebuilt from the package (checked by its SHA-256, see conftest),
plus the Harmony special tokens written out by hand below.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from llama_harmony import tiny_model
from llama_harmony.tiny_model import (
    ForcedTokens,
    build_tiny_gpt_oss_gguf,
    default_cache_dir,
    ensure_tiny_model,
)

from conftest import o200k_base_ranks

SPECIALS = {
    199998: b"<|startoftext|>",
    199999: b"<|endoftext|>",
    200002: b"<|return|>",
    200003: b"<|constrain|>",
    200005: b"<|channel|>",
    200006: b"<|start|>",
    200007: b"<|end|>",
    200008: b"<|message|>",
    200012: b"<|call|>",
}

START, END, MESSAGE, CHANNEL, RETURN, CALL, CONSTRAIN = (
    200006, 200007, 200008, 200005, 200002, 200012, 200003)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def token_bytes(vocab_bytes) -> list[bytes]:
    """Bytes of ids 0..201087: o200k_base ranks + Harmony specials + reserved names."""
    out: list = [None] * tiny_model.N_VOCAB
    for rank, tok in o200k_base_ranks(vocab_bytes).items():
        out[rank] = tok
    for i in range(199998, tiny_model.N_VOCAB):
        out[i] = SPECIALS.get(i, b"<|reserved_%d|>" % i)
    assert all(t is not None for t in out)
    return out


@pytest.fixture(scope="session")
def ids_of(token_bytes):
    """Map a token's bytes to its id (to write forced sequences readably)."""
    index = {b: i for i, b in enumerate(token_bytes)}
    return lambda *pieces: [index[p] for p in pieces]


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory, token_bytes) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    return build_tiny_gpt_oss_gguf(path, token_bytes, seed=0)


@pytest.fixture(scope="session")
def llm(tiny_path):
    from llama_cpp import Llama

    return Llama(str(tiny_path), n_ctx=512, n_batch=64, n_threads=1, verbose=False)


def _generate(llm, prompt, forced, *, stop=(RETURN, CALL), limit=None, **sampling):
    from llama_cpp import LogitsProcessorList

    proc = ForcedTokens(forced)
    out = []
    limit = limit if limit is not None else len(forced) + 5
    for tok in llm.generate(prompt, logits_processor=LogitsProcessorList([proc]), **sampling):
        out.append(int(tok))
        if tok in stop or len(out) >= limit:
            break
    return out, proc


# ---------------------------------------------------------------------------- the file itself

def test_file_size_and_metadata(tiny_path, token_bytes):
    import gguf

    size = tiny_path.stat().st_size
    assert 30e6 < size < 70e6
    reader = gguf.GGUFReader(tiny_path)
    f = reader.fields
    assert f["general.architecture"].contents() == "gpt-oss"
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "gpt-4o"
    assert f["tokenizer.ggml.bos_token_id"].contents() == 199998
    assert f["tokenizer.ggml.eos_token_id"].contents() == 200002
    assert f["tokenizer.ggml.padding_token_id"].contents() == 199999
    assert len(f["tokenizer.ggml.merges"].contents()) >= 1
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    assert len(tokens) == len(types) == 201_088
    assert len(set(tokens)) == 201_088
    assert tokens[200006] == "<|start|>"
    assert tokens[201087] == "<|reserved_201087|>"
    assert tokens[220] == "\u0120"  # b" " in GPT-2 byte-level form
    assert types[199997] == int(gguf.TokenType.NORMAL)
    assert all(t == int(gguf.TokenType.CONTROL) for t in types[199998:])
    names = {t.name for t in reader.tensors}
    for name in ("token_embd.weight", "output.weight", "output_norm.weight",
                 "blk.1.attn_sinks.weight", "blk.0.ffn_down_exps.bias"):
        assert name in names


def test_builder_is_deterministic(tmp_path, tiny_path, token_bytes):
    again = build_tiny_gpt_oss_gguf(tmp_path / "again.gguf", token_bytes, seed=0)
    assert _sha256(again) == _sha256(tiny_path)
    other = build_tiny_gpt_oss_gguf(tmp_path / "other.gguf", token_bytes, seed=1)
    assert _sha256(other) != _sha256(tiny_path)
    # atomic write: no temp file is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.gguf", "other.gguf"]


def test_progress_callback(tmp_path, token_bytes):
    calls = []
    build_tiny_gpt_oss_gguf(tmp_path / "p.gguf", token_bytes,
                            progress=lambda d, t, label: calls.append((d, t, label)))
    assert calls[0][0] == 0
    assert calls[-1][0] == calls[-1][1]
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_rejects_wrong_vocabulary_size(tmp_path, token_bytes):
    with pytest.raises(ValueError):
        build_tiny_gpt_oss_gguf(tmp_path / "x.gguf", token_bytes[:-1])
    assert not (tmp_path / "x.gguf").exists()


# ---------------------------------------------------------------------------- cache

def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA_HARMONY_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LLAMA_HARMONY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "llama-harmony"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "llama-harmony"


def test_ensure_tiny_model_caches(tmp_path, token_bytes, tiny_path, monkeypatch):
    first = ensure_tiny_model(token_bytes, cache_dir=tmp_path)
    assert first.parent == tmp_path
    assert f"v{tiny_model.FORMAT_VERSION}" in first.name
    assert _sha256(first) == _sha256(tiny_path)  # default build == seed 0 build
    mtime = first.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(tiny_model, "build_tiny_gpt_oss_gguf", boom)
    second = ensure_tiny_model(token_bytes, cache_dir=tmp_path)
    assert second == first
    assert second.stat().st_mtime_ns == mtime
    # the environment variable picks the directory when cache_dir is not given
    monkeypatch.setenv("LLAMA_HARMONY_CACHE", str(tmp_path))
    assert ensure_tiny_model(token_bytes) == first


# ---------------------------------------------------------------------------- llama.cpp

def test_llama_cpp_loads_it(llm):
    import llama_cpp

    assert llm.n_vocab() == 201_088
    assert llm.metadata["general.architecture"] == "gpt-oss"
    assert llm.token_eos() == 200002
    assert llm.token_bos() == 199998
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    eog = {i for i in range(199_990, 201_088) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    assert eog == {199999, 200002, 200012}  # <|end|> is not end-of-generation


def test_forced_sequence_comes_back_exactly(llm, ids_of):
    prompt = [START] + ids_of(b"user") + [MESSAGE] + ids_of(b"Hi", b"!") + [END, START] \
        + ids_of(b"assistant")
    forced = ([CHANNEL] + ids_of(b"analysis") + [MESSAGE] + ids_of(b"Say", b" hi", b".") + [END]
              + [START] + ids_of(b"assistant") + [CHANNEL] + ids_of(b"final") + [MESSAGE]
              + ids_of(b"Hello", b"!") + [RETURN])
    out, proc = _generate(llm, prompt, forced, temp=1.0, top_k=40, top_p=0.9, min_p=0.05,
                          repeat_penalty=1.3)
    assert out == forced
    assert proc.exhausted and proc.position == len(forced)


def test_forced_tool_call_with_greedy_and_end_id(llm, ids_of):
    prompt = [START] + ids_of(b"assistant")
    forced = ([CHANNEL] + ids_of(b"comment", b"ary", b" to", b"=", b"functions", b".f", b" ")
              + [CONSTRAIN] + ids_of(b"json") + [MESSAGE] + ids_of(b"{}") + [CALL])
    out, _ = _generate(llm, prompt, forced, temp=0.0)
    assert out == forced
    # without a stop set, the end id is forced forever once the sequence is exhausted
    out, _ = _generate(llm, prompt, [CHANNEL], stop=(), limit=4, temp=0.8)
    assert out == [CHANNEL, RETURN, RETURN, RETURN]


def test_forced_tokens_reuse_the_kv_cache(llm, ids_of):
    prompt = [START] + ids_of(b"user") + [MESSAGE] + ids_of(b"Hi") + [END, START] \
        + ids_of(b"assistant")
    first = [CHANNEL] + ids_of(b"final") + [MESSAGE] + ids_of(b"A") + [RETURN]
    out, _ = _generate(llm, prompt, first, temp=0.7)
    assert out == first
    follow = prompt + first[:-1] + [END, START] + ids_of(b"user") + [MESSAGE] + ids_of(b"B") \
        + [END, START] + ids_of(b"assistant")
    second = [CHANNEL] + ids_of(b"final") + [MESSAGE] + ids_of(b"C") + [RETURN]
    out, _ = _generate(llm, follow, second, temp=0.7)
    assert out == second
    assert list(llm.input_ids[: len(follow)]) == follow


def test_create_completion_with_ids(llm, ids_of):
    from llama_cpp import LogitsProcessorList

    forced = [CHANNEL] + ids_of(b"final") + [MESSAGE] + ids_of(b"Hello") + [RETURN]
    res = llm.create_completion(prompt=[START] + ids_of(b"assistant"), max_tokens=20,
                                temperature=0.7,
                                logits_processor=LogitsProcessorList([ForcedTokens(forced)]))
    choice = res["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert res["usage"]["completion_tokens"] == len(forced) - 1  # EOG id not counted


def test_forced_tokens_unit():
    p = ForcedTokens([5, 7], end_id=9, n_vocab=10)
    scores = np.zeros(10, dtype=np.float32)
    assert np.argmax(p(np.arange(3), scores.copy())) == 5
    assert np.argmax(p(np.arange(3), scores.copy())) == 5  # same position twice: same id
    s = p(np.arange(4), scores.copy())
    assert np.isfinite(s).sum() == 1 and s[7] == 0.0
    assert p.exhausted
    assert np.argmax(p(np.arange(5), scores.copy())) == 9
    p.reset()
    assert np.argmax(p(np.arange(100), scores.copy())) == 5
    with pytest.raises(ValueError):
        ForcedTokens([10], n_vocab=10)
