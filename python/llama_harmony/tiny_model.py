"""A tiny random-weight gpt-oss model for tests, and a logits processor that replays tokens.

No gpt-oss weights are available offline, yet the llama.cpp integration has to be tested
against the real engine: its tokenizer metadata, its end-of-generation handling, its KV cache
and its sampling loop.  This module writes a *structurally* faithful gpt-oss GGUF (same
architecture, same 201,088-token o200k_harmony vocabulary, same special-token ids, random
weights, a few MB of parameters) that llama.cpp loads in well under a second.

Random weights produce random text, so tests drive generation with :class:`ForcedTokens`, a
logits processor that leaves exactly one id finite at every step.  That replays any recorded
Harmony completion token for token through the real llama.cpp sampling loop::

    from llama_cpp import Llama, LogitsProcessorList

    path = ensure_tiny_model(token_bytes)             # built once, then cached
    llm = Llama(str(path), n_ctx=512, n_threads=1, verbose=False)
    forced = ForcedTokens(recorded_completion_ids)    # e.g. <|channel|>analysis<|message|>...
    out = []
    for tok in llm.generate(prompt_ids, temp=1.0, logits_processor=LogitsProcessorList([forced])):
        out.append(tok)
        if tok in (200002, 200012):                   # <|return|>, <|call|>
            break
    assert out == recorded_completion_ids             # whatever the weights say

This module is pure Python: it needs :mod:`numpy` and :mod:`gguf` (imported lazily by the
builder) and never imports the native extension or :mod:`llama_cpp`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

__all__ = [
    "FORMAT_VERSION",
    "N_VOCAB",
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "FIRST_SPECIAL_ID",
    "build_tiny_gpt_oss_gguf",
    "default_cache_dir",
    "ensure_tiny_model",
    "tiny_model_filename",
    "ForcedTokens",
]

#: Bump whenever the builder's output changes, so cached files are rebuilt.
FORMAT_VERSION = 1

#: Rows of the gpt-oss embedding (ids 0..201087).
N_VOCAB = 201_088
#: First id of the special/reserved range; ids >= this are written as CONTROL tokens.
FIRST_SPECIAL_ID = 199_998
BOS_ID = 199_998  # <|startoftext|>
PAD_ID = 199_999  # <|endoftext|>
EOS_ID = 200_002  # <|return|>

ProgressFn = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------------
# Vocabulary helpers
# --------------------------------------------------------------------------------------------

def _byte_to_unicode_table() -> dict[int, str]:
    """The GPT-2 byte-level mapping: every byte value to one printable unicode character.

    Printable latin-1 bytes map to themselves; the remaining 68 bytes (controls, space,
    DEL, NBSP, soft hyphen...) map to U+0100, U+0101, ... in increasing byte order.
    """
    keep = set(range(ord("!"), ord("~") + 1))
    keep |= set(range(0xA1, 0xAC + 1))
    keep |= set(range(0xAE, 0xFF + 1))
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _token_strings(token_bytes: Sequence[bytes]) -> list[str]:
    """GPT-2 byte-to-unicode strings for every token's bytes (byte i of latin-1 -> table[i])."""
    trans = str.maketrans({chr(b): u for b, u in _byte_to_unicode_table().items()})
    return [bytes(t).decode("latin-1").translate(trans) for t in token_bytes]


def _check_token_bytes(token_bytes: Sequence[bytes]) -> None:
    if len(token_bytes) != N_VOCAB:
        raise ValueError(f"token_bytes must hold {N_VOCAB} entries (ids 0..{N_VOCAB - 1}), "
                         f"got {len(token_bytes)}")
    for i, t in enumerate(token_bytes):
        if not isinstance(t, (bytes, bytearray, memoryview)) or len(t) == 0:
            raise ValueError(f"token_bytes[{i}] must be a non-empty bytes object, got {t!r}")


def _unique_strings(strings: list[str]) -> list[str]:
    """Make the token strings unique (llama.cpp maps text -> id and needs a bijection).

    o200k_harmony's byte strings are already unique, so this normally returns the input.
    A clash (e.g. a caller passing the same text for two reserved ids) is resolved by
    renaming the later, CONTROL-range duplicate to ``<|tiny_dup_ID|>``.
    """
    seen: dict[str, int] = {}
    out = list(strings)
    for i, s in enumerate(out):
        if s in seen:
            if i < FIRST_SPECIAL_ID:
                raise ValueError(f"token ids {seen[s]} and {i} have the same bytes")
            s = f"<|tiny_dup_{i}|>"
            if s in seen:
                raise ValueError(f"cannot make token {i} unique")
            out[i] = s
        seen[s] = i
    return out


