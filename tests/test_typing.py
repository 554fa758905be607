"""Type checkers see the API as it runs: the model objects are dataclasses (keyword
construction is checked field by field), the package ships ``py.typed`` and the ``_core``
stubs, and the engine's lazily loaded names are visible to them. Runs mypy on a small file, and
on the whole package (no error)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SNIPPET = '''
from typing import List

from llama_harmony import (Author, Conversation, ContentDelta, HarmonyEncodingName, HarmonyEngine, Limits,
                           Message, Role, StreamableParser, SystemContent, TextContent, load_harmony_encoding)
from llama_harmony.limits_text import describe

m = Message(author=Author(role=Role.USER), content=[TextContent(text="hi")], channel="final")
c = Conversation(messages=[m, Message.from_role_and_content(Role.SYSTEM, SystemContent.new())])
enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS, limits=Limits(max_prompt_tokens=8192))
ids: List[int] = enc.render_conversation_for_completion(c, Role.ASSISTANT)
p = StreamableParser(enc, Role.ASSISTANT, strict=False)
texts: List[str] = [e.text for e in p.feed(ids) if isinstance(e, ContentDelta)]
engine_class: type = HarmonyEngine
print(describe(ValueError("x"), "http"))


def first_choice(engine: HarmonyEngine) -> object:
    reply = engine.create_chat_completion([{"role": "user", "content": "hi"}])
    for chunk in engine.create_chat_completion([{"role": "user", "content": "hi"}], stream=True):
        print(chunk["choices"])
    return reply["choices"][0]


bad1 = Message(author=Author(role=Role.USER), content=[TextContent(text=5)])
bad2 = Message(author=Author(role=Role.USER), colour="red")
'''


def test_mypy_checks_keyword_construction(tmp_path):
    src = tmp_path / "snippet.py"
    src.write_text(textwrap.dedent(SNIPPET))
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
         "--follow-imports=silent", "--no-error-summary", "--hide-error-context", str(src)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    errors = [line.split(": error: ", 1)[1] for line in out.stdout.splitlines() if ": error: " in line]
    assert errors == [
        'Argument "text" to "TextContent" has incompatible type "int"; expected "str"  [arg-type]',
        'Unexpected keyword argument "colour" for "Message"  [call-arg]',
    ], out.stdout + out.stderr
    lines = [line.split(":")[1] for line in out.stdout.splitlines() if ": error: " in line]
    source = src.read_text().splitlines()
    assert [source[int(n) - 1].split(" =")[0] for n in lines] == ["bad1", "bad2"]


def test_the_package_type_checks(tmp_path):
    """The package as users get it (``py.typed``: their checkers read its annotations) passes mypy
    with no error: ``-p llama_harmony`` checks the copy this interpreter imports (the installed
    wheel in CI), under the repository's own mypy configuration."""
    from pathlib import Path

    import llama_harmony

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "-p", "llama_harmony", "--cache-dir", str(tmp_path / "cache"),
         "--config-file", str(root / "pyproject.toml"), "--verbose"],
        capture_output=True, text=True, timeout=600, cwd=root)
    checked = {line.split("path='", 1)[1].split("'", 1)[0] for line in out.stderr.splitlines()
               if "Found source:" in line and "module='llama_harmony'" in line}
    assert checked == {llama_harmony.__file__}, checked  # mypy checked the llama_harmony under test
    assert out.returncode == 0 and out.stdout.startswith("Success:"), out.stdout + out.stderr[-2000:]
