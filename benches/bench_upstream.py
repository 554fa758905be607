"""Concurrency benchmark: the embedded engine's way (one in-process llama.cpp, requests served
one at a time) against llama-server replicas driven by llama_harmony.upstream.

    .venv/bin/python benches/bench_upstream.py                 # 1, 4, 8, 16 clients
    .venv/bin/python benches/bench_upstream.py --clients 8 --max-tokens 64

The tiny random-weight gpt-oss model; the same prompts (rendered Harmony conversations, one
per client, all different) and the same ``max_tokens`` for every row; greedy sampling with the
end-of-generation ids banned, so every request generates exactly ``max_tokens`` ids. For N
clients all N requests are submitted at once; a row reports the aggregate generated tokens per
second (all ids / wall time until the last one), the mean time to first token, and for the
HTTP rows the CPU time this (client) process spent per generated token.

Rows (each a function ``row(clients) -> (tokens_per_s, ttft_ms)`` in :data:`ROWS`; add rows,
e.g. the full HTTP gateway, by adding functions):

* ``embedded``: llama-cpp-python ``Llama.generate`` in this process, one request after the
  other (the in-process engine holds a lock per request).
* ``raw-1x8``: ``POST /completion`` on one ``llama-server -np 8`` with a bare httpx stream (no
  pool): llama-server's own throughput, for the pool's overhead.
* ``pool-1x8``: :class:`~llama_harmony.upstream.UpstreamPool` over the same server.
* ``pool-2x4``: the pool over two replicas with ``-np 4`` each (two processes, each with
  ``--threads`` threads: on one machine they share its cores).

Each cell is the best of ``--repeat`` runs (other work on a shared machine only slows runs down).

Ratios are against ``embedded`` at the same number of clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # llama_server_procs: processes from the build script

import llama_server_procs as procs  # noqa: E402

from llama_harmony import Conversation, Message, Role, SystemContent, load_harmony_encoding  # noqa: E402
from llama_harmony import HarmonyEncodingName, tiny_model  # noqa: E402
from llama_harmony.sampling import EOG_IDS, SamplingParams  # noqa: E402

Row = Callable[[int], Tuple[float, float]]


def measured(fn: Row) -> Callable[[int], Tuple[float, float, float]]:
    """``fn`` plus this process's CPU time per generated token (microseconds): for the
    HTTP rows, what the client side (pool, parsing of chunks) costs per token."""

    def row(clients: int) -> Tuple[float, float, float]:
        c0, w0 = time.process_time(), time.perf_counter()
        tps, ttft = fn(clients)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        return tps, ttft, 1e6 * cpu / max(1.0, tps * wall)

    return row


def prompts(enc, n: int) -> List[List[int]]:
    out = []
    for k in range(n):
        convo = Conversation.from_messages([
            Message.from_role_and_content(Role.SYSTEM, SystemContent.new()),
            Message.from_role_and_content(Role.USER, f"Client {k}: explain how tides work, briefly."),
        ])
        out.append(enc.render_conversation_for_completion(convo, Role.ASSISTANT))
    return out


class Bench:
    """Shared state of one run: the model, the prompts, the servers (started lazily)."""

    def __init__(self, max_tokens: int, threads: int) -> None:
        self.enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        self.model = tiny_model.ensure_tiny_model(self.enc.token_bytes_table(tiny_model.N_VOCAB))
        self.max_tokens = max_tokens
        self.threads = threads
        self.params = SamplingParams(temperature=0.0, max_tokens=max_tokens,
                                     logit_bias={i: -math.inf for i in EOG_IDS})
        self._servers: Dict[str, List[procs.Proc]] = {}
        self._llama = None

    def servers(self, name: str) -> List[str]:
        if name not in self._servers:
            if name == "1x8":
                self._servers[name] = [procs.llama_server(self.model, parallel=8, ctx_per_slot=1024,
                                                          threads=self.threads, name="bench-1x8")]
            else:
                self._servers[name] = [procs.llama_server(self.model, parallel=4, ctx_per_slot=1024,
                                                          threads=max(1, self.threads // 2), name=f"bench-2x4-{i}")
                                       for i in range(2)]
        return [p.url for p in self._servers[name]]

    # -- rows -------------------------------------------------------------------------------

    def embedded(self, clients: int) -> Tuple[float, float]:
        from llama_cpp import Llama, LogitsProcessorList
        import numpy as np

        if self._llama is None:
            self._llama = Llama(str(self.model), n_ctx=2048, n_batch=512, n_threads=self.threads, verbose=False)
        llm = self._llama
        ban = np.zeros(tiny_model.N_VOCAB, dtype=np.float32)
        ban[list(EOG_IDS)] = -np.inf

        def no_eog(_ids, scores):
            return scores + ban

        todo = prompts(self.enc, clients)
        t0 = time.perf_counter()
        ttft, total = [], 0
        for prompt in todo:  # one at a time, all submitted at t0
            n = 0
            for _tok in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                     reset=True, logits_processor=LogitsProcessorList([no_eog])):
                if n == 0:
                    ttft.append(time.perf_counter() - t0)
                n += 1
                if n == self.max_tokens:
                    break
            total += n
        wall = time.perf_counter() - t0
        return total / wall, 1000 * sum(ttft) / len(ttft)

    def raw_1x8(self, clients: int) -> Tuple[float, float]:
        import httpx
        from llama_harmony.upstream import completion_request

        url = self.servers("1x8")[0]

        async def one(client, prompt, t0, ttft):
            body = completion_request(prompt, self.params)
            n = 0
            async with client.stream("POST", url + "/completion", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        chunk = json.loads(line[5:])
                        if chunk.get("tokens"):
                            if n == 0:
                                ttft.append(time.perf_counter() - t0)
                            n += len(chunk["tokens"])
            return n

        async def main():
            async with httpx.AsyncClient(timeout=None, trust_env=False) as client:
                ttft: List[float] = []
                t0 = time.perf_counter()
                counts = await asyncio.gather(*(one(client, p, t0, ttft) for p in prompts(self.enc, clients)))
                return sum(counts) / (time.perf_counter() - t0), 1000 * sum(ttft) / len(ttft)

        return asyncio.run(main())

    def _pool(self, urls: Sequence[str], clients: int) -> Tuple[float, float]:
        from llama_harmony.upstream import UpstreamPool

        async def one(pool, prompt, t0, ttft):
            n = 0
            gen = pool.generate(prompt, self.params)
            async with gen:
                async for _ in gen:
                    if n == 0:
                        ttft.append(time.perf_counter() - t0)
                    n += 1
            return n

        async def main():
            async with UpstreamPool(urls) as pool:
                ttft: List[float] = []
                t0 = time.perf_counter()
                counts = await asyncio.gather(*(one(pool, p, t0, ttft) for p in prompts(self.enc, clients)))
                return sum(counts) / (time.perf_counter() - t0), 1000 * sum(ttft) / len(ttft)

        return asyncio.run(main())

    def pool_1x8(self, clients: int) -> Tuple[float, float]:
        return self._pool(self.servers("1x8"), clients)

    def pool_2x4(self, clients: int) -> Tuple[float, float]:
        return self._pool(self.servers("2x4"), clients)

    def close(self) -> None:
        procs.kill_all()


def arguments(doc: str, rows: Sequence[str]) -> argparse.ArgumentParser:
    """The options of the concurrency benchmarks (this one and bench_gateway.py)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per llama.cpp (1: ggml's spinning threads collapse on a busy shared machine)")
    ap.add_argument("--rows", nargs="+", default=list(rows))
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the best is kept (shared machines)")
    return ap


def main(argv: Sequence[str] = ()) -> None:
    args = arguments(__doc__, ["embedded", "raw-1x8", "pool-1x8", "pool-2x4"]).parse_args(list(argv) or None)
    bench = Bench(args.max_tokens, args.threads)
    rows = {name: measured(fn) for name, fn in {"embedded": bench.embedded, "raw-1x8": bench.raw_1x8,
                                                 "pool-1x8": bench.pool_1x8, "pool-2x4": bench.pool_2x4}.items()}
    try:
        for name in args.rows:  # warm up: start servers, load the model, fill caches
            rows[name](1)
        print(f"tiny gpt-oss, {args.max_tokens} tokens per request, greedy, {args.threads} thread(s) per process, "
              f"best of {args.repeat}; ratio = tokens/s against embedded at the same clients")
        print(f"{'row':<10} {'clients':>7} {'tok/s':>9} {'ttft ms':>9} {'ratio':>6} {'client cpu us/tok':>18}")
        for clients in args.clients:
            base = None
            for name in args.rows:
                tps, ttft, cpu = max((rows[name](clients) for _ in range(args.repeat)), key=lambda r: r[0])
                base = tps if name == "embedded" else base
                ratio = f"{tps / base:6.2f}" if base else "     -"
                cpu_s = "(model)" if name == "embedded" else f"{cpu:.0f}"
                print(f"{name:<10} {clients:>7} {tps:>9.1f} {ttft:>9.1f} {ratio} {cpu_s:>18}", flush=True)
    finally:
        bench.close()


if __name__ == "__main__":
    main(sys.argv[1:])
