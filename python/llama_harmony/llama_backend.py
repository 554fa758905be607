"""Token generation on llama.cpp in this process (llama-cpp-python), for :class:`~llama_harmony.engine.HarmonyEngine`.

:class:`LlamaBackend` wraps a loaded ``llama_cpp.Llama``: prompt ids and
:class:`~llama_harmony.sampling.SamplingParams` in, :class:`~llama_harmony.sampling.TokenStep`
values out (``Llama.generate`` underneath: every sampler, logits processor and grammar
honoured, the KV cache's prefix match kept). It never tokenizes or detokenizes: ids only.

Log-probabilities (``SamplingParams.logprobs``) are read by a logits processor placed first in
llama.cpp's sampler chain, so they are the model's own distribution (log-softmax of the raw
logits), before logit bias, grammars, penalties, temperature or a forcing processor.

llama.cpp's log
---------------
llama-cpp-python 0.3.36 maps llama.cpp's log levels with a table that predates ggml's
renumbering (``DEBUG=1, INFO=2, WARN=3, ERROR=4``), so with ``verbose=False`` it prints every
WARN line (``llama_kv_cache_iswa: using full-size SWA cache ...``, ``decode: failed to find a
memory slot ...``, ``load: setting token ... attribute``) and hides the real errors.
:func:`install_llama_log_filter` (called by :class:`LlamaBackend`, by
:meth:`~llama_harmony.engine.HarmonyEngine.from_path`, by the chat handler and at import of
this module when ``llama_cpp`` is already imported; call it before loading a ``Llama`` to
silence the load too) replaces llama-cpp-python's process-wide log callback with one that reads
the levels correctly and follows the same switch (llama-cpp-python's ``verbose``, i.e. the
level of the ``llama-cpp-python`` logger, set by the most recently constructed ``Llama``):
``verbose=True`` prints every line to stderr as before; ``verbose=False`` drops everything
except ERROR lines (and their continuation lines), which still reach stderr: they explain
failures (a model llama.cpp refuses) that the Python exception does not.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from .sampling import EOG_IDS, SamplingParams, TokenStep

__all__ = ["LlamaBackend", "install_llama_log_filter", "FIRST_SPECIAL_ID"]

#: The first special-token id of o200k_harmony (``<|startoftext|>``).
FIRST_SPECIAL_ID = 199998


# =================================================================================================
# llama.cpp's log
# =================================================================================================

#: ggml_log_level -> logging level (ggml: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5).
_GGML_LEVELS = {0: 20, 1: 10, 2: 20, 3: 30, 4: 40}
_log_state: Dict[str, Any] = {"callback": None, "last": 20}
_LLAMA_CPP_LOGGER = logging.getLogger("llama-cpp-python")
_log_lock = threading.Lock()


def _llama_log(level: int, text: Optional[bytes], user_data: Any) -> None:
    """The log callback: print a line when its level reaches llama-cpp-python's logger level."""
    try:
        if level == 5:  # GGML_LOG_LEVEL_CONT: the level of the line it continues
            py_level = _log_state["last"]
        else:
            py_level = _log_state["last"] = _GGML_LEVELS.get(int(level), 20)
        threshold = _LLAMA_CPP_LOGGER.level or logging.ERROR
        if text and py_level >= threshold:
            print(text.decode("utf-8", "replace"), end="", flush=True, file=sys.stderr)
    except BaseException:  # pragma: no cover - never raise into C (e.g. at interpreter shutdown)
        pass


def install_llama_log_filter() -> None:
    """Install the log callback described in the module docstring (once per process; the
    ctypes callback object is kept alive for the life of the process)."""
    if _log_state["callback"] is not None:
        return
    with _log_lock:
        if _log_state["callback"] is not None:
            return
        import ctypes

        import llama_cpp
        import llama_cpp.llama  # noqa: F401  (imports llama_cpp._logger, which sets its own callback first)

        cb = llama_cpp.llama_log_callback(_llama_log)
        llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
        _log_state["callback"] = cb


if "llama_cpp" in sys.modules:  # installing needs llama_cpp: done now if it is loaded, else on first use
    try:
        install_llama_log_filter()
    except Exception:  # pragma: no cover
        pass


