"""Smoke test of an installed llama-harmony wheel: import, load, encode, render, parse.

Run by ``scripts/test-all.sh`` with the oldest and the newest CPython on the machine, from an
empty HOME with no network. Needs only the package (no test dependencies) and runs on
Python 3.9. Prints one line and exits 0, or raises.
"""
import json
import os
import platform
import sys

import llama_harmony as lh

here = os.path.dirname(os.path.abspath(lh.__file__))
assert "site-packages" in here, f"not the installed package: {here}"
assert "llama_cpp" not in sys.modules

enc = lh.load_harmony_encoding(lh.HarmonyEncodingName.HARMONY_GPT_OSS)
assert enc.encode("hello world") == [24912, 2375]
assert enc.n_vocab == 201089

convo = lh.Conversation.from_messages([
    lh.Message.from_role_and_content(lh.Role.SYSTEM, lh.SystemContent.new().with_conversation_start_date("2025-06-28")),
    lh.Message.from_role_and_content(
        lh.Role.DEVELOPER,
        lh.DeveloperContent.new().with_instructions("Be brief").with_function_tools([
            lh.ToolDescription.new("get_weather", "Current weather",
                                   {"type": "object", "properties": {"city": {"type": "string"}}}),
        ]),
    ),
    lh.Message.from_role_and_content(lh.Role.USER, "Weather in Paris?"),
])
prompt = enc.render_conversation_for_completion(convo, lh.Role.ASSISTANT)
text = enc.decode(prompt)
assert text.startswith("<|start|>system<|message|>") and text.endswith("<|start|>assistant"), text

completion = enc.encode(
    "<|channel|>analysis<|message|>Need the weather.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city": "Paris"}<|call|>', allowed_special="all")
messages = enc.parse_messages_from_completion_tokens(completion, lh.Role.ASSISTANT)
assert [(m.channel, m.recipient, m.text()) for m in messages] == [
    ("analysis", None, "Need the weather."),
    ("commentary", "functions.get_weather", '{"city": "Paris"}'),
], messages

parser = lh.StreamableParser(enc, lh.Role.ASSISTANT, strict=False)
head = enc.encode("<|channel|>final<|message|>Hi", allowed_special="all")
events = parser.feed(head + [2 ** 40] + enc.encode("<|return|>", allowed_special="all")) + parser.finish()
assert [(e.kind, e.detail) for e in events if e.type == "repair"] == [("invalid_token", str(2 ** 40))], events
assert parser.messages[0].text() == "Hi\ufffd"

print(json.dumps({"python": platform.python_version(), "llama_harmony": lh.__version__,
                  "prompt_tokens": len(prompt), "parsed": len(messages), "ok": True}))
