"""Gateway benchmark: the HTTP server (``llama-harmony serve``) with its model in-process, and as
a gateway over llama-server, against llama-server's own ``/v1/chat/completions``.

    .venv/bin/python benches/bench_gateway.py                  # 1, 4, 8, 16 clients, every row
    .venv/bin/python benches/bench_gateway.py --clients 8 --max-tokens 128 --repeat 5

Every server is a separate process; the clients run in this process (asyncio + httpx, one
streaming ``POST /v1/chat/completions`` per client, all sent at once), so the clients' CPU
time is not the servers'. The tiny random-weight gpt-oss model; the same chat requests for
every row (one user message per client, all different), the same ``max_tokens``, greedy
(``temperature`` 0) with the end-of-generation ids banned by ``logit_bias``, so each answer is
exactly ``max_tokens`` tokens (checked against ``usage``).

Rows (servers started once, reused for every cell):

* ``embedded``: ``llama-harmony serve --model tiny.gguf`` (llama.cpp in the server process,
  one generation at a time);
* ``gw-1x8``: ``llama-harmony serve --upstream`` over one ``llama-server -np 8``;
* ``gw-2x4``: the gateway over two ``llama-server -np 4`` replicas;
* ``direct-1x8``: the same requests sent straight to that ``-np 8`` llama-server's own
  ``/v1/chat/completions`` (its chat template and parser; no Harmony): the overhead baseline.

A cell is the best of ``--repeat`` runs, the rows taking turns (other work on a shared machine
only slows runs down, and hits every row alike). It reports the aggregate tokens/s (all
tokens / wall time until the last answer ends), the mean time to the first event of the
stream (both servers send it with the first generated token; with random weights the text
itself may come later: the Harmony parser holds header-like text back until it can tell it is
not a header, which real gpt-oss output, starting with ``<|channel|>``, does not need), and
the CPU time the server side spent per generated token: ``ours`` (the llama-harmony process)
and ``llama`` (the llama-server processes), read from ``/proc``. The overhead lines compare
``gw-1x8`` with ``direct-1x8`` at each number of clients (throughput ratio; target >= 0.9) and
give the Harmony layer's own cost per token (rendering the request and parsing every id,
timed in this process on ids llama-server generated) next to the gateway process's whole cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # llama_server_procs: processes from the build script
sys.path.insert(0, str(ROOT / "benches"))

import httpx  # noqa: E402

import llama_server_procs as procs  # noqa: E402
import bench_upstream  # noqa: E402
from llama_harmony import Role, StreamableParser  # noqa: E402
from llama_harmony.sampling import EOG_IDS  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of processes (all their threads), from ``/proc``."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICK


def messages(k: int) -> List[Dict[str, str]]:
    return [{"role": "user", "content": f"Client {k}: explain how tides work, briefly."}]


class Server:
    """One server under test: its base URL, the llama-harmony process (if any) and the
    llama-server processes doing the serving."""

    def __init__(self, url: str, ours: Optional[subprocess.Popen], upstreams: Sequence[procs.Proc] = ()) -> None:
        self.url = url
        self.ours = [ours.pid] if ours is not None else []
        self.upstreams = list(upstreams)
        self.llama = [p.pid for p in self.upstreams]


def serve(*args: str) -> Tuple[subprocess.Popen, str]:
    """``llama-harmony serve --port 0 --quiet ARGS``: the process and its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "llama_harmony.cli", "serve", "--port", "0", "--quiet", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("serve did not start:\n" + "".join(lines))
        lines.append(line)
        if line.startswith("Serving "):
            proc.stderr.close()
            return proc, line.split(" at ", 1)[1].split("/v1", 1)[0]


