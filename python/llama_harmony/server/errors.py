"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

:class:`ApiError` is raised by the server's own code; :func:`from_exception` maps what the
engine raises (400 for what the client can fix, 503 when the model cannot serve, 500 for the
rest); :func:`validation_error` turns pydantic's errors into one 400 naming the field as a
client wrote it (``messages[0].role``).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

__all__ = ["ApiError", "from_exception", "validation_error", "field_path"]

log = logging.getLogger("llama_harmony.server")


class ApiError(Exception):
    """An error answered to the client as OpenAI-shaped JSON."""

    def __init__(self, status: int, message: str, *, type: Optional[str] = None, param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[Mapping[str, str]] = None):
        """Set up the ApiError (the parameters are described in the class docstring)."""
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.type = type or ("invalid_request_error" if self.status < 500 else "server_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> Dict[str, Any]:
        """The OpenAI-shaped error body ``{"error": {...}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def json_bytes(self) -> bytes:
        """The body as UTF-8 JSON."""
        return json.dumps(self.body(), ensure_ascii=False).encode("utf-8")


def _limits_message(exc: BaseException) -> str:
    """A limit error in an HTTP client's terms (no advice about Python settings)."""
    try:
        from .. import limits_text  # provided by the package when available

        return limits_text.describe(exc, audience="http")
    except Exception:
        limit = getattr(exc, "limit", None)
        cap, actual = getattr(exc, "cap", None), getattr(exc, "actual", None)
        if limit and cap is not None and actual is not None:
            return f"the request is too large: {limit} is {actual}, the server allows at most {cap}"
        return str(exc)


def from_exception(exc: BaseException) -> ApiError:
    """The :class:`ApiError` for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    from .. import HarmonyError, LimitExceeded
    from ..engine import ContextOverflowError
    from ..openai_request import OpenAIFormatError
    from ..replay import ReplayExhausted

    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, LimitExceeded):
        return ApiError(400, _limits_message(exc), param=None, code="limit_exceeded")
    if isinstance(exc, OpenAIFormatError):
        return ApiError(400, str(exc), param=getattr(exc, "param", None) or "messages", code="invalid_messages")
    if isinstance(exc, ReplayExhausted):
        return ApiError(503, str(exc), code="replay_exhausted")
    if isinstance(exc, HarmonyError):
        return ApiError(400, str(exc), param="messages", code="harmony_error")
    upstream = _upstream_error(exc)
    if upstream is not None:
        return upstream
    log.error("unexpected error while serving a request", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error")


def _upstream_error(exc: BaseException) -> Optional[ApiError]:
    """Errors of the llama-server gateway (:mod:`llama_harmony.upstream`), if it is in use."""
    import sys

    mod = sys.modules.get("llama_harmony.upstream")
    if mod is None:
        return None
    unavailable = getattr(mod, "UpstreamUnavailable", None)
    if unavailable is not None and isinstance(exc, unavailable):
        return ApiError(503, str(exc), code="upstream_unavailable", headers={"Retry-After": "1"})
    base = getattr(mod, "UpstreamError", None)
    if base is not None and isinstance(exc, base):
        return ApiError(502, str(exc), code="upstream_error")
    return None


# -------------------------------------------------------------------------------------------------
# pydantic errors -> one 400 naming the field
# -------------------------------------------------------------------------------------------------

_TAG = re.compile(r"^(str|int|float|bool|list|dict|none|literal|function-.*|.*\[.*\]|[A-Z]\w*)$")


def field_path(loc: Sequence[Any]) -> str:
    """``("body", "messages", 0, "content", "str")`` -> ``"messages[0].content"`` (the request
    body prefix and pydantic's union-member tags dropped)."""
    out = ""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and _TAG.match(p):
            continue
        else:
            out += f".{p}" if out else str(p)
    return out


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_error(errors: Iterable[Mapping[str, Any]]) -> ApiError:
    """One 400 for pydantic's errors: the first failing field, named as the client wrote it."""
    errors = list(errors)
    if not errors:
        return ApiError(400, "invalid request", code="invalid_request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        return ApiError(400, f"the request body is not valid JSON: {detail}", code="invalid_json")
    path = field_path(first.get("loc", ()))
    same = [e for e in errors if field_path(e.get("loc", ())) == path]
    kind = first.get("type", "")
    if kind == "missing":
        return ApiError(400, f"'{path}' is required", param=path or None, code="missing_required_parameter")
    if not path:
        return ApiError(400, "the request body must be a JSON object", code="invalid_json")
    got = f" (got {_short(first['input'])})" if "input" in first else ""
    if len(same) > 1:  # a union: say what each branch wanted
        wanted = "; or ".join(sorted({_clean(e.get("msg", "")) for e in same}))
        return ApiError(400, f"'{path}' is invalid{got}: {wanted}", param=path, code="invalid_value")
    return ApiError(400, f"'{path}': {_clean(first.get('msg', 'invalid value'))}{got}", param=path,
                    code="invalid_value")


def _clean(msg: str) -> str:
    msg = str(msg)
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg[:1].lower() + msg[1:] if msg else msg


def errors_of(exc: Any) -> List[Mapping[str, Any]]:
    """The error list of a FastAPI ``RequestValidationError`` or a pydantic ``ValidationError``."""
    errs = exc.errors() if callable(getattr(exc, "errors", None)) else []
    return list(errs)
