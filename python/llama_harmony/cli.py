"""The ``llama-harmony`` command line.

Subcommands::

    llama-harmony demo                      offline tour on a tiny random-weight gpt-oss model
    llama-harmony chat --model M.gguf       interactive chat (streamed, reasoning dimmed)
    llama-harmony serve --model M.gguf      OpenAI-compatible HTTP server
    llama-harmony render conversation.json  Harmony prompt tokens of a conversation
    llama-harmony parse tokens.json         messages of sampled token ids

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence, TextIO

from . import serve_cli

PROG = "llama-harmony"
_EFFORTS = ("low", "medium", "high")
_ROLES = ("system", "developer", "user", "assistant", "tool")


class UsageError(Exception):
    """A user error: reported as one line on stderr, exit code 2."""


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors raised as UsageError (so main() can return 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


class _Style:
    """ANSI styling, enabled only for a TTY, without --no-color and without $NO_COLOR."""

    def __init__(self, stream: TextIO, enabled: bool):
        self.on = bool(enabled and not os.environ.get("NO_COLOR") and _isatty(stream))

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on and text else text

    def dim(self, t: str) -> str:
        return self._wrap("2", t)

    def bold(self, t: str) -> str:
        return self._wrap("1", t)

    def cyan(self, t: str) -> str:
        return self._wrap("36", t)

    def yellow(self, t: str) -> str:
        return self._wrap("33", t)

    def green(self, t: str) -> str:
        return self._wrap("32", t)

    def red(self, t: str) -> str:
        return self._wrap("31", t)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


def _version() -> str:
    try:
        from . import __version__

        return __version__
    except Exception:  # pragma: no cover - native core missing
        try:
            from importlib.metadata import version

            return version("llama-harmony")
        except Exception:
            return "unknown"


def _load_encoding():
    from . import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def _read_input(source: str) -> str:
    """Text of a file, or of stdin for ``-``: read the same way (UTF-8, a leading byte-order
    mark dropped, the same errors)."""
    name = "stdin" if source == "-" else source
    try:
        if source == "-":
            buffer = getattr(sys.stdin, "buffer", None)
            if buffer is None:  # a text stream without bytes underneath (e.g. io.StringIO)
                return sys.stdin.read().lstrip("\ufeff")
            data = buffer.read()
        else:
            data = Path(source).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such file: {source}") from None
    except IsADirectoryError:
        raise UsageError(f"{source} is a directory, not a file") from None
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{name} is not UTF-8 text: {e}") from None


def _json_text(value: Any) -> str:
    """A value as it reads in JSON (``true``, ``null``), cut to 60 characters."""
    from .openai_request import _js

    return _js(value)


def _read_json(source: str) -> Any:
    text = _read_input(source)
    name = "stdin" if source == "-" else source
    if not text.strip():
        raise UsageError(f"{name} is empty: expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{name}: invalid JSON: {e}") from None
    except RecursionError:
        raise UsageError(f"{name}: JSON nested too deeply") from None


def _print_json(obj: Any, out: TextIO, indent: Optional[int] = None) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def _import_engine():
    """The engine module (needs llama-cpp-python), or a UsageError saying what to install."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise UsageError("llama-cpp-python is not installed: pip install 'llama-harmony[llama]'") from None
    try:
        from . import engine
    except ImportError as e:
        raise UsageError(f"the llama.cpp engine is unavailable: {e}") from None
    return engine


def _check_model_path(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"model file not found: {path}")
    if not p.is_file():
        raise UsageError(f"model path is not a file: {path}")
    return p


def _load_engine(path: str, *, n_ctx: int, n_threads: Optional[int] = None, seed: Optional[int] = None,
                 verbose: bool = False):
    p = _check_model_path(path)
    engine_mod = _import_engine()
    model_error = getattr(engine_mod, "ModelError", ())
    try:
        return engine_mod.HarmonyEngine.from_path(str(p), n_ctx=n_ctx, n_threads=n_threads, seed=seed,
                                                  verbose=verbose)
    except Exception as e:  # noqa: BLE001
        if model_error and isinstance(e, model_error):
            raise UsageError(f"cannot load model {path}: {e}") from None
        if isinstance(e, ValueError):  # llama-cpp-python: "Failed to load model from file"
            raise UsageError(f"cannot load model {path}: {e}") from None
        raise


def _positive_int(name: str, lo: int = 1, hi: Optional[int] = None):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"{name} must be {rng}, got {v}")
        return v

    return conv


def _float_range(name: str, lo: float, hi: float):
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be between {lo:g} and {hi:g}, got {v:g}")
        return v

    return conv


