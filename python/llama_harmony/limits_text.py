"""Size-limit errors in the caller's terms.

A :class:`~llama_harmony.LimitExceeded` carries ``limit`` (what was measured, e.g.
``"message bytes"``), ``cap`` and ``actual``. :func:`describe` turns it into one sentence for
the audience that has to act on it:

* ``"python"``: names the :class:`~llama_harmony.Limits` field that raises the cap
  (``Limits(max_message_bytes=...)``);
* ``"cli"``: names the command-line option (``--max-message-bytes N`` or
  ``--limit max_message_bytes=N``);
* ``"http"``: says what was too big and the server's cap, nothing about how to change it (an
  HTTP client cannot).

Sizes are given with their unit (``52.0 MiB (54,525,952 bytes)``, ``140,000 tokens``).

    >>> from llama_harmony import LimitExceeded
    >>> e = LimitExceeded("...")
    >>> e.limit, e.cap, e.actual = "message bytes", 8 << 20, 52 << 20
    >>> describe(e, "http")
    'a message is 52.0 MiB (54,525,952 bytes), over the limit of 8.0 MiB (8,388,608 bytes)'
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

__all__ = ["AUDIENCES", "LIMIT_FIELDS", "describe", "field_of", "format_size", "cli_option"]

AUDIENCES = ("python", "cli", "http")

#: ``Limits`` field -> (what it measures, in a sentence; unit).
LIMIT_FIELDS: Dict[str, Tuple[str, str]] = {
    "max_prompt_tokens": ("the rendered prompt", "tokens"),
    "max_message_bytes": ("a message", "bytes"),
    "max_conversation_bytes": ("the conversation", "bytes"),
    "max_messages": ("the conversation", "messages"),
    "max_schema_depth": ("a tool's JSON Schema", "levels of nesting"),
    "max_header_bytes": ("a message header", "bytes"),
    "max_parsed_message_bytes": ("a parsed message", "bytes"),
    "max_parsed_total_bytes": ("the parsed messages", "bytes"),
}

# the `limit` names the Rust core and the Python layer give -> Limits field
_BY_NAME = {
    "prompt tokens": "max_prompt_tokens",
    "message bytes": "max_message_bytes",
    "conversation bytes": "max_conversation_bytes",
    "messages": "max_messages",
    "JSON Schema depth": "max_schema_depth",
    "header bytes": "max_header_bytes",
    "parsed message bytes": "max_parsed_message_bytes",
    "parsed total bytes": "max_parsed_total_bytes",
}


def field_of(limit: str) -> str:
    """The :class:`~llama_harmony.Limits` field behind a ``LimitExceeded.limit`` name. A text
    field checked on its own (``"message text"``, ``"tool description"``...) is capped by
    ``max_message_bytes``."""
    if limit in LIMIT_FIELDS:
        return limit
    return _BY_NAME.get(limit, "max_message_bytes")


def cli_option(field: str) -> str:
    """The command-line option of a ``Limits`` field: ``max_message_bytes`` ->
    ``--max-message-bytes``."""
    return "--" + field.replace("_", "-")


def format_size(n: int, unit: str) -> str:
    """``n`` with its unit: bytes as KiB/MiB/GiB with the exact count (``8.0 MiB (8,388,608
    bytes)``), other units as a grouped count (``140,000 tokens``)."""
    if unit != "bytes":
        return f"{n:,} {unit}"
    if n < 1024:
        return f"{n:,} bytes"
    value = float(n)
    for suffix in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or suffix == "TiB":
            return f"{value:.1f} {suffix} ({n:,} bytes)"
    raise AssertionError("unreachable")


def describe(exc: Any, audience: str = "python") -> str:
    """One sentence saying what was too big, by how much, and (except for ``"http"``) how to
    raise the cap: the ``Limits`` field for ``"python"``, the option for ``"cli"``.

    ``exc``: a :class:`~llama_harmony.LimitExceeded` (anything with ``limit``, ``cap`` and
    ``actual`` attributes); without them its own text is returned."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, not {audience!r}")
    limit, cap, actual = (getattr(exc, a, None) for a in ("limit", "cap", "actual"))
    if not isinstance(limit, str) or not isinstance(cap, int) or not isinstance(actual, int):
        return str(exc)
    field = field_of(limit)
    subject, unit = LIMIT_FIELDS[field]
    if limit not in _BY_NAME and limit not in LIMIT_FIELDS:
        subject = limit  # a single text field: "message text", "tool description", ...
    text = f"{subject} is {format_size(actual, unit)}, over the limit of {format_size(cap, unit)}"
    if audience == "http":
        return text
    if audience == "cli":
        return f"{text}: raise it with {cli_option(field)} N (or --limit {field}=N)"
    return f"{text}: raise it with Limits({field}=...) (Limits.unlimited() turns every cap off)"
