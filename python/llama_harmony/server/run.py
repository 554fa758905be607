"""Running the app with uvicorn: binding, the start-up warnings, and a graceful shutdown.

On SIGTERM or SIGINT (Ctrl-C) the server stops accepting connections, ends every running
generation at its next token — streams get their final chunk (``finish_reason: "length"``)
and ``data: [DONE]``, non-streamed requests their JSON answer with the output so far — waits
at most ``shutdown_timeout`` seconds for the answers to leave, and returns. A second Ctrl-C
exits at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from typing import Any, Callable, Iterator, Optional

import uvicorn

__all__ = ["serve", "bind", "is_loopback", "BackgroundServer"]

log = logging.getLogger("llama_harmony.server")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port=0``: a free port; read it with ``sock.getsockname()[1]``)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, draining the app's generations when asked to stop."""

    def __init__(self, config: uvicorn.Config, state: Any):
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._state.drain()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Like uvicorn's, without re-raising the signal afterwards: a graceful stop exits 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, *, sock: Optional[socket.socket] = None,
          on_ready: Optional[Callable[[str], None]] = None) -> None:
    """Serve ``app`` (from :func:`~llama_harmony.server.create_app`) until SIGTERM/SIGINT.

    ``sock``: an already bound socket (see :func:`bind`); ``on_ready(url)`` is called once the
    server accepts connections.
    """
    state = app.state.server
    # uvicorn's own start/stop lines say nothing our log line does not; its errors still show.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    # Nor do httpx's lines for each request to an upstream (gateway mode: every generation and
    # every health check); failures show in our log line and in /metrics.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not is_loopback(host) and not state.config.api_keys:
        log.warning("listening on %s, which is not a loopback address, WITHOUT an API key: anyone who can reach "
                    "this port can use the model. Set --api-key (or LLAMA_HARMONY_API_KEY), or bind 127.0.0.1.",
                    host)
    sock = sock or bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{shown}:{bound_port}"
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=int(max(1, round(state.config.shutdown_timeout))),
                            timeout_keep_alive=30)
    server = _Server(config, state)
    if on_ready is not None:
        original_startup = server.startup

        async def startup(sockets: Any = None) -> None:
            await original_startup(sockets=sockets)
            if server.started:
                on_ready(url)

        server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])


class BackgroundServer:
    """The app served by uvicorn in a background thread (tests, notebooks, embedding)::

        with BackgroundServer(create_app(engine)) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="-")

    :meth:`drain` ends the running generations the way a SIGTERM would; :meth:`stop` (or
    leaving the ``with`` block) shuts the server down gracefully.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        """Set up the BackgroundServer (the parameters are described in the class docstring)."""
        self.app = app
        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        state = app.state.server
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                                timeout_graceful_shutdown=int(max(1, round(state.config.shutdown_timeout))))
        self.server = _Server(config, state)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="llama-harmony-server")

    def start(self) -> "BackgroundServer":
        """Start serving (once; later calls do nothing) and wait until connections are accepted."""
        import time

        if self.thread.is_alive() or self.server.started:
            return self
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def drain(self) -> None:
        """End the running generations as a SIGTERM would (their clients get the output so far)."""
        self.app.state.server.drain()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain, shut the server down gracefully and wait for its thread."""
        self.drain()
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
