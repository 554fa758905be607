# Regenerates builtin_tools.json: the browser and python tool namespaces of openai-harmony 0.0.8.
# Run with the reference installed and TIKTOKEN_ENCODINGS_BASE set:
#   python third_party/harmony/dump_builtin_tools.py > third_party/harmony/builtin_tools.json
import json
from openai_harmony import ToolNamespaceConfig
out = {"browser": ToolNamespaceConfig.browser().model_dump(), "python": ToolNamespaceConfig.python().model_dump()}
print(json.dumps(out, indent=1, ensure_ascii=False))
