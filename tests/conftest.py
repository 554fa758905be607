"""Shared fixtures: the encoding, the golden vectors and the shared vocabulary oracle."""
from __future__ import annotations

import json
import os
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
