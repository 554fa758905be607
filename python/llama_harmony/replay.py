"""Replay recorded gpt-oss completions through a real model (replay mode).

A replay is a list of Harmony completions written as text: what the model emits after the
prompt's ``<|start|>assistant``, special tokens by name, for example::

    [
      "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\\"city\\":\\"Paris\\"}<|call|>",
      "<|channel|>final<|message|>It is sunny in Paris.<|return|>"
    ]

Each generation takes the next entry, tokenizes it with llama_harmony (special-token names
become their ids) and forces those ids through the model: llama.cpp's forward pass runs for
every token as usual, only the sampling is forced. With the tiny random-weight model
(:mod:`llama_harmony.tiny_model`) this lets anyone test a client against exact gpt-oss
behaviour — tool calls, streaming, errors — without weights.

From Python::

    from llama_harmony.engine import HarmonyEngine
    from llama_harmony.replay import Replay

    engine = HarmonyEngine.from_path("tiny.gguf", replay=Replay.from_file("replay.json"))

From the command line: ``llama-harmony serve --model tiny.gguf --replay replay.json``. When
every entry has been used, the next generation raises :class:`ReplayExhausted` (the server
answers ``503`` with code ``replay_exhausted``).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, List, Sequence, Union

__all__ = ["Replay", "ReplayExhausted", "ReplayFileError"]


class ReplayExhausted(RuntimeError):
    """Every recorded completion of the replay has been used."""


class ReplayFileError(ValueError):
    """The replay file is missing or is not a JSON list of strings."""


class Replay:
    """Recorded completions, handed out one per generation, in order (thread-safe).

    :param completions: the completions as Harmony text (special tokens by name).
    :param source: where they came from (for messages).
    """

    def __init__(self, completions: Sequence[str], *, source: str = "replay"):
        """Set up the Replay (the parameters are described in the class docstring)."""
        if isinstance(completions, (str, bytes)) or not all(isinstance(c, str) for c in completions):
            raise ReplayFileError(f"{source}: a replay is a list of strings (Harmony completions as text)")
        self.completions: List[str] = list(completions)
        self.source = source
        self._next = 0
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"]) -> "Replay":
        """Read a replay file: a JSON list of strings. Raises :class:`ReplayFileError`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise ReplayFileError(f"replay file not found: {str(p)!r}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ReplayFileError(f"cannot read the replay file {str(p)!r}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ReplayFileError(f"the replay file {str(p)!r} is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise ReplayFileError(f"the replay file {str(p)!r} must hold a JSON list of strings, "
                                  f"not a {type(data).__name__}")
        for i, item in enumerate(data):
            if not isinstance(item, str):
                raise ReplayFileError(f"the replay file {str(p)!r}: item [{i}] must be a string "
                                      f"(a Harmony completion as text), not {json.dumps(item)[:40]}")
        return cls(data, source=str(p))

    @property
    def used(self) -> int:
        """How many completions have been handed out."""
        return self._next

    @property
    def remaining(self) -> int:
        """How many completions are left."""
        return len(self.completions) - self._next

    def next_text(self) -> str:
        """The next completion's text. Raises :class:`ReplayExhausted` when none is left."""
        with self._lock:
            if self._next >= len(self.completions):
                raise ReplayExhausted(f"the replay {self.source} is used up: all {len(self.completions)} "
                                      f"recorded completions have been served")
            text = self.completions[self._next]
            self._next += 1
            return text

    def next_ids(self, encoding: Any) -> List[int]:
        """The next completion as token ids (tokenized by ``encoding``, special tokens allowed)."""
        return [int(t) for t in encoding.encode(self.next_text(), allowed_special="all")]
