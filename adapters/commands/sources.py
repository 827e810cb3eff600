"""Where ``turnstile replay`` and ``turnstile log export`` read a log from: a file, or a session in Redis.

A Redis session is named by a URL, ``redis://HOST:PORT/DB/SESSION`` (``rediss://`` for TLS); its stream is
read page by page (``XRANGE``) and handed on as NDJSON lines — the same bytes a file log holds, so
everything downstream (the reader, the replay, the export) is the code that reads files.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import IO, Final

from turnstile.engine.errors import ConfigError, LogError, LogInputError

__all__ = ["DEFAULT_PREFIX", "is_redis_url", "read_source"]

DEFAULT_PREFIX: Final = "turnstile"
_CHUNK: Final = 1 << 20
_PAGE: Final = 2048


def is_redis_url(source: str) -> bool:
    """Whether ``source`` names a session in Redis rather than a file."""
    return source.startswith(("redis://", "rediss://"))


def read_source(source: str, *, prefix: str | None = None) -> tuple[Generator[bytes, None, None], int | None]:
    """The log's bytes in chunks, and its size when known (a file). Raises :class:`LogInputError`.

    Close the generator when done with it (the file is open until then).
    """
    if is_redis_url(source):
        prefix = prefix or os.environ.get("TURNSTILE_REDIS_PREFIX") or DEFAULT_PREFIX
        return _each(_fetch_redis(source, prefix)), None
    path = Path(source)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise LogInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _chunks(handle), size


def _each(pages: list[bytes]) -> Generator[bytes, None, None]:
    yield from pages


def _chunks(handle: IO[bytes]) -> Generator[bytes, None, None]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _fetch_redis(url: str, prefix: str) -> list[bytes]:
    """Every entry of the session's stream as NDJSON chunks (one per page)."""
    from turnstile.engine.stores.redis import HAVE_COREDIS, RedisRepository, RedisSettings, split_session_url

    try:
        base, sid = split_session_url(url)
    except ConfigError as exc:
        raise LogInputError(str(exc)) from None
    if not HAVE_COREDIS:
        raise LogInputError("reading from Redis needs the coredis package: pip install 'turnstile[redis]'")

    repo = RedisRepository(RedisSettings(url=base, node="reader", prefix=prefix))

    async def fetch() -> list[bytes] | str:
        # Errors are returned, not raised: raised inside the client's task group they would come out
        # wrapped in an exception group.
        async with repo.connected():
            try:
                store = await repo.open(sid)
                pages: list[bytes] = []
                after = 0
                while True:
                    records = await store.read_async(after, _PAGE)
                    if not records:
                        break
                    pages.append(b"".join(r.data + b"\n" for r in records))
                    after = records[-1].entry.seq
                if not pages and store.last_seq == 0 and await repo.owner(sid) is None:
                    return f"{url}: no session {sid!r} in {repo.description} (key prefix {prefix!r})"
            except LogError as exc:
                return f"cannot read {url}: {exc}"
            return pages

    import trio

    got = trio.run(fetch)
    if isinstance(got, str):
        raise LogInputError(got)
    return got