def _limit_value(name: str):
    """argparse type of a limit: a positive integer, with an optional binary suffix for sizes
    (``64K``, ``512M``, ``2G``: KiB, MiB, GiB)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

    def conv(text: str) -> int:
        t = text.strip().lower().removesuffix("ib").removesuffix("b")
        mult = 1
        if t and t[-1] in units:
            mult, t = units[t[-1]], t[:-1]
        try:
            v = int(t.replace("_", "")) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer (K, M, G suffixes allowed), "
                                             f"got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {text!r}")
        return v

    return conv


def _limit_fields() -> Dict[str, int]:
    from . import Limits

    return Limits().as_dict()


def _add_limit_args(p: argparse.ArgumentParser) -> None:
    """``--max-message-bytes N`` & co. (one per ``Limits`` field) and ``--limit NAME=VALUE``."""
    from .limits_text import LIMIT_FIELDS, cli_option, format_size

    g = p.add_argument_group("limits", "raise (or lower) a size cap; sizes take K, M, G suffixes")
    for field, default in _limit_fields().items():
        what, unit = LIMIT_FIELDS.get(field, (field, ""))
        g.add_argument(cli_option(field), dest=f"limit_{field}", type=_limit_value(cli_option(field)),
                       default=None, metavar="N", help=f"cap on {what} in {unit} (default {format_size(default, unit)})")
    g.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="set any Limits field, e.g. --limit max_prompt_tokens=200000 (repeatable)")


def _limits_from_args(args: argparse.Namespace):
    """The ``Limits`` the options ask for, or None when none is given (the defaults)."""
    from . import Limits

    fields = _limit_fields()
    chosen: Dict[str, int] = {}
    for item in getattr(args, "limit", None) or []:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise UsageError(f"--limit takes NAME=VALUE, got {item!r}")
        if name not in fields:
            raise UsageError(f"--limit: unknown limit {name!r} (one of {', '.join(fields)})")
        try:
            chosen[name] = _limit_value(f"--limit {name}")(value)
        except argparse.ArgumentTypeError as e:
            raise UsageError(str(e)) from None
    for name in fields:
        v = getattr(args, f"limit_{name}", None)
        if v is not None:
            chosen[name] = v
    return Limits(**chosen) if chosen else None


def _limit_error(e: Exception) -> "UsageError":
    """A LimitExceeded as a one-line error naming the option that raises the cap."""
    from .limits_text import describe

    return UsageError(describe(e, "cli"))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """The options of the commands that load a model (chat, serve)."""
    p.add_argument("--model", "-m", required=True, metavar="PATH", help="gpt-oss GGUF file")
    p.add_argument("--ctx", type=_positive_int("--ctx", 64), default=8192, metavar="N",
                   help="context size in tokens (default 8192)")
    p.add_argument("--threads", type=_positive_int("--threads"), default=None, metavar="N",
                   help="CPU threads (default: llama.cpp's choice)")
    p.add_argument("--verbose", action="store_true", help="show llama.cpp's log")


# ------------------------------------------------------------------------------------------------
# render / parse
# ------------------------------------------------------------------------------------------------

_OPENAI_TOP_KEYS = {"model", "tools", "tool_choice", "reasoning_effort", "reasoning", "temperature", "top_p",
                    "max_tokens", "max_completion_tokens", "stream", "response_format", "seed", "stop", "n",
                    "functions", "parallel_tool_calls", "stream_options"}
_HARMONY_PART_TYPES = {"system_content", "developer_content"}


def detect_format(data: Any) -> str:
    """``"harmony"`` for ``Conversation.to_dict()`` JSON, ``"openai"`` for a chat request.

    A string ``content``, ``tool_calls``/``tool_call_id``, or request keys (``tools``,
    ``model``...) mean OpenAI; ``system_content``/``developer_content`` parts or Harmony-only
    keys (``channel``, ``recipient``, ``content_type``) mean Harmony. Content given only as
    lists of text parts is read as Harmony (use ``--format openai`` to override).
    """
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise UsageError('expected a JSON object with a "messages" array')
    if set(data) & _OPENAI_TOP_KEYS:
        return "openai"
    harmony_votes = openai_votes = 0
    for m in data["messages"]:
        if not isinstance(m, dict):
            continue
        if any(k in m for k in ("tool_calls", "tool_call_id", "reasoning_content", "refusal", "function_call")):
            openai_votes += 1
        if any(k in m for k in ("channel", "recipient", "content_type", "author")):
            harmony_votes += 1
        c = m.get("content")
        if isinstance(c, str) or c is None:
            openai_votes += 1
        elif isinstance(c, list) and any(isinstance(p, dict) and p.get("type") in _HARMONY_PART_TYPES for p in c):
            harmony_votes += 1
        if m.get("role") == "tool" and "name" not in m:
            openai_votes += 1
    return "openai" if openai_votes > harmony_votes else "harmony"


def _conversation_from_json(data: Any, fmt: str, cot_policy: str = "spec", limits: Any = None):
    """(Conversation, RenderConversationConfig or None) from either input shape."""
    from . import Conversation, HarmonyError, LimitExceeded

    if fmt == "auto":
        fmt = detect_format(data)
    elif not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise UsageError('expected a JSON object with a "messages" array')
    if fmt == "harmony":
        extra = sorted(k for k in data if k != "messages")
        if extra:
            keys = ", ".join(f'"{k}"' for k in extra)
            raise UsageError(f"Harmony input is a conversation ({{\"messages\": [...]}}) and cannot use {keys}: "
                             f"put tools and the reasoning effort in its system/developer messages, or read the "
                             f"input as an OpenAI chat request with --format openai")
        try:
            return Conversation.from_dict(data), None
        except (ValueError, TypeError) as e:
            raise UsageError(f"not a valid Harmony conversation: {e}") from None
    # OpenAI chat request: converted exactly as the engine converts it.
    try:
        from . import openai_request
    except ImportError as e:
        raise UsageError(f"OpenAI-format conversion is unavailable: {e}") from None
    kwargs: Dict[str, Any] = {"cot_policy": cot_policy, "limits": limits}
    for key in ("tools", "tool_choice", "response_format", "reasoning_effort"):
        if data.get(key) is not None:
            kwargs[key] = data[key]
    if "reasoning_effort" not in kwargs and isinstance(data.get("reasoning"), dict):
        if data["reasoning"].get("effort") is not None:
            kwargs["reasoning_effort"] = data["reasoning"]["effort"]
    try:
        convo = openai_request.messages_to_conversation(data["messages"], **kwargs)
        return convo, openai_request.render_config(cot_policy)
    except LimitExceeded as e:
        raise _limit_error(e) from None
    except (ValueError, TypeError, HarmonyError) as e:
        raise UsageError(f"not a valid OpenAI chat request: {e}") from None


def cmd_render(args: argparse.Namespace, out: TextIO) -> int:
    """``render``: conversation JSON -> ``{"tokens", "text", "count"}`` on ``out``."""
    from . import HarmonyError, LimitExceeded, RenderConversationConfig, Role

    limits = _limits_from_args(args)
    data = _read_json(args.input)
    convo, config = _conversation_from_json(data, args.format, args.cot_policy, limits)
    if config is None or args.keep_analysis:
        config = RenderConversationConfig(auto_drop_analysis=not args.keep_analysis)
    enc = _load_encoding()
    try:
        if args.mode == "completion":
            tokens = enc.render_conversation_for_completion(convo, Role(args.next_role), config, limits=limits)
        elif args.mode == "training":
            tokens = enc.render_conversation_for_training(convo, config, limits=limits)
        else:
            tokens = enc.render_conversation(convo, config, limits=limits)
    except LimitExceeded as e:
        raise _limit_error(e) from None
    except HarmonyError as e:
        raise UsageError(f"cannot render: {e}") from None
    tokens = list(tokens)
    _print_json({"tokens": tokens, "text": enc.decode(tokens), "count": len(tokens)}, out, args.indent)
    return 0


def _tokens_from_json(data: Any) -> List[int]:
    """The ids of a JSON array (or of an object's ``tokens`` array): integers of any size (the
    lenient parser reads an id outside the vocabulary as U+FFFD, with a repair)."""
    if isinstance(data, dict) and "tokens" in data:
        data = data["tokens"]
    if not isinstance(data, list):
        raise UsageError('expected a JSON array of token ids (or an object with a "tokens" array)')
    for i, t in enumerate(data):
        if isinstance(t, bool) or not isinstance(t, int):
            raise UsageError(f"token #{i} is not an integer: {_json_text(t)}")
    return data


#: Repairs that are limit cuts: the option that raises the cap.
_CUT_OPTIONS = {"message_too_long": "max_parsed_message_bytes", "header_too_long": "max_header_bytes",
                "messages_evicted": "max_parsed_total_bytes"}
#: At most this many report lines (then a count of the rest).
_MAX_REPORT_LINES = 50


#: What each limit cut did, given the cap as text.
_CUT_TEXT = {"message_too_long": "its text was cut at {cap}",
             "header_too_long": "a header over {cap} became content",
             "messages_evicted": "the oldest messages were dropped to keep {cap} ({detail})"}


def _report_line(ev: Any, limits: Any) -> str:
    """One stderr line for a parser Repair or Incomplete event (``limits``: the parser's)."""
    from .limits_text import cli_option, format_size

    if ev.type == "incomplete":
        if ev.reason == "length":
            return "truncated: the stream was cut before the end of the turn"
        return "truncated: the stream ended inside a message (no <|end|>, <|return|> or <|call|>)"
    where = f"message {ev.index}" if ev.index is not None else "between messages"
    option = _CUT_OPTIONS.get(ev.kind)
    if option is not None:
        cap = format_size(getattr(limits, option), "bytes")
        what = _CUT_TEXT[ev.kind].format(cap=cap, detail=ev.detail)
        return f"limit cut ({where}): {ev.kind}: {what} (raise it with {cli_option(option)} N)"
    detail = f": {_json_text(ev.detail)}" if ev.detail else ""
    if ev.kind == "invalid_token":
        detail = f": id {ev.detail} is not in the vocabulary (read as U+FFFD)"
    return f"repair ({where}): {ev.kind}{detail}"


def _report(events: List[Any], limits: Any, err: TextIO) -> None:
    """Repairs, limit cuts and truncation on stderr: a count, then one line each."""
    notes = [e for e in events if e.type in ("repair", "incomplete")]
    if not notes:
        return
    cuts = sum(1 for e in notes if e.type == "repair" and e.kind in _CUT_OPTIONS)
    repairs = sum(1 for e in notes if e.type == "repair") - cuts
    parts = []
    if repairs:
        parts.append(f"{repairs} repair{'s' if repairs != 1 else ''}")
    if cuts:
        parts.append(f"{cuts} limit cut{'s' if cuts != 1 else ''}")
    if any(e.type == "incomplete" for e in notes):
        parts.append("truncated")
    err.write(f"{PROG} parse: {', '.join(parts)}\n")
    for e in notes[:_MAX_REPORT_LINES]:
        err.write(f"  {_report_line(e, limits)}\n")
    if len(notes) > _MAX_REPORT_LINES:
        err.write(f"  ... and {len(notes) - _MAX_REPORT_LINES} more\n")


def cmd_parse(args: argparse.Namespace, out: TextIO) -> int:
    """``parse``: token ids (or Harmony text) -> ``{"messages": [...]}`` on ``out``; lenient by
    default, with repairs, limit cuts and truncation reported on stderr."""
    from . import HarmonyError, LimitExceeded, Role, StreamableParser

    limits = _limits_from_args(args)
    enc = _load_encoding()
    if args.text:
        text = _read_input(args.input)
        try:
            tokens = enc.encode(text, allowed_special="all")
        except HarmonyError as e:
            raise UsageError(f"cannot encode the text: {e}") from None
    else:
        tokens = _tokens_from_json(_read_json(args.input))
    role = Role(args.role) if args.role else None
    if args.strict:
        for i, t in enumerate(tokens):
            if not 0 <= t < 1 << 32:
                raise UsageError(f"token #{i} = {t} is outside 0..4294967295, which the strict (reference) parser "
                                 f"cannot read; without --strict it is parsed with a repair")
        try:
            messages = enc.parse_messages_from_completion_tokens(tokens, role, strict=True, limits=limits)
        except LimitExceeded as e:
            raise _limit_error(e) from None
        except HarmonyError as e:
            raise UsageError(f"cannot parse: {e}") from None
    else:  # lenient: never an error; what was repaired, cut or truncated goes to stderr
        parser = StreamableParser(enc, role, strict=False, limits=limits)
        events = parser.feed(tokens) + parser.finish()
        messages = parser.messages
        _report(events, limits if limits is not None else enc.limits, sys.stderr)
    _print_json({"messages": [m.to_dict() for m in messages]}, out, args.indent)
    return 0


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------

RANDOM_WEIGHTS_NOTICE = (
    "The demo model is a tiny gpt-oss with RANDOM weights: whatever it writes on its own is "
    "gibberish. It shows the plumbing (Harmony rendering, real llama.cpp, parsing, "
    "OpenAI-shaped output), not a real model's answers."
)


class _ProgressBar:
    """A one-line text progress bar on a stream (redrawn in place on a TTY)."""

    def __init__(self, stream: TextIO, width: int = 30):
        self.stream = stream
        self.width = width
        self.tty = _isatty(stream)
        self._last_pct = -1

    def __call__(self, done: int, total: int, label: str) -> None:
        frac = (done / total) if total else 1.0
        pct = int(frac * 100)
        filled = int(frac * self.width)
        line = f"  [{'#' * filled}{'.' * (self.width - filled)}] {pct:3d}% {label[:32]}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width + 45))
            if done >= total:
                self.stream.write("\n")
        elif pct // 25 != self._last_pct // 25 or done >= total:
            self.stream.write(line + "\n")
        self._last_pct = pct
        self.stream.flush()


def _message_summary(m) -> Dict[str, Any]:
    return {"channel": m.channel, "recipient": m.recipient, "content_type": m.content_type, "text": m.text()}


def _response_message(resp: Dict[str, Any]) -> Dict[str, Any]:
    try:
        return resp["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return {}


def _reasoning_of(msg: Dict[str, Any]) -> str:
    return msg.get("reasoning_content") or msg.get("reasoning") or ""


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """``demo``: the offline tour on the tiny random-weight model (exit 1 if the replay differs)."""
    t0 = time.perf_counter()
    err = sys.stderr
    style = _Style(out, not args.no_color)
    human = not args.json

    def say(text: str = "") -> None:
        if human:
            out.write(text + "\n")
            out.flush()

    from . import Role, tiny_model
    from . import demo_data as d

    enc = _load_encoding()
    token_bytes = enc.token_bytes_table(tiny_model.N_VOCAB)
    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else tiny_model.default_cache_dir()
    target = cache_dir / tiny_model.tiny_model_filename(token_bytes)
    built = not (target.is_file() and target.stat().st_size > 0)
    if built:
        err.write(f"Building the tiny random-weight gpt-oss model once (about 55 MB) into {cache_dir}\n")
        err.flush()
    tb = time.perf_counter()
    try:
        model_path = tiny_model.ensure_tiny_model(token_bytes, cache_dir=cache_dir, progress=_ProgressBar(err))
    except ImportError as e:
        raise UsageError(f"building the demo model needs numpy and gguf ({e}): pip install 'llama-harmony[llama]'") \
            from None
    except OSError as e:
        raise UsageError(f"cannot write the demo model into {cache_dir}: {e.strerror or e}") from None
    build_s = time.perf_counter() - tb

    say(style.bold(f"llama-harmony {_version()} demo"))
    say(f"Model: {model_path}" + (f" (built in {build_s:.1f} s)" if built else " (cached)"))
    say(style.yellow("NOTE: " + RANDOM_WEIGHTS_NOTICE))
    say()

    # 1. Rendering ---------------------------------------------------------------------------
    from . import openai_request

    # Exactly the prompt the engine renders for turn 1 (OpenAI messages + tools -> Harmony).
    prompt_ids = list(openai_request.render_prompt(enc, d.openai_messages_turn1(), tools=d.TOOLS))
    prompt_text = enc.decode(prompt_ids)
    say(style.cyan(style.bold(f"1. A conversation with a get_weather tool, rendered as a Harmony prompt "
                              f"({len(prompt_ids)} tokens)")))
    say(style.dim("-" * 72))
    say(prompt_text)
    say(style.dim("-" * 72))
    say()

    # 2. One free-running turn through llama.cpp -------------------------------------------------
    # One thread: the model is tiny, and on a busy machine llama.cpp's threads spin-wait on
    # each other (measured: 2 threads on a loaded 2-core box made a turn 10x slower).
    engine = _load_engine(str(model_path), n_ctx=2048, n_threads=1, seed=0)
    free_max = 16
    free = engine.create_chat_completion(d.openai_messages_turn1(), tools=d.TOOLS, max_tokens=free_max,
                                         temperature=1.0, seed=0, model="tiny-gpt-oss")
    fmsg = _response_message(free)
    say(style.cyan(style.bold(f"2. One chat turn sampled freely by llama.cpp (max_tokens={free_max}; "
                              "random weights, so expect gibberish)")))
    say("  reasoning : " + style.dim(repr(_reasoning_of(fmsg))))
    say("  content   : " + repr(fmsg.get("content")))
    say("  tool_calls: " + json.dumps(fmsg.get("tool_calls"), ensure_ascii=False))
    fchoice = (free.get("choices") or [{}])[0]
    say(f"  finish_reason: {fchoice.get('finish_reason')}   usage: {json.dumps(free.get('usage'))}")
    say()

    # 3. Replay of a recorded gpt-oss exchange ------------------------------------------------------
    from llama_cpp import LogitsProcessorList

    say(style.cyan(style.bold("3. Replaying a recorded gpt-oss exchange: its tokens forced through llama.cpp, "
                              "then parsed")))
    turns: List[Dict[str, Any]] = []
    tool_call_id = d.TOOL_CALL_ID
    arguments = d.EXPECTED_TOOL_ARGUMENTS
    for n, text in ((1, d.TURN1_COMPLETION), (2, d.TURN2_COMPLETION)):
        ids = enc.encode(text, allowed_special="all")
        parsed = enc.parse_messages_from_completion_tokens(ids, Role.ASSISTANT, strict=False)
        if n == 1:
            messages = d.openai_messages_turn1()
        else:
            messages = d.openai_messages_turn2(tool_call_id=tool_call_id, arguments=arguments,
                                               reasoning=turns[0]["reasoning"])
        forced = tiny_model.ForcedTokens(ids)
        resp = engine.create_chat_completion(messages, tools=d.TOOLS, max_tokens=len(ids) + 8, temperature=1.0,
                                             seed=0, logits_processor=LogitsProcessorList([forced]),
                                             model="tiny-gpt-oss")
        msg = _response_message(resp)
        calls = [{"id": c.get("id"), "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                 for c in (msg.get("tool_calls") or [])]
        if calls:
            tool_call_id, arguments = calls[0]["id"] or tool_call_id, calls[0]["arguments"]
        turn: Dict[str, Any] = {
            "turn": n,
            "completion_text": text,
            "token_count": len(ids),
            "forced_tokens": forced.position,
            "parsed": [_message_summary(m) for m in parsed],
            "reasoning": _reasoning_of(msg),
            "content": msg.get("content"),
            "tool_calls": calls,
            "finish_reason": ((resp.get("choices") or [{}])[0]).get("finish_reason"),
            "response": resp,
        }
        turns.append(turn)

        say(style.bold(f"  Turn {n}: {len(ids)} recorded tokens forced through llama.cpp"))
        say(style.dim("    stream: " + text))
        say("    parser (Harmony messages):")
        for m in turn["parsed"]:
            head = m["channel"] or "?"
            if m["recipient"]:
                head += f" to={m['recipient']}"
            if m["content_type"]:
                head += f" {m['content_type']}"
            say(f"      [{head}] " + m["text"])
        say("    engine (OpenAI fields):")
        if turn["reasoning"]:
            say("      analysis  : " + style.dim(turn["reasoning"]))
        for c in calls:
            say("      tool call : " + style.yellow(f"{c['name']}({c['arguments']})"))
        if turn["content"]:
            say("      final     : " + style.green(turn["content"]))
        say(f"      finish_reason: {turn['finish_reason']}")
        if n == 1:
            say(f"  Tool result sent back: {d.TOOL_RESULT}")
        say()

    analysis = [t["reasoning"] for t in turns]
    tool_calls = turns[0]["tool_calls"]
    final = turns[1]["content"]
    matches = (analysis == [d.EXPECTED_TURN1_ANALYSIS, d.EXPECTED_TURN2_ANALYSIS]
               and [(c["name"], c["arguments"]) for c in tool_calls] == [(d.EXPECTED_TOOL_NAME,
                                                                         d.EXPECTED_TOOL_ARGUMENTS)]
               and final == d.EXPECTED_FINAL)
    say(style.bold("  OpenAI-shaped responses:"))
    for t in turns:
        say(f"  turn {t['turn']}:")
        say(_indent(json.dumps(t["response"], ensure_ascii=False, indent=2), "    "))
    verdict = "yes" if matches else "NO (see above)"
    say()
    say(f"Replay recovered the recorded analysis, tool call and final answer: "
        f"{style.green(verdict) if matches else style.red(verdict)}")
    elapsed = time.perf_counter() - t0
    say(style.dim(f"Done in {elapsed:.1f} s."))

    if args.json:
        _print_json({
            "version": _version(),
            "notice": RANDOM_WEIGHTS_NOTICE,
            "model": {"path": str(model_path), "random_weights": True, "built": built,
                      "build_seconds": round(build_s, 3) if built else 0.0},
            "prompt": {"text": prompt_text, "count": len(prompt_ids), "tokens": prompt_ids},
            "free_run": {"max_tokens": free_max, "response": free},
            "replay": {
                "turns": turns,
                "analysis": analysis,
                "tool_calls": tool_calls,
                "tool_result": d.TOOL_RESULT,
                "final": final,
                "matches_recording": matches,
            },
            "seconds": round(elapsed, 3),
        }, out, indent=2)
    return 0 if matches else 1


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


# ------------------------------------------------------------------------------------------------
# chat
# ------------------------------------------------------------------------------------------------

CHAT_HELP = """Commands:
  /effort low|medium|high   set the reasoning effort (no argument: show it)
  /reset                    forget the conversation (keeps --system)
  /help                     this help
  /quit                     leave (also Ctrl-D)
Anything else is sent as your message. Ctrl-C stops a reply. When the model calls a tool,
type the tool's result (one line) when asked."""


class _ChatSession:
    def __init__(self, engine, args: argparse.Namespace, out: TextIO, inp: TextIO):
        self.engine = engine
        self.args = args
        self.out = out
        self.inp = inp
        self.style = _Style(out, not args.no_color)
        self.interactive = _isatty(inp) and _isatty(out)
        self.effort: Optional[str] = args.reasoning_effort
        self.tools = self._load_tools(args.tools)
        self.history: List[Dict[str, Any]] = []
        self.reset()

    @staticmethod
    def _load_tools(path: Optional[str]) -> Optional[List[Dict[str, Any]]]:
        if not path:
            return None
        data = _read_json(path)
        if isinstance(data, dict) and "tools" in data:
            data = data["tools"]
        if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
            raise UsageError(f"{path}: expected a JSON array of OpenAI tools")
        from .openai_request import OpenAIFormatError, tool_schemas

        try:
            tool_schemas(data)  # the structure the engine needs, checked once here
        except OpenAIFormatError as e:
            raise UsageError(f"{path}: {e}") from None
        return data

    def reset(self) -> None:
        self.history = []
        if self.args.system:
            self.history.append({"role": "system", "content": self.args.system})

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def readline(self, prompt: str) -> Optional[str]:
        if self.interactive:
            try:
                return input(prompt)
            except EOFError:
                return None
        line = self.inp.readline()
        if not line:
            return None
        return line.rstrip("\r\n")

    def command(self, line: str) -> bool:
        """Handle a /command; False means quit."""
        parts = line.split()
        cmd, rest = parts[0].lower(), parts[1:]
        if cmd in ("/quit", "/exit", "/q"):
            return False
        if cmd == "/help":
            self.write(CHAT_HELP + "\n")
        elif cmd == "/reset":
            self.reset()
            self.write(self.style.dim("(conversation cleared)") + "\n")
        elif cmd == "/effort":
            if not rest:
                self.write(f"reasoning effort: {self.effort or 'model default'}\n")
            elif rest[0].lower() in _EFFORTS and len(rest) == 1:
                self.effort = rest[0].lower()
                self.write(self.style.dim(f"(reasoning effort: {self.effort})") + "\n")
            else:
                self.write("usage: /effort low|medium|high\n")
        else:
            self.write(f"unknown command {cmd}; /help lists them\n")
        return True

    def turn(self) -> None:
        """Generate until the model stops calling tools (at most 8 rounds)."""
        for _ in range(8):
            msg = self._generate()
            if msg is None:
                return
            self.history.append(msg)
            calls = msg.get("tool_calls") or []
            if not calls:
                return
            for c in calls:
                fn = c.get("function", {})
                result = self.readline(self.style.yellow(f"result of {fn.get('name')}> ") if self.interactive
                                       else "")
                if result is None:
                    return
                self.history.append({"role": "tool", "tool_call_id": c.get("id"), "content": result})

    def _generate(self) -> Optional[Dict[str, Any]]:
        a = self.args
        kwargs: Dict[str, Any] = {"stream": True, "max_tokens": a.max_tokens, "temperature": a.temperature,
                                  "reasoning_effort": self.effort}
        if self.tools:
            kwargs["tools"] = self.tools
        reasoning: List[str] = []
        content: List[str] = []
        calls: Dict[int, Dict[str, Any]] = {}
        state = None  # "reasoning" | "content"
        finish = None
        stream = None
        try:
            stream = self.engine.create_chat_completion(self.history, **kwargs)
            for chunk in stream:
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    r = delta.get("reasoning_content") or delta.get("reasoning")
                    if r:
                        if state != "reasoning":
                            self.write(self.style.dim("[reasoning] "))
                            state = "reasoning"
                        reasoning.append(r)
                        self.write(self.style.dim(r))
                    c = delta.get("content")
                    if c:
                        if state == "reasoning":
                            self.write("\n")
                        state = "content"
                        content.append(c)
                        self.write(c)
                    for tc in delta.get("tool_calls") or []:
                        slot = calls.setdefault(tc.get("index", len(calls)),
                                                {"id": None, "type": "function",
                                                 "function": {"name": "", "arguments": ""}})
                        if tc.get("id"):
                            slot["id"] = tc["id"]
                        fn = tc.get("function") or {}
                        if fn.get("name"):
                            slot["function"]["name"] += fn["name"]
                        if fn.get("arguments"):
                            slot["function"]["arguments"] += fn["arguments"]
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except KeyboardInterrupt:
            self.write(self.style.dim("\n(stopped)"))
            finish = "interrupted"
        except Exception as e:  # noqa: BLE001 - report and keep the session alive
            name = type(e).__name__
            if isinstance(e, ValueError):  # ContextOverflowError, OpenAIFormatError, LimitExceeded...
                self.write(self.style.red(f"\nerror: {self._error_text(e)}") + "\n")
                if self.history and self.history[-1].get("role") == "user":
                    self.history.pop()
                return None
            raise UsageError(f"generation failed: {name}: {e}") from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if state is not None:
            self.write("\n")
        for idx in sorted(calls):
            c = calls[idx]
            self.write(self.style.yellow(f"[tool call] {c['function']['name']}({c['function']['arguments']})") + "\n")
        if finish == "length":
            self.write(self.style.dim(f"(stopped at --max-tokens {a.max_tokens})") + "\n")
        msg: Dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
        if calls:
            msg["tool_calls"] = [calls[i] for i in sorted(calls)]
            for i, c in enumerate(msg["tool_calls"]):
                c["id"] = c["id"] or f"call_{len(self.history)}_{i}"
            if reasoning:
                msg["reasoning_content"] = "".join(reasoning)
        if msg["content"] is None and not calls:
            msg["content"] = ""
        return msg

    def _error_text(self, e: Exception) -> str:
        """An engine error in the chat's terms (the context is ``--ctx``)."""
        prompt_tokens, n_ctx = getattr(e, "prompt_tokens", None), getattr(e, "n_ctx", None)
        if type(e).__name__ == "ContextOverflowError" and isinstance(prompt_tokens, int) and isinstance(n_ctx, int):
            bigger = max(n_ctx * 2, 1 << (prompt_tokens + self.args.max_tokens).bit_length())
            return (f"the conversation is {prompt_tokens:,} tokens but the context is {n_ctx:,} tokens (--ctx): "
                    f"/reset to start over, or restart the chat with a larger --ctx (e.g. --ctx {bigger})")
        return str(e)

    def run(self) -> int:
        if self.interactive:
            self.write(self.style.bold(f"llama-harmony chat ({Path(self.args.model).name})") +
                       self.style.dim("  /help for commands, /quit to leave") + "\n")
        while True:
            try:
                line = self.readline(self.style.green("> ") if self.interactive else "")
            except KeyboardInterrupt:
                self.write("\n")
                continue
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    break
                continue
            self.history.append({"role": "user", "content": line})
            self.turn()
        if self.interactive:
            self.write("\n")
        return 0


def cmd_chat(args: argparse.Namespace, out: TextIO) -> int:
    """``chat``: checks the model path and the tools file, loads the model, runs the REPL."""
    _check_model_path(args.model)
    session_tools = _ChatSession._load_tools(args.tools)  # validate before the slow model load
    del session_tools
    engine = _load_engine(args.model, n_ctx=args.ctx, n_threads=args.threads, seed=args.seed, verbose=args.verbose)
    return _ChatSession(engine, args, out, sys.stdin).run()


# ------------------------------------------------------------------------------------------------
# Argument parsing and main
# ------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = _Parser(prog=PROG, description="Run OpenAI's gpt-oss models with exact Harmony rendering and parsing "
                                       "on llama.cpp.",
                epilog="Run '%(prog)s COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="offline tour on a tiny random-weight gpt-oss model (no download)",
                       description="Build a tiny random-weight gpt-oss GGUF once (cached), render a conversation "
                                   "with a tool, run one chat turn through llama.cpp, and replay a recorded gpt-oss "
                                   "exchange (analysis, tool call, final answer) through llama.cpp and the parser. "
                                   "The model's weights are random, so its own text is gibberish.")
    d.add_argument("--cache-dir", metavar="DIR",
                   help="where the tiny model is built and cached (default: $LLAMA_HARMONY_CACHE, "
                        "else ~/.cache/llama-harmony)")
    d.add_argument("--no-color", action="store_true", help="plain output without ANSI colors")
    d.add_argument("--json", action="store_true", help="print one machine-readable JSON object instead")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("chat", help="interactive chat with a gpt-oss GGUF model",
                       description="Chat with a gpt-oss model in the terminal. Replies stream; reasoning is shown "
                                   "dimmed; tool calls are shown and their results asked for. "
                                   "Commands: /effort low|medium|high, /reset, /help, /quit.")
    _add_model_args(c)
    c.add_argument("--temperature", type=_float_range("--temperature", 0.0, 2.0), default=1.0, metavar="T",
                   help="sampling temperature (default 1.0, as recommended for gpt-oss)")
    c.add_argument("--max-tokens", type=_positive_int("--max-tokens"), default=2048, metavar="N",
                   help="most tokens per reply (default 2048)")
    c.add_argument("--reasoning-effort", choices=_EFFORTS, default=None,
                   help="reasoning effort (default: the model's, medium)")
    c.add_argument("--system", metavar="TEXT", help="instructions for the model (a system message)")
    c.add_argument("--tools", metavar="FILE", help="JSON array of OpenAI function tools to offer")
    c.add_argument("--seed", type=int, default=None, help="sampling seed")
    c.add_argument("--no-color", action="store_true", help="no ANSI colors (also off when not a terminal)")
    c.set_defaults(func=cmd_chat)

    serve_cli.add_serve_parser(sub, _positive_int, _float_range)

    r = sub.add_parser("render", help="render a conversation JSON to Harmony tokens",
                       description="Render a conversation to Harmony prompt tokens. Input: Conversation.to_dict() "
                                   'JSON ({"messages":[{"role":..,"content":[...]}]}) or an OpenAI chat request '
                                   '({"messages":[{"role":"user","content":"hi"}],"tools":[...]}), detected by '
                                   'shape. Prints {"tokens": [...], "text": "...", "count": N}.')
    r.add_argument("input", nargs="?", default="-", help="JSON file, or - for stdin (default)")
    r.add_argument("--mode", choices=("completion", "conversation", "training"), default="completion",
                   help="completion: open the next assistant turn (default); conversation: just the messages; "
                        "training: last final answer ends with <|return|>")
    r.add_argument("--format", choices=("auto", "harmony", "openai"), default="auto",
                   help="input format (default: detect)")
    r.add_argument("--next-role", choices=_ROLES, default="assistant",
                   help="role of the turn opened in completion mode (default assistant)")
    r.add_argument("--keep-analysis", action="store_true",
                   help="keep every earlier analysis message (default: Harmony input drops them as the "
                        "reference does; OpenAI input follows --cot-policy)")
    r.add_argument("--cot-policy", choices=("spec", "reference", "keep"), default="spec",
                   help="OpenAI input: which earlier reasoning to keep, as the engine does (default spec: drop "
                        "the reasoning of completed turns, keep the turn in progress)")
    r.add_argument("--indent", type=int, default=None, metavar="N", help="pretty-print the JSON")
    _add_limit_args(r)
    r.set_defaults(func=cmd_render)

    q = sub.add_parser("parse", help="parse sampled token ids into Harmony messages",
                       description="Parse token ids (a JSON array, or render's output object) into messages. "
                                   'Prints {"messages": [...]} (Conversation.to_dict() format). Lenient by default: '
                                   "malformed output (ids outside the vocabulary included) is recovered, never an "
                                   "error; each repair, limit cut and truncation is reported on stderr.")
    q.add_argument("input", nargs="?", default="-", help="JSON file, or - for stdin (default)")
    q.add_argument("--role", choices=_ROLES, default=None,
                   help="role of the first message when the ids start after <|start|>ROLE (e.g. assistant)")
    q.add_argument("--strict", action="store_true", help="fail on malformed output (the reference's behaviour)")
    q.add_argument("--text", action="store_true", help="input is Harmony text with markup, not token ids")
    q.add_argument("--indent", type=int, default=None, metavar="N", help="pretty-print the JSON")
    _add_limit_args(q)
    q.set_defaults(func=cmd_parse)
    return p


def main(argv: Optional[Sequence[str]] = None, *, stdout: Optional[TextIO] = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to ``sys.exit``)."""
    out = stdout if stdout is not None else sys.stdout
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help(out)
            return 2
        return int(args.func(args, out) or 0)
    except UsageError as e:
        msg = str(e)
        if not msg.startswith(PROG):
            msg = f"{PROG}: error: {msg}"
        sys.stderr.write(msg + "\n")
        return 2
    except SystemExit as e:  # --help / --version
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    # Run the importable module's main (not this __main__ copy), so the error classes that other
    # modules import from llama_harmony.cli are the ones main() catches.
    from llama_harmony.cli import main as _main

    sys.exit(_main())
