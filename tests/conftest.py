"""Shared fixtures: the encoding, the golden vectors and the o200k_base ranks.

Nothing here reads outside the repository: the ranks come from the package itself
(``llama_harmony.o200k_base_tiktoken_bytes()``), checked against the published SHA-256.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "third_party" / "harmony" / "goldens"
#: SHA-256 of the published o200k_base.tiktoken (tiktoken's own check uses the same value).
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def o200k_base_bytes() -> bytes:
    """The exact o200k_base.tiktoken file, rebuilt from the ranks embedded in the package and
    checked by its SHA-256 (the oracle for tiktoken, the reference and the tiny model)."""
    import llama_harmony

    data = bytes(llama_harmony.o200k_base_tiktoken_bytes())
    digest = hashlib.sha256(data).hexdigest()
    assert digest == O200K_SHA256, f"embedded o200k_base ranks: SHA-256 {digest} != {O200K_SHA256}"
    return data


def o200k_base_ranks(data: bytes) -> dict:
    """rank -> token bytes of an o200k_base.tiktoken file."""
    out = {}
    for line in data.splitlines():
        if line.strip():
            tok, rank = line.split()
            out[int(rank)] = base64.b64decode(tok)
    return out


def load_jsonl(pattern: str) -> list:
    """All records of the golden files matching ``pattern`` (sorted by file name)."""
    out = []
    for path in sorted(GOLDENS.glob(pattern)):
        with path.open(encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


@pytest.fixture(scope="module", autouse=True)
def _kill_server_processes():
    """Every llama-server / ggml-rpc-server a test module started (tests/llama_server_procs.py)
    is killed at the module's end, also when a test failed."""
    yield
    import llama_server_procs

    llama_server_procs.kill_all()


@pytest.fixture(scope="session")
def vocab_bytes() -> bytes:
    """See :func:`o200k_base_bytes`."""
    return o200k_base_bytes()


@pytest.fixture(scope="session")
def enc():
    from llama_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory, enc):
    """The tiny random-weight gpt-oss GGUF (llama_harmony.tiny_model), built once per session."""
    from llama_harmony import tiny_model

    return tiny_model.ensure_tiny_model(enc.token_bytes_table(tiny_model.N_VOCAB),
                                        cache_dir=tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def harmony_reference(tmp_path_factory):
    """(openai_harmony, its gpt-oss encoding), offline: the vocabulary file comes from ours."""
    import llama_harmony

    base = tmp_path_factory.mktemp("reference_vocab")
    (base / "o200k_base.tiktoken").write_bytes(bytes(llama_harmony.o200k_base_tiktoken_bytes()))
    saved = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(base)
    try:
        import openai_harmony

        yield openai_harmony, openai_harmony.load_harmony_encoding(openai_harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if saved is None:
            os.environ.pop("TIKTOKEN_ENCODINGS_BASE", None)
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = saved