# =================================================================================================
# Logits processors
# =================================================================================================

class _LogitBias:
    """``logit_bias`` ({token id: bias}) as a logits processor."""

    def __init__(self, bias: Mapping[Any, float]):
        import numpy as np

        self.ids = np.array([int(k) for k in bias], dtype=np.int64)
        self.values = np.array([float(v) for v in bias.values()], dtype=np.float32)

    def __call__(self, input_ids, scores):
        scores[self.ids] += self.values
        return scores


class _MaskSpecials:
    """Sets every special id except the end-of-generation ones to -inf (constrained bodies)."""

    def __init__(self, n_vocab: int):
        import numpy as np

        ids = [i for i in range(FIRST_SPECIAL_ID, n_vocab) if i not in EOG_IDS]
        self.ids = np.array(ids, dtype=np.int64)

    def __call__(self, input_ids, scores):
        import numpy as np

        scores[self.ids] = -np.inf
        return scores


class _LogprobProbe:
    """First processor of the chain: keeps the raw logits of the step (before anything changes
    them) so the sampled id's log-probability and the top ``k`` alternatives can be read."""

    def __init__(self, k: int):
        self.k = int(k)
        self._scores: Any = None
        self._lse = 0.0
        self._top: tuple = ()

    def __call__(self, input_ids, scores):
        import numpy as np

        s = np.array(scores, dtype=np.float64)
        m = float(s.max())
        self._lse = m + float(np.log(np.exp(s - m).sum()))
        self._scores = s
        if self.k > 0:
            k = min(self.k, s.shape[0])
            idx = np.argpartition(-s, k - 1)[:k]
            idx = idx[np.argsort(-s[idx], kind="stable")]
            self._top = tuple((int(i), float(s[i]) - self._lse) for i in idx)
        else:
            self._top = ()
        return scores

    def step(self, token: int) -> TokenStep:
        if self._scores is None:  # pragma: no cover - llama.cpp sampled without calling processors
            return TokenStep(token)
        return TokenStep(token, float(self._scores[token]) - self._lse, self._top)


# =================================================================================================
# The backend
# =================================================================================================

