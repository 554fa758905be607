"""Server benchmark: what the HTTP stack costs per generated token.

The same completion of 400 words, ~800 tokens (replayed through real llama.cpp on the tiny
gpt-oss model, so every run evaluates the same ids) is streamed

* straight from the engine (``HarmonyEngine.create_chat_completion(stream=True)``, no HTTP);
* through the FastAPI/uvicorn server with the official ``openai`` client;
* through the previous stdlib ``http.server`` server (its source is read from git at
  ``--baseline-rev``, default ``d152469``, and run against today's engine), when this is a git
  checkout.

Rows are timed in turn (engine, new, old, engine, new, old, ...) and the medians are
compared; the target is "the new stack costs no more than 5 % per token against the old one".

    .venv/bin/python benches/bench_server.py [--rounds 7] [--tokens 400]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER = [{"role": "user", "content": "Write something long."}]


def load_old_server(rev: str):
    """The stdlib server module as it was at ``rev`` (None when git or the revision is missing)."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:python/llama_harmony/server.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "llama_harmony_old_server.py"
    path.write_text(src.replace("from . import", "from llama_harmony import")
                    .replace("from .engine import", "from llama_harmony.engine import")
                    .replace("from .openai_format import", "from llama_harmony.openai_format import"))
    spec = importlib.util.spec_from_file_location("llama_harmony_old_server", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--baseline-rev", default="d152469")
    ap.add_argument("--threads", type=int, default=1,
                    help="llama.cpp threads (default 1: steadier on a shared machine)")
    args = ap.parse_args()

    import openai

    from llama_harmony import HarmonyEncodingName, load_harmony_encoding, tiny_model
    from llama_harmony.engine import HarmonyEngine
    from llama_harmony.replay import Replay
    from llama_harmony.server import BackgroundServer, ServerConfig, create_app

    enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    cache = Path(tempfile.gettempdir()) / "llama-harmony-bench"
    path = tiny_model.ensure_tiny_model(enc.token_bytes_table(tiny_model.N_VOCAB), cache_dir=cache)
    engine = HarmonyEngine.from_path(path, n_ctx=2048, n_threads=args.threads, encoding=enc)
    words = " ".join(f"w{i}" for i in range(args.tokens))
    text = "<|channel|>final<|message|>" + words + "<|return|>"
    n_tokens = len(enc.encode(text, allowed_special="all"))

    def arm() -> None:
        engine.replay = Replay([text])

    def direct() -> float:
        # in a worker thread, as both servers generate (the main thread is the client's)
        out = []

        def run() -> None:
            arm()
            t = time.perf_counter()
            for _ in engine.create_chat_completion(USER, stream=True):
                pass
            out.append(time.perf_counter() - t)

        th = threading.Thread(target=run)
        th.start()
        th.join()
        return out[0]

    def through(url: str):
        client = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=300)

        def run() -> float:
            arm()
            t = time.perf_counter()
            n = 0
            for chunk in client.chat.completions.create(model="tiny", messages=USER, stream=True):
                n += 1
            elapsed = time.perf_counter() - t
            assert n > n_tokens // 2, n
            return elapsed

        return run

    new = BackgroundServer(create_app(engine, ServerConfig(model_name="tiny"))).start()
    rows = {"engine, no HTTP": direct, "FastAPI/uvicorn server": through(new.url)}
    old_server = load_old_server(args.baseline_rev)
    old = None
    if old_server is not None:
        old = old_server.make_server(engine, "127.0.0.1", 0, model_name="tiny")
        threading.Thread(target=old.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        rows["stdlib server (before)"] = through(old.url)
    else:
        print(f"(no git revision {args.baseline_rev}: the old server row is skipped)")

    for fn in rows.values():  # warm-up
        fn()
    times = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            times[name].append(fn())
    new.stop()
    if old is not None:
        old.shutdown()
        old.server_close()

    try:
        import httptools  # noqa: F401  (uvicorn's http="auto" picks it when it is installed)
        parser = "httptools"
    except ImportError:
        parser = "h11 (httptools is not installed)"
    print(f"\n{n_tokens} generated tokens per request, {args.rounds} rounds, tiny gpt-oss model, "
          f"{args.threads} llama.cpp thread(s), uvicorn's HTTP parser: {parser}\n")
    print(f"{'path':<28} {'median':>10} {'per token':>11}")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in med.items():
        print(f"{name:<28} {m * 1e3:>8.1f} ms {m / n_tokens * 1e6:>8.1f} us")
    base = med["engine, no HTTP"]
    print(f"\nHTTP stack overhead per token vs the engine: new {(med['FastAPI/uvicorn server'] / base - 1) * 100:+.1f} %",
          end="")
    if "stdlib server (before)" in med:
        print(f", old {(med['stdlib server (before)'] / base - 1) * 100:+.1f} %")
        ratio = med["FastAPI/uvicorn server"] / med["stdlib server (before)"]
        verdict = "met" if ratio <= 1.05 else "NOT met"
        print(f"new stack vs old per token: {(ratio - 1) * 100:+.1f} % (target <= +5 %: {verdict})")
    else:
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
