"""What a token generator is asked for and what it yields, whatever runs the model.

The Harmony layer (render, parse, OpenAI shapes) is the same for every way of running gpt-oss:
llama.cpp in this process (:mod:`llama_harmony.engine`) or llama.cpp's own server over HTTP
(:mod:`llama_harmony.upstream`). Between the two sits this small contract: prompt token ids
and :class:`SamplingParams` go in, :class:`TokenStep` values come out, one per sampled id.

Pure Python, no dependency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = ["EOG_IDS", "MAX_TOP_LOGPROBS", "SamplingParams", "TokenStep"]

#: End-of-generation ids of gpt-oss in llama.cpp: <|endoftext|>, <|return|>, <|call|>.
EOG_IDS = frozenset({199999, 200002, 200012})

#: The most alternatives per token ``top_logprobs`` may ask for (OpenAI's bound).
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one generation.

    ``max_tokens`` ``None`` means: what is left of the context. ``logit_bias`` maps token ids
    to an additive bias (``-inf``: never). ``grammar`` is GBNF text applied to the whole
    output (None: none); ``json_schema`` a JSON Schema the output must follow (converted to a
    grammar by llama.cpp), used when ``grammar`` is None.
    ``logprobs`` ``None``: no log-probabilities; ``k`` (0..20): the sampled token's
    log-probability plus the ``k`` most likely alternatives, computed from the model's
    logits (before any sampler). ``extra`` holds less common llama.cpp samplers by their
    llama-cpp-python names (``typical_p``, ``presence_penalty``, ``frequency_penalty``,
    ``mirostat_mode``, ``mirostat_tau``, ``mirostat_eta``, ``tfs_z``).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: Optional[int] = None
    max_tokens: Optional[int] = None
    logit_bias: Dict[int, float] = field(default_factory=dict)
    grammar: Optional[str] = None
    json_schema: Optional[Dict[str, Any]] = None
    logprobs: Optional[int] = None
    extra: Dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenStep:
    """One sampled id; with logprobs requested, its log-probability and the top alternatives
    (``(id, logprob)`` pairs, most likely first)."""

    id: int
    logprob: Optional[float] = None
    top_logprobs: Tuple[Tuple[int, float], ...] = ()
