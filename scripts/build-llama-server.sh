#!/usr/bin/env bash
# Build llama.cpp's `llama-server` and `ggml-rpc-server` from the llama.cpp source vendored in
# the pinned llama-cpp-python sdist (the very commit the in-process engine binds), and cache them.
#
# Run `scripts/build-llama-server.sh --help` for the options. The last line of stdout is the
# directory holding the two binaries; everything else goes to stderr.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
# sha256 of llama_cpp_python-0.3.36.tar.gz as published on PyPI: the cache key, and a check
# that the source is the one the in-process engine was built from.
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SDIST_NAME="llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz"
# Our one change to llama-server (next to this script): with `return_tokens`, every generated id
# is returned, also those whose text ends inside a UTF-8 character (upstream holds such a
# token's whole chunk back, id included, until the character completes).
PATCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/llama-server-return-every-token.patch"
# Build tools, from PyPI into a private venv (never the caller's environment).
CMAKE_PIN=cmake==3.31.6
NINJA_PIN=ninja==1.13.0

usage() {
    cat <<EOF
Usage: $(basename "$0") [--jobs N] [--nice N] [--help]

Builds llama-server and ggml-rpc-server (static, CPU, RPC backend on) from the llama.cpp source
vendored in the llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} sdist, with one small patch
(scripts/llama-server-return-every-token.patch: streamed chunks carry every generated id), and
prints the directory that holds them as the last line of stdout.

The result is cached in
  \${LLAMA_HARMONY_CACHE:-\$HOME/.cache/llama-harmony}/llama-server/<sdist sha256>-<patch sha256:16>/bin
so later runs take a second and need no network. The first run downloads the sdist (~75 MB)
with pip and cmake/ninja from PyPI, then compiles for ~7 minutes on 2 cores.

Options:
  --jobs N   parallel compile jobs (default: the number of CPUs, $(nproc 2>/dev/null || echo 1) here)
  --nice N   niceness of the compile (default 10; 0 to run at normal priority)
  --help     this text

Environment:
  LLAMA_HARMONY_CACHE   cache root (default \$HOME/.cache/llama-harmony)
  PYTHON                Python used for pip and the build-tools venv (default python3)
EOF
}

log() { printf '[build-llama-server] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

JOBS="$(nproc 2>/dev/null || echo 1)"
NICE_LEVEL=10
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h) usage; exit 0 ;;
        --jobs) [ $# -ge 2 ] || die "--jobs needs a number"; JOBS="$2"; shift 2 ;;
        --jobs=*) JOBS="${1#--jobs=}"; shift ;;
        --nice) [ $# -ge 2 ] || die "--nice needs a number"; NICE_LEVEL="$2"; shift 2 ;;
        --nice=*) NICE_LEVEL="${1#--nice=}"; shift ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, got '$JOBS'"
[[ "$NICE_LEVEL" =~ ^[0-9]+$ ]] || die "--nice must be a non-negative integer, got '$NICE_LEVEL'"

PYTHON="${PYTHON:-python3}"
ROOT="${LLAMA_HARMONY_CACHE:-$HOME/.cache/llama-harmony}/llama-server"
SDIST="$ROOT/sdist/$SDIST_NAME"
[ -f "$PATCH" ] || die "missing $PATCH"
DEST="$ROOT/${SDIST_SHA256}-$(sha256sum "$PATCH" | cut -c1-16)"
mkdir -p "$ROOT/sdist"

is_built() { [ -x "$DEST/bin/llama-server" ] && [ -x "$DEST/bin/ggml-rpc-server" ]; }

if is_built; then
    log "cached: $DEST/bin"
    echo "$DEST/bin"
    exit 0
fi

# One build at a time per cache (parallel test runs call this script too).
exec 9>"$ROOT/.lock"
if ! flock -n 9; then
    log "another build holds $ROOT/.lock; waiting for it"
    flock 9
fi
if is_built; then
    log "built by the other run: $DEST/bin"
    echo "$DEST/bin"
    exit 0
fi

