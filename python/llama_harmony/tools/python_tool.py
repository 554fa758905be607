"""gpt-oss's built-in ``python`` tool, run in the bubblewrap sandbox.

The model is told about the tool by the system message that the renderer builds from
``SystemContent.new().with_tools(ToolNamespaceConfig.python())`` (:func:`system_content`); it
calls the tool with an assistant message to ``python`` whose content (type ``code``) is the
code, and reads the result from a ``python`` tool message::

    <|start|>assistant to=python<|channel|>analysis code<|message|>print(6*7)<|call|>
    <|start|>python to=assistant<|channel|>analysis<|message|>42
    <|end|>

    from llama_harmony.tools.python_tool import PythonTool, harmony_messages

    tool = PythonTool()                      # PythonTool(PythonSandbox(limits)) to choose limits
    tool.check()                             # SandboxUnavailable when bwrap cannot run here
    out = tool.run("print(6*7)")
    out.text                                 # '42\\n': the python tool message's content
    out.code_interpreter_call("ci_1", "print(6*7)")   # the Responses API output item
    call, result = harmony_messages("print(6*7)", out)

**Stateless.** The tool's description (fixed by the model's training, rendered exactly) speaks
of a "stateful Jupyter notebook" and of ``/mnt/data`` keeping files. Here every call runs in a
fresh sandbox: variables, imports and files of earlier calls are gone. Re-running earlier
cells to rebuild the state is not safe (side effects, time, output run again), and a
long-lived interpreter per conversation would hold memory and processes between requests, so
neither is done. What is kept from notebooks: the value of a final expression is shown
(``6*7`` gives ``42``). When the code fails in a way statelessness explains (a ``NameError``,
a missing file under ``/mnt/data``), the tool message says so, so the model can recover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from .. import Author, Message, Role, SystemContent, ToolNamespaceConfig
from .sandbox import (
    PythonSandbox, SandboxError, SandboxInputError, SandboxLimits, SandboxResult,
    SandboxUnavailable,
)

__all__ = ["NO_OUTPUT", "PythonTool", "ToolOutput", "harmony_messages", "system_content"]

#: The tool message when the code printed nothing and showed no value.
NO_OUTPUT = "(no output)"

_STATELESS_NOTE = ("[Note: each python call runs in a fresh process; variables, imports and "
                   "files from earlier calls are not kept. Re-run what this code needs.]")


def system_content() -> SystemContent:
    """The system message content declaring the python tool, exactly as the reference
    renders it (``SystemContent.new().with_tools(ToolNamespaceConfig.python())``)."""
    return SystemContent.new().with_tools(ToolNamespaceConfig.python())


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def _limit_sentence(limit: str, limits: SandboxLimits) -> str:
    return {
        "cpu_time": f"Execution stopped: CPU time limit of {limits.cpu_seconds} s reached.",
        "wall_time": f"Execution stopped: time limit of {limits.wall_seconds:g} s reached.",
        "memory": f"Execution stopped: memory limit of {_mib(limits.memory_bytes)} reached.",
        "processes": (f"Execution stopped: limit of {limits.max_processes} processes and threads "
                      "reached."),
        "output": (f"Execution stopped: output limit of {limits.max_output_bytes} bytes reached "
                   "(output above is cut)."),
        "file_size": (f"Execution stopped: file size limit reached ({_mib(limits.max_file_bytes)} "
                      f"per file, {_mib(limits.tmp_bytes)} in /mnt/data)."),
    }[limit]


@dataclass(frozen=True)
class ToolOutput:
    """The outcome of one python call.

    ``text`` is the content of the ``python`` tool message the model reads: stdout, then
    stderr (the traceback), then a sentence when a limit stopped the code, when it exited
    with a non-zero status without saying why, or when statelessness explains the error;
    ``(no output)`` when there is nothing at all. ``logs`` is stdout then stderr (for the
    Responses API's ``outputs``); ``status`` is ``"completed"`` (the code ran, with or without
    an error of its own), ``"incomplete"`` (a limit stopped it) or ``"failed"`` (the sandbox
    could not run it); ``limit`` names the limit; ``result`` is the sandbox's full result
    (``None`` when it did not run).
    """

    text: str
    logs: str
    status: str
    limit: Optional[str] = None
    result: Optional[SandboxResult] = None

    def code_interpreter_call(self, item_id: str, code: str, *,
                              container_id: str = "llama-harmony-sandbox") -> Dict[str, Any]:
        """The Responses API ``code_interpreter_call`` output item of this call."""
        return {
            "type": "code_interpreter_call",
            "id": item_id,
            "status": self.status,
            "code": code,
            "container_id": container_id,
            "outputs": [{"type": "logs", "logs": self.logs}],
        }


class PythonTool:
    """The python tool: runs the model's code in ``sandbox`` (a default
    :class:`~.sandbox.PythonSandbox` when ``None``) and words the result for the model.

    :meth:`run` never raises: sandbox problems become a ``failed`` :class:`ToolOutput` whose
    text tells the model the tool is unavailable. Thread-safe.
    """

    #: The recipient the model addresses, and the tool message's author name.
    name = "python"

    def __init__(self, sandbox: Optional[PythonSandbox] = None):
        """Set up the PythonTool (the parameters are described in the class docstring)."""
        self.sandbox = sandbox or PythonSandbox()

    def check(self) -> None:
        """Raise :class:`~.sandbox.SandboxUnavailable` when the sandbox cannot run here (call
        it at start-up, before offering the tool to the model)."""
        self.sandbox.check()

    def run(self, code: str) -> ToolOutput:
        """Run one call's code (a fresh sandbox) and build the tool message's text."""
        if not isinstance(code, str):
            return ToolOutput(text=f"Error: the code must be text, not {type(code).__name__}.",
                              logs="", status="failed")
        try:
            result = self.sandbox.run(code, show_last_value=True)
        except SandboxInputError as exc:
            text = f"Error: the code was not run: {exc}."
            return ToolOutput(text=text, logs=text, status="failed")
        except SandboxUnavailable as exc:
            text = f"Error: the python tool is unavailable on this server ({exc})."
            return ToolOutput(text=text, logs=text, status="failed")
        except (SandboxError, OSError) as exc:
            text = f"Error: the python tool failed to run the code ({exc})."
            return ToolOutput(text=text, logs=text, status="failed")
        return self._output(result)

    def _output(self, result: SandboxResult) -> ToolOutput:
        parts: List[str] = [p for p in (result.stdout, result.stderr) if p]
        logs = _join(parts)
        notes: List[str] = []
        if result.limit is not None:
            notes.append(_limit_sentence(result.limit, self.sandbox.limits))
        elif result.exit_code not in (0, 1) and result.exit_code is not None:
            # 1 is an uncaught exception (its traceback is above); others are worth a word.
            notes.append(f"Process exited with status {result.exit_code}.")
        if _stateless_miss(result.stderr):
            notes.append(_STATELESS_NOTE)
        text = _join(parts + notes) if parts or notes else NO_OUTPUT
        status = "incomplete" if result.limit is not None else "completed"
        return ToolOutput(text=text, logs=logs, status=status, limit=result.limit, result=result)


def _join(parts: List[str]) -> str:
    out = ""
    for part in parts:
        if out and not out.endswith("\n"):
            out += "\n"
        out += part
    return out


def _stateless_miss(stderr: str) -> bool:
    """The error a notebook's kept state would have avoided: an undefined name, or a file
    under /mnt/data that an earlier call wrote."""
    last = stderr.rstrip().rsplit("\n", 1)[-1]
    return last.startswith("NameError: name ") or (
        last.startswith("FileNotFoundError:") and "/mnt/data" in last)


def harmony_messages(code: str, output: Union[ToolOutput, str], *,
                     channel: str = "analysis") -> Tuple[Message, Message]:
    """The two Harmony messages of one python call: the model's call (assistant, to
    ``python``, content type ``code``) and the tool's answer (author ``python``, to
    ``assistant``), both on ``channel`` (the call's channel: ``analysis`` as trained).

    Rendered they read ``<|start|>assistant to=python<|channel|>analysis code<|message|>CODE
    <|call|>`` and ``<|start|>python to=assistant<|channel|>analysis<|message|>TEXT<|end|>``,
    exactly as openai-harmony renders the same messages. When generation continues from the
    model's own tokens, only the second message is new.
    """
    text = output.text if isinstance(output, ToolOutput) else output
    call = (Message.from_role_and_content(Role.ASSISTANT, code).with_channel(channel)
            .with_recipient("python").with_content_type("code"))
    answer = (Message.from_author_and_content(Author.new(Role.TOOL, "python"), text)
              .with_recipient("assistant").with_channel(channel))
    return call, answer
