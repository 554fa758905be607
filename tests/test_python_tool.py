"""The python tool (llama_harmony.tools.python_tool): real sandbox runs, the tool message's
wording, the Responses API item, and the Harmony messages checked against openai-harmony."""

from __future__ import annotations

import pytest

import llama_harmony as lh
from llama_harmony.tools.python_tool import NO_OUTPUT, PythonTool, harmony_messages, system_content
from llama_harmony.tools.sandbox import PythonSandbox, SandboxLimits

MIB = 1 << 20


@pytest.fixture(scope="module")
def tool() -> PythonTool:
    t = PythonTool(PythonSandbox(SandboxLimits(cpu_seconds=1, wall_seconds=3, memory_bytes=256 * MIB,
                                               max_processes=16, max_output_bytes=1000)))
    t.check()
    return t


def test_print_and_the_responses_item(tool):
    out = tool.run("print(6*7)")
    assert (out.text, out.logs, out.status, out.limit) == ("42\n", "42\n", "completed", None)
    assert out.code_interpreter_call("ci_1", "print(6*7)") == {
        "type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "print(6*7)",
        "container_id": "llama-harmony-sandbox", "outputs": [{"type": "logs", "logs": "42\n"}]}


def test_final_expression_is_shown_like_a_notebook(tool):
    assert tool.run("import math\nmath.factorial(10)").text == "3628800\n"
    assert tool.run("x = 1").text == NO_OUTPUT


def test_errors_come_back_as_tracebacks(tool):
    out = tool.run("print('before')\n1/0")
    assert out.status == "completed"
    assert out.text.startswith("before\nTraceback (most recent call last):\n")
    assert out.text.endswith("ZeroDivisionError: division by zero\n")
    out = tool.run("import sys\nsys.exit(3)")
    assert out.text == "Process exited with status 3."


def test_statelessness_is_explained_when_it_bites(tool):
    assert tool.run("x = 5").text == NO_OUTPUT
    out = tool.run("print(x)")
    assert "NameError: name 'x' is not defined" in out.text
    assert out.text.endswith("variables, imports and files from earlier calls are not kept. "
                             "Re-run what this code needs.]")
    out = tool.run("open('/mnt/data/report.csv').read()")
    assert "FileNotFoundError" in out.text and "not kept" in out.text
    assert "not kept" not in tool.run("open('/nonexistent').read()").text


@pytest.mark.parametrize("code, limit, sentence", [
    ("while True:\n    pass", "cpu_time", "Execution stopped: CPU time limit of 1 s reached."),
    ("import time\ntime.sleep(60)", "wall_time", "Execution stopped: time limit of 3 s reached."),
    ("x = bytearray(4 << 30)", "memory", "Execution stopped: memory limit of 256 MiB reached."),
    ("import os\nwhile True:\n    os.fork()", "processes",
     "Execution stopped: limit of 16 processes and threads reached."),
    ("while True:\n    print('y' * 100)", "output",
     "Execution stopped: output limit of 1000 bytes reached (output above is cut)."),
    ("open('f', 'wb').write(b'x' * (32 << 20))", "file_size",
     "Execution stopped: file size limit reached (16 MiB per file, 64 MiB in /mnt/data)."),
])
def test_limits_are_worded_for_the_model(tool, code, limit, sentence):
    out = tool.run(code)
    assert (out.limit, out.status) == (limit, "incomplete")
    assert out.text.endswith(sentence), out.text[-300:]
    assert out.code_interpreter_call("ci", code)["status"] == "incomplete"


def test_unavailable_sandbox_and_bad_input_never_raise(tool, tmp_path):
    out = PythonTool(PythonSandbox(bwrap=str(tmp_path / "no-bwrap"))).run("print(1)")
    assert out.status == "failed"
    assert out.text.startswith("Error: the python tool is unavailable on this server (bubblewrap not found")
    out = PythonTool(PythonSandbox(SandboxLimits(max_input_bytes=10))).run("print('far too long')")
    assert out.status == "failed" and "max_input_bytes=10" in out.text
    out = tool.run(None)  # type: ignore[arg-type]
    assert (out.status, out.text) == ("failed", "Error: the code must be text, not NoneType.")


def test_harmony_messages_render_like_the_reference(tool, harmony_reference, enc):
    oh, ref_enc = harmony_reference
    out = tool.run("print(6*7)")
    call, answer = harmony_messages("print(6*7)", out)
    ref_call = (oh.Message.from_role_and_content(oh.Role.ASSISTANT, "print(6*7)").with_channel("analysis")
                .with_recipient("python").with_content_type("code"))
    ref_answer = (oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, "python"), "42\n")
                  .with_recipient("assistant").with_channel("analysis"))
    assert enc.render(call) == ref_enc.render(ref_call)
    assert enc.render(answer) == ref_enc.render(ref_answer)
    assert enc.decode(enc.render(answer)) == "<|start|>python to=assistant<|channel|>analysis<|message|>42\n<|end|>"
    system = lh.Message.from_role_and_content(lh.Role.SYSTEM, system_content())
    ref_system = oh.Message.from_role_and_content(
        oh.Role.SYSTEM, oh.SystemContent.new().with_tools(oh.ToolNamespaceConfig.python()))
    assert enc.render(system) == ref_enc.render(ref_system)
    assert "## python\n\nUse this tool to execute Python code" in enc.decode(enc.render(system))


def test_a_parsed_model_call_runs_and_its_answer_goes_into_the_next_prompt(tool, enc):
    """The model's call as it emits it, parsed; run; the answer rendered into the next turn."""
    sampled = enc.encode("<|channel|>analysis<|message|>Compute it.<|end|><|start|>assistant"
                         "<|channel|>analysis to=python code<|message|>print(6*7)<|call|>",
                         allowed_special="all")
    messages = enc.parse_messages_from_completion_tokens(sampled, lh.Role.ASSISTANT, strict=False)
    model_call = messages[-1]
    assert (model_call.recipient, model_call.content_type, model_call.channel) == ("python", "code", "analysis")
    out = tool.run(model_call.text())
    _, answer = harmony_messages(model_call.text(), out, channel=model_call.channel)
    convo = lh.Conversation.from_messages(
        [lh.Message.from_role_and_content(lh.Role.SYSTEM, system_content()),
         lh.Message.from_role_and_content(lh.Role.USER, "What is 6*7?"), *messages, answer])
    prompt = enc.decode(enc.render_conversation_for_completion(convo, lh.Role.ASSISTANT))
    assert prompt.endswith("<|start|>assistant to=python<|channel|>analysis code<|message|>print(6*7)<|call|>"
                           "<|start|>python to=assistant<|channel|>analysis<|message|>42\n<|end|>"
                           "<|start|>assistant")
