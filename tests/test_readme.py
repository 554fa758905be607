"""Every ```python block of the README runs as written.

Convention (README, "About the examples"): a block runs unless the line before its fence is the
HTML comment ``<!-- sketch -->``. Blocks must parse as Python 3.9 (no ``match``). A block that
needs a model names ``gpt-oss-20b-mxfp4.gguf``; the test runs it with the tiny random-weight
gpt-oss model in its place (real llama.cpp). Each block runs alone, in a fresh namespace, so it
must import what it uses.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MODEL_NAME = "gpt-oss-20b-mxfp4.gguf"
SKETCH = "<!-- sketch -->"


def python_blocks(text: str) -> list:
    """(first line number, code, is_sketch) of every ```python block of a Markdown text."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            before = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            out.append((start + 2, "\n".join(lines[start + 1:j]) + "\n", before == SKETCH))
            i = j
        i += 1
    return out


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_runnable_blocks():
    runnable = [b for b in BLOCKS if not b[2]]
    assert len(runnable) >= 4 and any(MODEL_NAME in code for _, code, _ in runnable)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory) -> Path:
    from llama_harmony import load_harmony_encoding
    from llama_harmony.tiny_model import N_VOCAB, ensure_tiny_model

    table = load_harmony_encoding().token_bytes_table(N_VOCAB)
    return ensure_tiny_model(table, cache_dir=tmp_path_factory.mktemp("readme-model"))


@pytest.mark.parametrize("line, code, sketch", BLOCKS, ids=[f"README.md:{b[0]}" for b in BLOCKS])
def test_readme_block_runs(line, code, sketch, request):
    if sketch:
        pytest.skip(f"README.md:{line} is marked {SKETCH}")
    tree = ast.parse(code, filename=f"README.md:{line}", feature_version=(3, 9))  # runs on Python 3.9
    assert tree.body
    if MODEL_NAME in code:
        path = request.getfixturevalue("tiny_model_path")
        code = code.replace(MODEL_NAME, str(path).replace("\\", "\\\\"))
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


def test_sketch_marker_is_recognised():
    text = "x\n<!-- sketch -->\n\n```python\nnot python at all\n```\n\n```python\nprint(1)\n```\n"
    assert python_blocks(text) == [(5, "not python at all\n", True), (9, "print(1)\n", False)]
