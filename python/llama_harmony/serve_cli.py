"""The ``llama-harmony serve`` command (its options and what it runs).

Kept apart from :mod:`llama_harmony.cli` so that ``--help`` works without the ``[server]``
extra: FastAPI and uvicorn are imported only when the server starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, TextIO

__all__ = ["add_serve_parser", "cmd_serve", "API_KEY_ENV"]

#: Environment variable holding an API key (comma-separated for several).
API_KEY_ENV = "LLAMA_HARMONY_API_KEY"

DESCRIPTION = """\
Serve gpt-oss over an OpenAI-compatible HTTP API: POST /v1/chat/completions (streaming with
server-sent events), GET /v1/models, GET /health, GET /metrics (Prometheus), /docs.
Prompts are rendered and replies parsed by llama-harmony (exact Harmony).

Security defaults: binds 127.0.0.1; no API key unless --api-key (or $LLAMA_HARMONY_API_KEY)
is given, and a warning when binding another address without one; no cross-origin access
unless --cors-origin; POST bodies must be application/json; message content is not logged
unless --log-content. SIGTERM / Ctrl-C stops gracefully (running answers end with
finish_reason "length").
"""


def add_serve_parser(sub: Any, positive_int: Callable[..., Any], float_range: Callable[..., Any]) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to an argparse sub-parser set."""
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/chat/completions)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = s.add_argument_group("model (one of --model or --upstream)")
    m.add_argument("--model", "-m", metavar="PATH", help="gpt-oss GGUF file, run in this process (llama-cpp-python)")
    m.add_argument("--upstream", action="append", default=[], metavar="URL",
                   help="gateway mode: a llama-server (http://host:port) serving a gpt-oss GGUF; repeat for "
                        "replicas (prefix-affinity routing, health checks, failover). See scripts/build-llama-server.sh")
    m.add_argument("--upstream-api-key", metavar="KEY", help="the upstreams' --api-key")
    m.add_argument("--upstream-timeout", type=float_range("--upstream-timeout", 0.1, 3600.0), default=60.0,
                   metavar="SECONDS", help="longest silence of an upstream stream before it fails over (default 60)")
    m.add_argument("--upstream-wait", type=float_range("--upstream-wait", 0.0, 3600.0), default=30.0,
                   metavar="SECONDS", help="how long to wait at start-up for an upstream to answer (default 30)")
    m.add_argument("--ctx", type=positive_int("--ctx", 64), default=8192, metavar="N",
                   help="context size in tokens (default 8192; with --upstream: the upstream's)")
    m.add_argument("--threads", type=positive_int("--threads"), default=None, metavar="N",
                   help="CPU threads (default: llama.cpp's choice)")
    m.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    m.add_argument("--model-name", metavar="NAME",
                   help="model id reported by the API (default: the file name, or the upstream's alias)")
    m.add_argument("--model-alias", action="append", default=[], metavar="NAME",
                   help="another model id requests may use (repeatable)")
    m.add_argument("--cot-policy", choices=("spec", "reference", "keep"), default="spec",
                   help="which earlier reasoning is rendered back (default spec: the current tool chain's)")
    m.add_argument("--replay", metavar="FILE",
                   help="replay mode: a JSON list of Harmony completions (text, special tokens by name), forced "
                        "through the model one per generation, in order")

    n = s.add_argument_group("network and security")
    n.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    n.add_argument("--port", type=positive_int("--port", 0, 65535), default=8000,
                   help="port (default 8000; 0 picks a free one)")
    n.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' on every endpoint but /health (repeatable; "
                        f"also ${API_KEY_ENV}, comma-separated)")
    n.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow web pages of this origin (e.g. https://app.example.com) to call the API "
                        "(repeatable; default: none)")
    n.add_argument("--max-request-bytes", type=positive_int("--max-request-bytes", 1024), default=1 << 20,
                   metavar="N", help="largest accepted request body (default 1048576)")

    r = s.add_argument_group("Responses API and built-in tools")
    r.add_argument("--python-tool", action="store_true",
                   help="run the model's python calls in a bubblewrap sandbox (no network, bounded CPU, memory, "
                        "processes, output) and feed the output back (needs the bwrap command)")
    r.add_argument("--browser-backend", metavar="local:FOLDER",
                   help="the browser tool over a local folder of .txt/.md/.html files (full-text search with "
                        "SQLite FTS5); e.g. local:./docs")
    r.add_argument("--max-tool-rounds", type=positive_int("--max-tool-rounds"), default=8, metavar="N",
                   help="built-in tool calls run for one answer before it ends (default 8)")
    r.add_argument("--responses-db", metavar="PATH",
                   help="keep stored responses in this SQLite file (survives restarts; default: in memory)")
    r.add_argument("--responses-max", type=positive_int("--responses-max"), default=1000, metavar="N",
                   help="stored responses kept at most; the least recently used go first (default 1000)")

    q = s.add_argument_group("queueing and shutdown")
    q.add_argument("--queue-timeout", type=float_range("--queue-timeout", 0.0, 86400.0), default=300.0,
                   metavar="SECONDS", help="how long a request waits for the model before 503 (default 300)")
    q.add_argument("--max-queue", type=positive_int("--max-queue"), default=64, metavar="N",
                   help="requests allowed to wait at once; more get 503 (default 64)")
    q.add_argument("--shutdown-timeout", type=float_range("--shutdown-timeout", 0.0, 3600.0), default=10.0,
                   metavar="SECONDS", help="longest wait for running answers on shutdown (default 10)")

    lg = s.add_argument_group("logging")
    lg.add_argument("--quiet", action="store_true", help="do not log requests")
    lg.add_argument("--log-content", action="store_true",
                    help="also log message content and replies (off by default: only sizes and counts)")
    s.set_defaults(func=cmd_serve)
    return s


