"""Taking turns on a model that runs one generation at a time (llama.cpp in this process).

Requests wait in arrival order for at most ``queue_timeout`` seconds (then ``503`` with
``Retry-After``), at most ``max_queue`` of them at once (more get ``503`` right away). A
request whose client leaves while it waits is dropped from the queue. The model is handed on
only when the previous generation has really let go of it (its worker thread ended), so a
cancelled generation never overlaps the next one.

Backends that serve many generations at once (llama-server replicas) get an open gate.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

from .errors import ApiError

__all__ = ["ModelGate"]


class ModelGate:
    """See the module docstring. ``on_change(waiting)`` is called when the queue length changes."""

    def __init__(self, *, serial: bool, queue_timeout: float, max_queue: int,
                 on_change: Optional[Callable[[int], None]] = None):
        """Set up the ModelGate (the parameters are described in the class docstring)."""
        self.serial = bool(serial)
        self.queue_timeout = float(queue_timeout)
        self.max_queue = int(max_queue)
        self._sem = asyncio.Semaphore(1)
        self._on_change = on_change or (lambda n: None)
        self.waiting = 0
        self.busy = False
        self.served = 0

    async def acquire(self) -> None:
        """Wait for the model (raises :class:`ApiError` 503 when the queue is full or too slow;
        cancelling the waiting task leaves the queue)."""
        if not self.serial:
            return
        if self.busy and self.waiting >= self.max_queue:
            raise ApiError(503, f"server busy: {self.waiting} requests are already waiting for the model "
                                f"(max_queue={self.max_queue})", code="server_busy", headers={"Retry-After": "1"})
        self.waiting += 1
        self._on_change(self.waiting)
        try:
            await asyncio.wait_for(self._sem.acquire(), timeout=self.queue_timeout)
        except asyncio.TimeoutError:
            raise ApiError(503, f"server busy: waited {self.queue_timeout:g} s for the model (queue_timeout)",
                           code="server_busy", headers={"Retry-After": "1"}) from None
        finally:
            self.waiting -= 1
            self._on_change(self.waiting)
        self.busy = True

    def release(self) -> None:
        """Hand the model to the next request (call once per successful :meth:`acquire`)."""
        if not self.serial:
            return
        self.served += 1
        self.busy = False
        self._sem.release()