def _vocab_digest(token_bytes: Sequence[bytes]) -> str:
    """A SHA-256 over the length-prefixed token bytes (identifies a vocabulary)."""
    h = hashlib.sha256()
    for t in token_bytes:
        t = bytes(t)
        h.update(len(t).to_bytes(4, "little"))
        h.update(t)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------

def build_tiny_gpt_oss_gguf(
    path: "os.PathLike[str] | str",
    token_bytes: Sequence[bytes],
    *,
    seed: int = 0,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 1,
    head_dim: Optional[int] = None,
    n_expert: int = 4,
    n_expert_used: int = 2,
    n_ff_exp: int = 64,
    context_length: int = 4096,
    sliding_window: int = 128,
    progress: Optional[ProgressFn] = None,
) -> Path:
    """Write a random-weight gpt-oss GGUF that llama.cpp loads, and return its path.

    :param path: destination file. Written atomically (a temp file in the same directory,
        then :func:`os.replace`), so readers never see a partial file.
    :param token_bytes: 201,088 ``bytes`` objects, the bytes of token ids 0..201087. For the
        special/reserved ids (>= 199,998) pass the token's text, e.g. ``b"<|start|>"``,
        ``b"<|reserved_200013|>"``. They become GPT-2 byte-level token strings; ids >= 199,998
        are typed CONTROL, the rest NORMAL.
    :param seed: weights are drawn from ``numpy.random.default_rng(seed)``; the same inputs
        give a byte-identical file.
    :param n_embd, n_layer, n_head, n_head_kv, head_dim, n_expert, n_expert_used, n_ff_exp:
        model shape. ``head_dim`` defaults to ``n_embd // n_head``.
    :param context_length: ``gpt-oss.context_length`` (the training context).
    :param sliding_window: ``gpt-oss.attention.sliding_window`` (every other layer is SWA).
    :param progress: optional ``callable(done, total, label)`` called as the work advances.

    The two vocabulary-sized matrices (token_embd, output) are float16 and dominate the size:
    about ``2 * 201088 * n_embd * 2`` bytes (51 MB at n_embd=64) plus ~3.5 MB of vocabulary.
    Tokenizer metadata: model ``gpt2``, pre ``gpt-4o``, one merge (``Ġ Ġ``; llama.cpp refuses
    a gpt2 vocabulary without merges, and the tiny model is never asked to tokenize text
    seriously), bos 199998, eos 200002, pad 199999, no automatic BOS/EOS.
    """
    import numpy as np
    import gguf

    path = Path(path)
    _check_token_bytes(token_bytes)
    if head_dim is None:
        if n_embd % n_head:
            raise ValueError("n_embd must be divisible by n_head (or pass head_dim)")
        head_dim = n_embd // n_head
    if n_head % n_head_kv:
        raise ValueError("n_head must be a multiple of n_head_kv")
    if not 0 < n_expert_used <= n_expert:
        raise ValueError("need 0 < n_expert_used <= n_expert")

    # ---- tensor plan: (name, numpy shape, dtype, kind) in file order --------------------------
    # Numpy shapes are llama.cpp's ne[] reversed.
    f16, f32 = np.float16, np.float32
    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    plan: list[tuple[str, tuple[int, ...], type, str]] = [
        ("token_embd.weight", (N_VOCAB, n_embd), f16, "embed"),
        ("output_norm.weight", (n_embd,), f32, "ones"),
        ("output.weight", (N_VOCAB, n_embd), f16, "embed"),
    ]
    for i in range(n_layer):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (n_embd,), f32, "ones"),
            (b + "attn_q.weight", (q_dim, n_embd), f32, "w"),
            (b + "attn_q.bias", (q_dim,), f32, "bias"),
            (b + "attn_k.weight", (kv_dim, n_embd), f32, "w"),
            (b + "attn_k.bias", (kv_dim,), f32, "bias"),
            (b + "attn_v.weight", (kv_dim, n_embd), f32, "w"),
            (b + "attn_v.bias", (kv_dim,), f32, "bias"),
            (b + "attn_output.weight", (n_embd, q_dim), f32, "w"),
            (b + "attn_output.bias", (n_embd,), f32, "bias"),
            (b + "attn_sinks.weight", (n_head,), f32, "bias"),
            (b + "post_attention_norm.weight", (n_embd,), f32, "ones"),
            (b + "ffn_gate_inp.weight", (n_expert, n_embd), f32, "w"),
            (b + "ffn_gate_inp.bias", (n_expert,), f32, "bias"),
            (b + "ffn_gate_exps.weight", (n_expert, n_ff_exp, n_embd), f16, "w"),
            (b + "ffn_gate_exps.bias", (n_expert, n_ff_exp), f32, "bias"),
            (b + "ffn_up_exps.weight", (n_expert, n_ff_exp, n_embd), f16, "w"),
            (b + "ffn_up_exps.bias", (n_expert, n_ff_exp), f32, "bias"),
            (b + "ffn_down_exps.weight", (n_expert, n_embd, n_ff_exp), f16, "w"),
            (b + "ffn_down_exps.bias", (n_expert, n_embd), f32, "bias"),
        ]

    total = 2 + len(plan)
    done = 0

    def tick(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, label)

    if progress is not None:
        progress(0, total, "vocabulary")
    strings = _unique_strings(_token_strings(token_bytes))
    types = [int(gguf.TokenType.CONTROL) if i >= FIRST_SPECIAL_ID else int(gguf.TokenType.NORMAL)
             for i in range(N_VOCAB)]
    tick("vocabulary")

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        w = gguf.GGUFWriter(tmp, "gpt-oss")
        w.add_name("tiny-gpt-oss (random weights, llama-harmony tests)")
        w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
        w.add_block_count(n_layer)
        w.add_context_length(context_length)
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(n_ff_exp)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_freq_base(150000.0)
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(32.0)
        w.add_rope_scaling_orig_ctx_len(4096)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_expert_used)
        w.add_expert_feed_forward_length(n_ff_exp)
        w.add_sliding_window(sliding_window)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-4o")
        w.add_token_list(strings)
        w.add_token_types(types)
        w.add_token_merges(["\u0120 \u0120"])
        w.add_bos_token_id(BOS_ID)
        w.add_eos_token_id(EOS_ID)
        w.add_pad_token_id(PAD_ID)
        w.add_add_bos_token(False)
        w.add_add_eos_token(False)

        for name, shape, dtype, _kind in plan:
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            w.add_tensor_info(name, shape, np.dtype(dtype), nbytes)

        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        tick("metadata")

        rng = np.random.default_rng(seed)
        for name, shape, dtype, kind in plan:
            arr: np.ndarray
            if kind == "ones":
                arr = np.ones(shape, dtype=dtype)
            elif kind == "bias":
                arr = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)
            elif kind == "embed":
                arr = (rng.standard_normal(shape, dtype=np.float32) * 0.5).astype(dtype)
            else:  # "w": fan-in scaled so activations stay O(1)
                scale = 1.0 / float(np.sqrt(shape[-1]))
                arr = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype)
            w.write_tensor_data(arr)
            tick(name)
        w.close()
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """Where built models are cached.

    ``$LLAMA_HARMONY_CACHE`` if set, else ``$XDG_CACHE_HOME/llama-harmony``, else
    ``~/.cache/llama-harmony``.
    """
    env = os.environ.get("LLAMA_HARMONY_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and os.path.isabs(os.path.expanduser(xdg)) \
        else Path.home() / ".cache"
    return base / "llama-harmony"


def tiny_model_filename(token_bytes: Sequence[bytes]) -> str:
    """File name of the cached tiny model: builder format version + vocabulary digest."""
    return f"tiny-gpt-oss-v{FORMAT_VERSION}-{_vocab_digest(token_bytes)[:16]}.gguf"


def ensure_tiny_model(
    token_bytes: Sequence[bytes],
    cache_dir: "os.PathLike[str] | str | None" = None,
    progress: Optional[ProgressFn] = None,
) -> Path:
    """Return the cached tiny model for this vocabulary, building it first if it is missing.

    The file name carries :data:`FORMAT_VERSION` and a digest of ``token_bytes``, so a changed
    builder or vocabulary gets a new file; an existing file is reused without being read.
    Concurrent callers are safe: each builds into its own temp file and renames atomically.
    Default settings (seed 0) are used.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = directory / tiny_model_filename(token_bytes)
    if path.is_file() and path.stat().st_size > 0:
        return path
    return build_tiny_gpt_oss_gguf(path, token_bytes, progress=progress)


# --------------------------------------------------------------------------------------------
# Forced decoding
# --------------------------------------------------------------------------------------------

class ForcedTokens:
    """llama-cpp-python logits processor that forces an exact sequence of token ids.

    At every sampling step it sets every logit to ``-inf`` except the next forced id (which
    gets 0.0), so whatever the sampler settings (temperature, top-k/p, min-p, repeat penalty,
    seed) llama.cpp picks exactly that id. Once the sequence is exhausted it forces
    ``end_id`` (default 200002 ``<|return|>``, an end-of-generation id) forever, so the
    caller's stop logic, or ``create_completion``'s EOG check, ends the generation.

    This is how real Harmony output is replayed through real llama.cpp on the tiny
    random-weight model: record (or write down) the completion ids a gpt-oss model produced,
    force them, and check that the code under test (streaming parser, stop handling, KV-cache
    reuse, chat handler) sees exactly what it would see with the real model.

    Position comes from ``len(input_ids)`` (llama-cpp-python passes prompt + generated ids):
    the first call records the prompt length (or pass ``prompt_len``) and the step with
    ``k`` generated ids forces ``ids[k]``; calling twice for one position is harmless. Use a
    fresh instance, or :meth:`reset`, for every generation.

    Usage::

        from llama_cpp import LogitsProcessorList
        forced = ForcedTokens(ids)
        out = []
        for tok in llm.generate(prompt_ids, temp=0.7,
                                logits_processor=LogitsProcessorList([forced])):
            out.append(tok)
            if tok in (200002, 200012):        # generate() never stops by itself
                break

    Caveats measured with llama-cpp-python 0.3.36: an exception raised inside a logits
    processor is printed and ignored (sampling goes on with the unmodified logits), so ids
    are validated here, up front; combined with a ``grammar`` that rejects the forced id no
    candidate is left and llama.cpp aborts the whole process.
    """

    def __init__(
        self,
        ids: Iterable[int],
        end_id: int = EOS_ID,
        *,
        prompt_len: Optional[int] = None,
        n_vocab: int = N_VOCAB,
    ):
        """``ids``: forced in order, then ``end_id``; ``prompt_len``: the prompt's length when known
        (else taken from the first call); ``n_vocab``: ids are checked against it."""
        self.ids = [int(i) for i in ids]
        self.end_id = int(end_id)
        for t in self.ids + [self.end_id]:
            if not 0 <= t < n_vocab:
                raise ValueError(f"token id {t} outside the vocabulary (0..{n_vocab - 1})")
        self._start = prompt_len
        self._last_k = 0
        #: How many times llama.cpp asked for logits.
        self.calls = 0

    def reset(self, prompt_len: Optional[int] = None) -> None:
        """Start over: forget the recorded prompt length and counters."""
        self._start = prompt_len
        self._last_k = 0
        self.calls = 0

    def next_id(self, n_input: int) -> int:
        """The id forced when the context holds ``n_input`` tokens (prompt + generated)."""
        if self._start is None:
            self._start = n_input
        k = n_input - self._start
        if 0 <= k < len(self.ids):
            return self.ids[k]
        return self.end_id

    @property
    def position(self) -> int:
        """How many of ``ids`` have been forced so far (capped at ``len(ids)``)."""
        return min(self._last_k, len(self.ids))

    @property
    def exhausted(self) -> bool:
        """True once every id of the sequence has been forced."""
        return self._last_k >= len(self.ids)

    def __call__(self, input_ids, scores):
        """Logits-processor protocol: ``(input_ids, scores) -> scores`` (numpy arrays)."""
        import numpy as np

        n = len(input_ids)
        tok = self.next_id(n)
        self._last_k = max(self._last_k, n - self._start + 1)
        self.calls += 1
        scores[...] = -np.inf
        scores[..., tok] = 0.0
        return scores
