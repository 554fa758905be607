"""Running gpt-oss's built-in tools for the server (the python sandbox, the browser).

Both endpoints use it: the Responses API (``code_interpreter`` / ``web_search_preview`` tools)
and chat completions (the same tool types in ``tools``). The tool runs in a worker thread, so
the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = ["ToolRun", "is_builtin_recipient", "run_builtin"]


@dataclass
class ToolRun:
    """One built-in call's outcome: ``text`` for the model (the tool's Harmony message),
    ``status`` (``completed`` / ``failed``), ``logs`` (python's stdout + stderr), ``action``
    (the browser's ``web_search_call`` action)."""

    tool: str
    text: str
    status: str
    logs: Optional[str] = None
    action: Optional[Dict[str, Any]] = field(default=None)

    def message(self, recipient: str, code: str, channel: str) -> Any:
        """The tool's answer as a Harmony message (author ``python`` / ``browser.*``, to the
        assistant, on the call's ``channel``)."""
        if self.tool == "python":
            from ..tools.python_tool import harmony_messages

            return harmony_messages(code, self.text, channel=channel)[1]
        from ..tools.browser import harmony_message

        return harmony_message(recipient, self.text, channel=channel)


def is_builtin_recipient(recipient: Optional[str]) -> Optional[str]:
    """``"python"`` / ``"browser"`` when a message is addressed to a built-in tool, else None."""
    r = (recipient or "").strip()
    if r == "python":
        return "python"
    if r.startswith("browser.") and len(r) > 8:
        return "browser"
    return None


async def run_builtin(runtime: Any, session: Any, recipient: str, text: str) -> ToolRun:
    """Run a call addressed to ``recipient`` (``python`` or ``browser.search`` / ``open`` /
    ``find``) with the model's ``text`` (code, or JSON arguments)."""
    if is_builtin_recipient(recipient) == "python":
        out = await asyncio.to_thread(runtime.python_tool.run, text)
        return ToolRun("python", out.text, "failed" if out.status == "failed" else "completed", logs=out.logs)
    result = await asyncio.to_thread(session.run, recipient, text)
    return ToolRun("browser", result.text, "completed" if result.ok else "failed", action=result.action)
