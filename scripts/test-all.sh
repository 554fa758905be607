#!/usr/bin/env bash
# Installs everything the test suite needs into ./.venv and runs the whole suite:
# the Rust tests (cargo test, including the property tests) and pytest (goldens, the
# differential test against openai-harmony 0.0.8, parser, limits, llama.cpp end to end).
# Needs only Rust, Python >= 3.9 and the package registries; nothing downloads at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# llama-cpp-python ships only as source: build it without the multimodal part (faster);
# pip caches the built wheel, so later runs take seconds.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
cargo test --locked --quiet
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