def _connect_upstreams(args: argparse.Namespace) -> Any:
    from .cli import UsageError
    from .engine import HarmonyEngine

    try:
        from .upstream import UpstreamError
    except ImportError as exc:
        raise UsageError(f"--upstream needs the [server] extra (httpx): {exc}") from None
    try:
        # A stalled upstream is found by a stream's silence, then a /health that does not
        # answer: both bounded by --upstream-timeout (health checks by at most 5 s).
        return HarmonyEngine.from_upstream(args.upstream, api_key=args.upstream_api_key, wait=args.upstream_wait,
                                           read_timeout=args.upstream_timeout,
                                           health_timeout=min(5.0, args.upstream_timeout))
    except ValueError as exc:
        raise UsageError(f"--upstream: {exc}") from None
    except UpstreamError as exc:
        raise UsageError(f"cannot reach the upstream llama-server(s): {exc}") from None


def _responses_runtime(args: argparse.Namespace) -> Any:
    """The Responses API's store and built-in tools from the options (UsageError when one cannot run)."""
    from .cli import UsageError
    from .response_store import ResponseStore, ResponseStoreError
    from .server import ResponsesRuntime

    try:
        store = ResponseStore(max_count=args.responses_max, path=args.responses_db)
    except (ResponseStoreError, OSError, ValueError) as exc:
        raise UsageError(f"--responses-db {args.responses_db}: {exc}") from None
    python_tool = None
    if args.python_tool:
        from .tools.python_tool import PythonTool
        from .tools.sandbox import SandboxUnavailable

        python_tool = PythonTool()
        try:
            python_tool.check()
        except SandboxUnavailable as exc:
            raise UsageError(f"--python-tool: the sandbox cannot run here: {exc}") from None
    backend = None
    if args.browser_backend:
        kind, _, where = args.browser_backend.partition(":")
        if kind != "local" or not where:
            raise UsageError("--browser-backend: expected local:FOLDER (the only backend that ships; see the "
                             "README for writing a web backend)")
        from .tools.browser import BackendError, LocalFolderBackend

        try:
            backend = LocalFolderBackend(where)
        except (BackendError, OSError, ValueError) as exc:
            raise UsageError(f"--browser-backend {args.browser_backend}: {exc}") from None
    return ResponsesRuntime(store, python_tool=python_tool, browser_backend=backend,
                            max_tool_rounds=args.max_tool_rounds)


def _api_keys(args: argparse.Namespace) -> List[str]:
    keys = [k for k in args.api_key if k]
    env = os.environ.get(API_KEY_ENV, "")
    keys += [k.strip() for k in env.split(",") if k.strip()]
    return keys


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """Run the server until SIGTERM / Ctrl-C."""
    from .cli import UsageError, _check_model_path, _load_engine

    try:
        from .server import ServerConfig, bind, create_app, serve
    except ImportError as exc:
        raise UsageError(f"the HTTP server needs the [server] extra (pip install 'llama-harmony[server]'): "
                         f"{exc}") from None
    replay = None
    if args.replay:
        from .replay import Replay, ReplayFileError

        try:
            replay = Replay.from_file(args.replay)
        except ReplayFileError as exc:
            raise UsageError(str(exc)) from None
    if bool(args.model) == bool(args.upstream):
        raise UsageError("give either --model PATH (run the model here) or --upstream URL (llama-server replicas)")
    runtime = _responses_runtime(args)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    if args.upstream:
        engine = _connect_upstreams(args)
        name = args.model_name or engine.model_name
    else:
        _check_model_path(args.model)
        name = args.model_name or Path(args.model).name.removesuffix(".gguf")
        engine = _load_engine(args.model, n_ctx=args.ctx, n_threads=args.threads, verbose=args.verbose)
    engine.cot_policy = args.cot_policy
    engine.replay = replay
    config = ServerConfig(model_name=name, aliases=tuple(args.model_alias), api_keys=tuple(_api_keys(args)),
                          cors_origins=tuple(args.cors_origin), max_request_bytes=args.max_request_bytes,
                          queue_timeout=args.queue_timeout, max_queue=args.max_queue, log_content=args.log_content,
                          shutdown_timeout=args.shutdown_timeout)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s",
                        stream=sys.stderr)
    app = create_app(engine, config, responses=runtime)

    def ready(url: str) -> None:
        extra = f", replaying {replay.remaining} completions from {args.replay}" if replay is not None else ""
        if args.upstream:
            extra += f", gateway to {len(args.upstream)} llama-server upstream(s)"
        auth = "API key required" if config.api_keys else "no API key"
        sys.stderr.write(f"Serving {name} at {url}/v1 ({auth}{extra}). Ctrl-C to stop.\n")
        sys.stderr.flush()

    serve(app, args.host, args.port, sock=sock, on_ready=ready)
    return 0
