"""Shared fixtures: the encoding, the golden vectors and the shared vocabulary oracle."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "third_party" / "harmony" / "goldens"
SHARED_VOCAB = ROOT.parent / "shared" / "vocab" / "o200k_base.tiktoken"


def load_jsonl(pattern: str) -> list:
    """All records of the golden files matching ``pattern`` (sorted by file name)."""
    out = []
    for path in sorted(GOLDENS.glob(pattern)):
        with path.open(encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


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
