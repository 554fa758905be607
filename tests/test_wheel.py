"""The suite runs against the installed wheel: ``scripts/test-all.sh`` installs it
(non-editable) into a fresh venv and sets ``LLAMA_HARMONY_TEST_INSTALLED=1``."""
from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

import llama_harmony

INSTALLED = os.environ.get("LLAMA_HARMONY_TEST_INSTALLED") == "1"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not INSTALLED, reason="a developer run (editable install): scripts/test-all.sh runs the wheel")
def test_package_under_test_is_the_installed_wheel():
    pkg = Path(llama_harmony.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert pkg == site / "llama_harmony", f"tests import {pkg}, not the wheel in {site}"
    assert ROOT / "python" not in pkg.parents and str(ROOT / "python") not in sys.path
    # installed as a wheel (RECORD lists the native core), not as an editable .pth
    from importlib.metadata import distribution

    files = {str(f) for f in distribution("llama-harmony").files or []}
    assert "llama_harmony/_core.abi3.so" in files and not any(f.endswith(".pth") for f in files)
    assert (pkg / "py.typed").is_file() and (pkg / "_core.pyi").is_file()


def test_repository_reads_nothing_outside_it():
    """No test, script, benchmark or package file points beside the clone (the o200k_base ranks
    come from the package; a clone with nothing beside it runs the whole suite)."""
    import re

    pattern = re.compile(r"""\.\./shared|["']shared["']\s*/|parents\[\d\]\.parent|\.parent\.parent\s*/\s*["']""")
    hits = []
    for folder in ("tests", "scripts", "benches", "python", "third_party", "fuzz", ".ci"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".sh", ".rs", ".toml", "") and path.is_file() and "target" not in path.parts:
                text = path.read_text(encoding="utf-8", errors="replace")
                hits += [f"{path.relative_to(ROOT)}: {m.group()}" for m in pattern.finditer(text)]
    assert hits == []
