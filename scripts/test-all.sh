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

# Coverage-guided fuzzing (libFuzzer through cargo-fuzz), bounded: FUZZ_SECONDS per target
# (default 60; 0 skips). cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 allows them on the
# stable toolchain. A crash fails the run and leaves its input in fuzz/artifacts/.
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
if [ "$FUZZ_SECONDS" != 0 ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
  export RUSTC_BOOTSTRAP=1
  log="$(mktemp)"
  for target in tokenizer renderer parser; do
    if ! cargo fuzz run --fuzz-dir fuzz -O "$target" -- -max_total_time="$FUZZ_SECONDS" -max_len=4096 >"$log" 2>&1; then
      tail -n 60 "$log"
      echo "fuzz target $target FAILED (input saved under fuzz/artifacts/$target/)"
      exit 1
    fi
    echo "fuzz $target: $(grep -E '^Done' "$log")"
  done
  echo "fuzz: 3 targets, ${FUZZ_SECONDS}s each, no crash"
fi