class _Lock:
    """A lock that refuses re-entry from the thread holding it (instead of deadlocking)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: Optional[int] = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._owner == me and self._lock.locked():
            raise RuntimeError("this engine is busy with an unfinished request in the same thread "
                               "(exhaust or close() the previous stream first)")
        self._lock.acquire()
        self._owner = me
        try:
            yield
        finally:
            self._owner = None
            self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


def _sampler_kwargs(p: SamplingParams) -> Dict[str, Any]:
    kw: Dict[str, Any] = {
        "temp": float(p.temperature if p.temperature is not None else 1.0),
        "top_p": float(p.top_p if p.top_p is not None else 1.0),
        "top_k": int(p.top_k if p.top_k is not None else 0),
        "min_p": float(p.min_p if p.min_p is not None else 0.0),
        "repeat_penalty": float(p.repeat_penalty if p.repeat_penalty is not None else 1.0),
    }
    for name, cast in (("typical_p", float), ("frequency_penalty", float), ("presence_penalty", float),
                       ("tfs_z", float), ("mirostat_mode", int), ("mirostat_tau", float),
                       ("mirostat_eta", float)):
        if p.extra.get(name) is not None:
            kw[name] = cast(p.extra[name])
    return kw


class LlamaBackend:
    """Generation on a loaded gpt-oss ``llama_cpp.Llama`` (one generation at a time).

    :meth:`generate` yields one :class:`~llama_harmony.sampling.TokenStep` per sampled id and
    never stops by itself (the caller stops on an end-of-generation id or its token budget,
    and closes the generator). A context that fills up ends the generator early (llama.cpp's
    ``llama_decode`` failure); :attr:`context_full` tells.
    """

    kind = "llama.cpp"
    #: One generation at a time: the KV cache belongs to the last one.
    serial = True

    def __init__(self, llama: Any):
        """Set up the LlamaBackend (the parameters are described in the class docstring)."""
        try:
            install_llama_log_filter()
        except Exception:  # pragma: no cover - a stand-in llama without llama_cpp
            pass
        self.llama = llama
        self.model_name = os.path.basename(getattr(llama, "model_path", "") or "") or "gpt-oss"
        self._lock = _Lock()
        self._grammars: Dict[str, Any] = {}
        self._mask: Optional[_MaskSpecials] = None
        #: True when the last generation ended because the context was full.
        self.context_full = False

    @property
    def n_ctx(self) -> int:
        """The usable context: llama.cpp's (which may round the requested size up, e.g. to 256)
        bounded by llama-cpp-python's token buffer (the size that was asked for)."""
        n = int(self.llama.n_ctx())
        buf = getattr(self.llama, "input_ids", None)
        return min(n, len(buf)) if buf is not None else n

    def hold(self):
        """Context manager: exclusive use of the model for one generation."""
        return self._lock.hold()

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model now."""
        return self._lock.locked()

    def cached_prefix(self, ids: Sequence[int]) -> int:
        """How many of ``ids`` ``Llama.generate``'s prefix match keeps (its own rule)."""
        llama = self.llama
        n = int(getattr(llama, "n_tokens", 0) or 0)
        if n <= 0:
            return 0
        cached = llama.input_ids[:n]
        m = min(n, len(ids))
        lcp = 0
        while lcp < m and int(cached[lcp]) == ids[lcp]:
            lcp += 1
        if lcp == len(ids):
            if n == len(ids) and not getattr(llama, "_requires_eval", True):
                return lcp
            return max(lcp - 1, 0)
        return lcp

    def constraint(self, schema: Mapping[str, Any]) -> Any:
        """A llama.cpp grammar for a JSON Schema (cached), or None when the converter refuses it."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            try:
                from llama_cpp import LlamaGrammar

                self._grammars[key] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception:
                self._grammars[key] = None
        return self._grammars[key]

    def generate(self, prompt_ids: Sequence[int], params: SamplingParams, *, processors: Sequence[Any] = (),
                 grammar: Any = None, forced: Optional[Sequence[int]] = None,
                 mask_specials: bool = False) -> Iterator[TokenStep]:
        """Sample after ``prompt_ids``; see the class docstring.

        ``processors``: llama-cpp-python logits processors (after the log-probability probe and
        before ``logit_bias``); ``grammar``: a ``LlamaGrammar`` (or GBNF text), default
        ``params.grammar``; ``forced``: ids to emit exactly (the model's forward pass runs, only
        sampling is forced; after them ``<|return|>``); ``mask_specials``: forbid every special
        id but the end-of-generation ones.
        """
        from llama_cpp import LlamaGrammar, LogitsProcessorList

        llama = self.llama
        probe = _LogprobProbe(params.logprobs) if params.logprobs is not None else None
        procs: List[Any] = [probe] if probe is not None else []
        procs += list(processors or [])
        if params.logit_bias:
            procs.append(_LogitBias(params.logit_bias))
        if forced is not None:
            from .tiny_model import ForcedTokens

            procs.append(ForcedTokens(forced, n_vocab=int(llama.n_vocab())))
        if mask_specials:
            if self._mask is None:
                self._mask = _MaskSpecials(int(llama.n_vocab()))
            procs.append(self._mask)
        if grammar is None and params.grammar:
            grammar = params.grammar
        if grammar is None and params.json_schema is not None:
            grammar = self.constraint(params.json_schema)
        if isinstance(grammar, str):
            grammar = LlamaGrammar.from_string(grammar, verbose=False)
        if params.seed is not None:
            llama.set_seed(int(params.seed))
        self.context_full = False
        gen = llama.generate(list(prompt_ids), logits_processor=LogitsProcessorList(procs) if procs else None,
                             grammar=grammar, **_sampler_kwargs(params))
        try:
            while True:
                try:
                    tok = int(next(gen))
                except StopIteration:
                    return
                except RuntimeError as exc:  # llama_decode failed (the context is full)
                    if "llama_decode" not in str(exc):
                        raise
                    self.context_full = True
                    return
                yield probe.step(tok) if probe is not None else TokenStep(tok)
        finally:
            gen.close()