class Bench(bench_upstream.Bench):
    """The servers (started lazily, killed by :meth:`close`) and the client loop; the
    llama-server processes are bench_upstream's (``1x8``, ``2x4``)."""

    def __init__(self, max_tokens: int, threads: int) -> None:
        super().__init__(max_tokens, threads)
        self._http: Dict[str, Server] = {}
        self._ours: List[subprocess.Popen] = []

    def _serve(self, *args: str, upstreams: Sequence[procs.Proc] = ()) -> Server:
        proc, url = serve(*args, *(a for p in upstreams for a in ("--upstream", p.url)))
        self._ours.append(proc)
        return Server(url, proc, upstreams)

    def _replicas(self, name: str) -> List[procs.Proc]:
        self.servers(name)
        return self._servers[name]

    def server(self, row: str) -> Server:
        if row not in self._http:
            if row == "embedded":
                srv = self._serve("--model", str(self.model), "--ctx", "2048", "--threads", str(self.threads))
            elif row == "direct-1x8":
                srv = Server(self.servers("1x8")[0], None, self._replicas("1x8"))
            elif row == "gw-1x8":
                srv = self._serve(upstreams=self._replicas("1x8"))
            elif row == "gw-2x4":
                srv = self._serve(upstreams=self._replicas("2x4"))
            else:
                raise ValueError(f"unknown row {row!r}")
            self._http[row] = srv
        return self._http[row]

    def body(self, k: int, direct: bool) -> Dict[str, Any]:
        bias = {str(i): -100 for i in sorted(EOG_IDS)}
        body: Dict[str, Any] = {"messages": messages(k), "max_tokens": self.max_tokens, "temperature": 0,
                                "logit_bias": bias, "stream": True, "stream_options": {"include_usage": True}}
        if direct:
            body["model"] = "tiny"
        return body

    def run(self, row: str, clients: int) -> Tuple[float, float, float, float]:
        """One cell: (tokens/s, mean TTFT ms, our CPU us/token, llama-server CPU us/token)."""
        srv = self.server(row)
        direct = row.startswith("direct")

        async def one(client: httpx.AsyncClient, k: int, t0: float) -> Tuple[int, float]:
            first: Optional[float] = None
            usage = None
            async with client.stream("POST", srv.url + "/v1/chat/completions", json=self.body(k, direct)) as r:
                if r.status_code != 200:
                    raise RuntimeError(f"{row}: HTTP {r.status_code}: {(await r.aread())[:300]!r}")
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    if first is None:  # both servers send their first event with the first token
                        first = time.perf_counter() - t0
                    if '"usage"' in line:
                        usage = json.loads(line[6:]).get("usage") or usage
            if usage is None or first is None:
                raise RuntimeError(f"{row}: no usage in the stream")
            if usage["completion_tokens"] != self.max_tokens:
                raise RuntimeError(f"{row}: {usage['completion_tokens']} tokens, expected {self.max_tokens}")
            return usage["completion_tokens"], first

        async def main() -> Tuple[int, float, List[float]]:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits, trust_env=False) as client:
                t0 = time.perf_counter()
                results = await asyncio.gather(*(one(client, k, t0) for k in range(clients)))
                wall = time.perf_counter() - t0
            return sum(n for n, _ in results), wall, [t for _, t in results]

        ours0, llama0 = cpu_seconds(srv.ours), cpu_seconds(srv.llama)
        tokens, wall, ttft = asyncio.run(main())
        ours, llama = cpu_seconds(srv.ours) - ours0, cpu_seconds(srv.llama) - llama0
        return tokens / wall, 1000 * sum(ttft) / len(ttft), 1e6 * ours / tokens, 1e6 * llama / tokens

    def harmony_cost(self, reps: int = 20) -> Tuple[float, float]:
        """The Harmony layer's CPU time per token, in microseconds: (rendering one request,
        amortized over ``max_tokens``; parsing one generated id with the lenient streaming
        parser and taking its delta), on ids a gateway run produced."""
        from llama_harmony.openai_request import messages_to_conversation

        enc = self.enc
        ids = self.sample_ids()
        t = time.perf_counter()
        for k in range(reps):
            convo = messages_to_conversation(messages(k))
            enc.render_conversation_for_completion(convo, Role.ASSISTANT)
        render = (time.perf_counter() - t) / reps
        t = time.perf_counter()
        for _ in range(reps):
            parser = StreamableParser(enc, Role.ASSISTANT, strict=False)
            for tok in ids:
                parser.process(tok)
                parser.last_content_delta
        parse = (time.perf_counter() - t) / (reps * len(ids))
        return 1e6 * render / self.max_tokens, 1e6 * parse

    def sample_ids(self) -> List[int]:
        """The ids of one greedy answer (from llama-server, as the gateway gets them)."""
        from llama_harmony.openai_request import messages_to_conversation
        from llama_harmony.upstream import completion_request

        prompt = self.enc.render_conversation_for_completion(messages_to_conversation(messages(0)), Role.ASSISTANT)
        body = completion_request(prompt, self.params, stream=False)
        r = httpx.post(self.servers("1x8")[0] + "/completion", json=body, timeout=120, trust_env=False)
        return [int(t) for t in r.json()["tokens"]]

    def close(self) -> None:
        for proc in self._ours:
            proc.kill()
            proc.wait(30)
        super().close()


