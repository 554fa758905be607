"""llama-cpp-python integration: :class:`HarmonyChatHandler` and :func:`register_chat_format`.

Plugs :class:`~llama_harmony.engine.HarmonyEngine` into llama-cpp-python's own API::

    llm = Llama(model_path=..., chat_handler=HarmonyChatHandler())
    llm.create_chat_completion(messages=[...], tools=[...], stream=True)

or, after :func:`register_chat_format`, ``Llama(..., chat_format="gpt-oss-harmony")``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

from . import HarmonyEncodingName, load_harmony_encoding
from .engine import HarmonyEngine
from .llama_backend import install_llama_log_filter
from .openai_request import render_config

__all__ = ["CHAT_FORMAT_NAME", "HarmonyChatHandler", "register_chat_format"]

CHAT_FORMAT_NAME = "gpt-oss-harmony"


class HarmonyChatHandler:
    """A llama-cpp-python chat handler for gpt-oss::

        llm = Llama(model_path="gpt-oss-20b.gguf", n_ctx=8192, chat_handler=HarmonyChatHandler())
        llm.create_chat_completion(messages=[...], tools=[...], stream=True)

    Every argument of ``Llama.create_chat_completion`` is honoured (sampling, ``stop``,
    ``seed``, ``max_tokens``, ``logits_processor``, ``grammar``, ``logit_bias``,
    ``response_format``, ``tools``/``tool_choice`` and the legacy ``functions``/
    ``function_call``). ``reasoning_effort`` comes from the constructor (default
    ``"medium"``) unless a ``reasoning_effort`` keyword reaches the handler (llama-cpp-python's
    own ``create_chat_completion`` does not forward one; call the handler directly, or use
    :class:`HarmonyEngine`, for per-request effort). One :class:`HarmonyEngine` is kept per
    ``Llama`` object; ``cot_policy``, ``constrained`` and ``reuse_generated_ids`` are passed
    to it (see :class:`HarmonyEngine`).
    """

    def __init__(self, *, reasoning_effort: Any = "medium", cot_policy: str = "spec", constrained: bool = False,
                 encoding: Any = None, model_identity: Optional[str] = None,
                 conversation_start_date: Optional[str] = None, reuse_generated_ids: bool = True):
        """Set up the HarmonyChatHandler (the parameters are described in the class docstring)."""
        render_config(cot_policy)
        try:
            install_llama_log_filter()
        except Exception:  # pragma: no cover
            pass
        self.reasoning_effort = reasoning_effort
        self.cot_policy = cot_policy
        self.constrained = constrained
        self.reuse_generated_ids = bool(reuse_generated_ids)
        self.model_identity = model_identity
        self.conversation_start_date = conversation_start_date
        self._encoding = encoding
        self._engines: "weakref.WeakKeyDictionary[Any, HarmonyEngine]" = weakref.WeakKeyDictionary()
        self._engines_lock = threading.Lock()

    def engine_for(self, llama: Any) -> HarmonyEngine:
        """The engine bound to ``llama`` (created on first use)."""
        with self._engines_lock:
            engine = self._engines.get(llama)
            if engine is None:
                if self._encoding is None:
                    self._encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
                engine = HarmonyEngine(llama, encoding=self._encoding, cot_policy=self.cot_policy,
                                       constrained=self.constrained, reuse_generated_ids=self.reuse_generated_ids)
                self._engines[llama] = engine
            return engine

    def __call__(
        self,
        *,
        llama: Any,
        messages: List[Any],
        functions: Optional[List[Any]] = None,
        function_call: Any = None,
        tools: Optional[List[Any]] = None,
        tool_choice: Any = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        stream: bool = False,
        stop: Optional[Union[str, List[str]]] = None,
        seed: Optional[int] = None,
        response_format: Any = None,
        max_tokens: Optional[int] = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.1,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: Optional[str] = None,
        logits_processor: Any = None,
        grammar: Any = None,
        logit_bias: Optional[Dict[Any, float]] = None,
        logprobs: Optional[bool] = None,
        top_logprobs: Optional[int] = None,
        **kwargs: Any,
    ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        if not tools and functions:
            tools = [{"type": "function", "function": f} for f in functions]
            if tool_choice is None and function_call is not None:
                if isinstance(function_call, str):
                    tool_choice = function_call
                elif isinstance(function_call, Mapping) and function_call.get("name"):
                    tool_choice = {"type": "function", "function": {"name": function_call["name"]}}
        effort = kwargs.pop("reasoning_effort", None) or self.reasoning_effort
        extra: Dict[str, Any] = {}
        for key in ("model_identity", "conversation_start_date"):
            value = kwargs.get(key, getattr(self, key))
            if value is not None:
                extra[key] = value
        return self.engine_for(llama).create_chat_completion(
            messages, tools=tools, tool_choice=tool_choice, stream=stream, reasoning_effort=effort,
            response_format=response_format, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop,
            logits_processor=logits_processor, grammar=grammar, stream_options=kwargs.get("stream_options"),
            model=model, typical_p=typical_p, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, tfs_z=tfs_z, mirostat_mode=mirostat_mode,
            mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, logit_bias=logit_bias, logprobs=logprobs,
            top_logprobs=top_logprobs, **extra)


def register_chat_format(name: str = CHAT_FORMAT_NAME, **handler_kwargs: Any) -> HarmonyChatHandler:
    """Register a :class:`HarmonyChatHandler` under ``name`` (default ``"gpt-oss-harmony"``) in
    llama-cpp-python's chat-handler registry, so ``Llama(..., chat_format=name)`` uses it.
    Registering again replaces the previous handler. Returns the handler."""
    from llama_cpp import llama_chat_format

    handler = HarmonyChatHandler(**handler_kwargs)
    registry = llama_chat_format.LlamaChatCompletionHandlerRegistry()
    try:
        registry.unregister_chat_handler(name)
    except ValueError:
        pass
    llama_chat_format.register_chat_completion_handler(name)(handler)
    return handler