# Leftovers of interrupted builds (we hold the lock, so none is running).
rm -rf "$ROOT"/.build.*
WORK="$(mktemp -d "$ROOT/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# 1. The sdist: kept in the cache, so a rebuild (e.g. after the cache entry was removed) needs
#    no network. pip keeps its own HTTP cache as well.
if [ -f "$SDIST" ] && [ "$(sha256sum "$SDIST" | cut -d' ' -f1)" = "$SDIST_SHA256" ]; then
    log "sdist: $SDIST"
else
    log "downloading the llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} sdist with pip"
    # --no-binary only for llama-cpp-python: its build requirements stay wheels.
    "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        -d "$WORK/sdist" "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" >&2
    got="$(sha256sum "$WORK/sdist/$SDIST_NAME" | cut -d' ' -f1)"
    [ "$got" = "$SDIST_SHA256" ] || die "sha256 of $SDIST_NAME is $got, expected $SDIST_SHA256"
    mv "$WORK/sdist/$SDIST_NAME" "$SDIST.part"
    mv "$SDIST.part" "$SDIST"
fi

# 2. cmake and ninja from PyPI in a private venv (reused across builds).
TOOLS="$ROOT/build-tools"
if ! "$TOOLS/bin/cmake" --version >/dev/null 2>&1 || ! "$TOOLS/bin/ninja" --version >/dev/null 2>&1; then
    log "installing $CMAKE_PIN $NINJA_PIN into $TOOLS"
    rm -rf "$TOOLS"
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet "$CMAKE_PIN" "$NINJA_PIN" >&2
fi

# 3. Unpack and build (only the two targets; no tests, examples, web UI or network features).
log "unpacking"
tar -xzf "$SDIST" -C "$WORK"
SRC="$WORK/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp"
[ -f "$SRC/CMakeLists.txt" ] || die "no llama.cpp source in $SDIST"
log "applying $(basename "$PATCH")"
patch -p1 --quiet --forward -d "$SRC" <"$PATCH" >&2 || die "the patch does not apply"

log "configuring (cmake $("$TOOLS/bin/cmake" --version | head -1 | awk '{print $3}'))"
nice -n "$NICE_LEVEL" "$TOOLS/bin/cmake" -S "$SRC" -B "$WORK/build" -G Ninja \
    -DCMAKE_MAKE_PROGRAM="$TOOLS/bin/ninja" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_RPC=ON \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    >"$WORK/configure.log" 2>&1 || { tail -40 "$WORK/configure.log" >&2; die "cmake configure failed"; }

log "compiling llama-server and ggml-rpc-server with $JOBS job(s), nice $NICE_LEVEL (~7 min on 2 cores)"
start=$SECONDS
# The full log goes to build.log; stderr gets a progress line every 10 % of ninja's steps.
progress() {
    local line n total pct shown=0
    while IFS= read -r line; do
        [[ "$line" =~ ^\[([0-9]+)/([0-9]+)\] ]] || continue
        n=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
        pct=$((100 * n / total))
        if (( pct >= shown + 10 || n == total )); then
            shown=$((pct - pct % 10))
            log "$(printf '%3d %% (%d/%d steps, %d s)' "$pct" "$n" "$total" "$((SECONDS - start))")"
        fi
    done
}
nice -n "$NICE_LEVEL" "$TOOLS/bin/cmake" --build "$WORK/build" --parallel "$JOBS" \
    --target llama-server ggml-rpc-server 2>&1 | tee "$WORK/build.log" | progress \
    || { tail -60 "$WORK/build.log" >&2; die "build failed"; }
log "compiled in $((SECONDS - start)) s"

# 4. Check the binaries run on their own, then publish the cache entry with one rename.
mkdir -p "$WORK/out/bin"
cp "$WORK/build/bin/llama-server" "$WORK/build/bin/ggml-rpc-server" "$WORK/out/bin/"
"$WORK/out/bin/llama-server" --version >&2 2>&1 || die "the built llama-server does not run"
"$WORK/out/bin/ggml-rpc-server" --help >/dev/null 2>&1 || die "the built ggml-rpc-server does not run"
printf '%s\n' "llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} sdist sha256 ${SDIST_SHA256}" \
    "patch $(basename "$PATCH") sha256 $(sha256sum "$PATCH" | cut -d' ' -f1)" >"$WORK/out/SOURCE"
rm -rf "$DEST"
mv "$WORK/out" "$DEST"
log "done: $DEST/bin"
echo "$DEST/bin"
