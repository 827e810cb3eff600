"""Request bodies: read within a limit, decode as typed JSON, and say exactly what is wrong.

A body is never read whole before its size is known to be acceptable: a ``Content-Length`` over the
limit is answered 413 before a byte of the body is read, and a chunked body (no length) is counted while
it streams in and refused the moment it passes the limit — so five 100 MB uploads at once cost the server
nothing but their headers.
"""

from __future__ import annotations

import re
from typing import Final, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from turnstile.adapters.errors import ApiError

__all__ = ["decode_json", "read_body"]

T = TypeVar("T")

# A UTF-16 surrogate escape not part of a pair: JSON allows the escape, UTF-8 cannot encode the result.
_LONE_SURROGATE: Final = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


async def read_body(request: Request, limit: int, *, what: str, code: str = "body_too_large") -> bytes:
    """The request body, at most ``limit`` bytes; :class:`ApiError` 413 ``code`` past it, 400 when the
    client vanished mid-body."""
    declared = request.headers.get("content-length")
    if declared is not None:
        text = declared.strip()
        if not (text.isascii() and text.isdigit()):
            raise ApiError(400, "invalid_content_length", f"Content-Length {declared!r} is not a number")
        if int(text) > limit:
            raise ApiError(413, code, _too_large(what, f"{int(text)} bytes", limit))
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, code, _too_large(what, f"more than {limit} bytes", limit))
            parts.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "incomplete_body", "the client went away before sending the whole body") from None
    return b"".join(parts)


def _too_large(what: str, size: str, limit: int) -> str:
    return f"the {what} request body is {size}; the limit is {limit} bytes"


def decode_json(body: bytes, typ: type[T]) -> T:
    """``body`` as JSON of type ``typ``; :class:`ApiError` 400 with a precise reason otherwise."""
    if not body.strip():
        raise ApiError(400, "missing_body", "a JSON body is required")
    try:
        return msgspec.json.decode(body, type=typ)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", f"invalid request body: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {_explain(body, exc)}") from None


def _explain(body: bytes, exc: Exception) -> str:
    """msgspec's message, or a clearer one for the cases it words confusingly."""
    found = _LONE_SURROGATE.search(body)
    if found is not None:
        escape = found.group().decode()
        return (
            f"it contains {escape!r} at byte {found.start()}, half of a UTF-16 surrogate pair, which is not "
            "a character; send the text as UTF-8, or both halves of the pair"
        )
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"it is not UTF-8 (byte {bad.start}: {body[bad.start : bad.start + 1]!r})"
    return str(exc)
