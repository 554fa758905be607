"""Real llama-server / ggml-rpc-server processes on loopback, for tests and benchmarks.

The binaries come from ``scripts/build-llama-server.sh`` (a no-op once cached: it prints the
cached directory). Every process started here is registered and killed by :func:`kill_all`
(tests/conftest.py calls it at the end of every test module, so failures leave nothing
running). Each process logs to a temporary file (``Proc.log``; failure messages quote its tail).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "scripts" / "build-llama-server.sh"

_bin_dir: Optional[Path] = None
_procs: List["Proc"] = []


def bin_dir() -> Path:
    """The directory holding ``llama-server`` and ``ggml-rpc-server`` (built on first use)."""
    global _bin_dir
    if _bin_dir is None:
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=sys.stderr,
                             check=True, text=True, timeout=3600)
        _bin_dir = Path(out.stdout.strip().splitlines()[-1])
    return _bin_dir


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One child process with its log file; ``url`` for llama-server."""

    def __init__(self, args: Sequence[str], port: int, name: str) -> None:
        self.args = list(args)
        self.port = port
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.popen: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        if self not in _procs:
            _procs.append(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap (SIGCONT first, in case it was stopped)."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.popen.kill()
            self.popen.wait(timeout=30)

    def wait_http_ok(self, path: str = "/health", timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def wait_port(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} does not listen after {timeout} s:\n{self.log_tail()}")


def llama_server(model: Path, *, parallel: int = 4, ctx_per_slot: int = 1024, threads: int = 1,
                 port: Optional[int] = None, extra: Sequence[str] = (), name: str = "llama-server",
                 wait: bool = True) -> Proc:
    """Start ``llama-server -m model -np parallel`` on a free loopback port and wait for
    ``/health``. ``--swa-full`` keeps gpt-oss's sliding-window layers whole so a cached prefix
    is reusable whatever follows it; ``--no-warmup`` starts faster."""
    port = port or free_port()
    args = [str(bin_dir() / "llama-server"), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-np", str(parallel), "-c", str(ctx_per_slot * parallel), "-t", str(threads), "-tb", str(threads),
            "--swa-full", "--no-warmup", "--no-webui", "--metrics", "-a", "tiny", *extra]
    proc = Proc(args, port, name)
    if wait:
        proc.wait_http_ok()
    return proc


def rpc_server(*, port: Optional[int] = None, threads: int = 1, name: str = "ggml-rpc-server") -> Proc:
    """Start ``ggml-rpc-server -H 127.0.0.1 -p port`` and wait until it listens."""
    port = port or free_port()
    proc = Proc([str(bin_dir() / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(port), "-t", str(threads)],
                port, name)
    proc.wait_port()
    return proc


def kill_all() -> None:
    """Kill every process started by this module and remove its log (kept when the
    environment sets ``LLAMA_HARMONY_KEEP_LOGS``)."""
    while _procs:
        proc = _procs.pop()
        proc.kill()
        if not os.environ.get("LLAMA_HARMONY_KEEP_LOGS"):
            proc.log.unlink(missing_ok=True)