def main(argv: Sequence[str] = ()) -> None:
    rows = ["embedded", "gw-1x8", "gw-2x4", "direct-1x8"]
    args = bench_upstream.arguments(__doc__, rows).parse_args(list(argv) or None)
    bench = Bench(args.max_tokens, args.threads)
    try:
        for row in args.rows:  # warm up: start the servers, load the model, open the pools
            bench.run(row, 1)
        print(f"tiny gpt-oss, {args.max_tokens} tokens per request, greedy, {args.threads} thread(s) per llama.cpp, "
              f"{os.cpu_count()} CPUs, best of {args.repeat}; ratio: tokens/s against embedded at the same clients; "
              f"cpu: server-side CPU per generated token (ours = llama-harmony, llama = llama-server)")
        print(f"{'row':<11} {'clients':>7} {'tok/s':>8} {'ttft ms':>8} {'ratio':>6} {'ours us/tok':>12} "
              f"{'llama us/tok':>13}")
        cells: Dict[Tuple[str, int], Tuple[float, float, float, float]] = {}
        for clients in args.clients:
            runs: Dict[str, List[Tuple[float, float, float, float]]] = {row: [] for row in args.rows}
            for _ in range(args.repeat):  # rows in turn: drift on a shared machine hits them alike
                for row in args.rows:
                    runs[row].append(bench.run(row, clients))
            for row in args.rows:
                cell = cells[row, clients] = max(runs[row], key=lambda c: c[0])
                base = cells.get(("embedded", clients))
                ratio = f"{cell[0] / base[0]:6.2f}" if base else "     -"
                print(f"{row:<11} {clients:>7} {cell[0]:>8.1f} {cell[1]:>8.1f} {ratio} {cell[2]:>12.0f} "
                      f"{cell[3]:>13.0f}", flush=True)
        if "gw-1x8" in args.rows and "direct-1x8" in args.rows:
            render, parse = bench.harmony_cost()
            print("\noverhead: the gateway over one llama-server -np 8 vs the same requests to its own "
                  "/v1/chat/completions (target >= 0.9)")
            for clients in args.clients:
                gw, direct = cells["gw-1x8", clients], cells["direct-1x8", clients]
                total = gw[2] + gw[3]
                print(f"  {clients:>2} clients: throughput {gw[0] / direct[0]:.2f}x, TTFT {gw[1]:.1f} vs "
                      f"{direct[1]:.1f} ms; gateway process {gw[2]:.0f} us/token = {100 * gw[2] / total:.0f} % of "
                      f"the server-side CPU per token ({total:.0f} us)")
            last = cells["gw-1x8", args.clients[-1]]
            share = 100 * (render + parse) / (last[2] + last[3])
            print(f"  Harmony layer alone: render {render:.2f} us + parse {parse:.2f} us per token "
                  f"({share:.2f} % of the server-side CPU per token at {args.clients[-1]} clients)")
    finally:
        bench.close()


if __name__ == "__main__":
    main(sys.argv[1:])
