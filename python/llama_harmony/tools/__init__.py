"""gpt-oss's built-in tools, server-independent: the python tool in a bubblewrap sandbox
(:mod:`.sandbox`, :mod:`.python_tool`) and the browser tool over a pluggable search backend
(:mod:`.browser`).

Nothing here is imported by ``import llama_harmony``; every module uses the standard library
only (plus the package's own Harmony message model).
"""
