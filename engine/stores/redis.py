"""Session logs on Redis Streams, shared by several servers (``turnstile serve --redis-url``).

Layout (``<p>`` is the key prefix, ``turnstile`` by default; every key of a session carries the ``{<id>}``
hash tag, so a session's keys live in one Redis Cluster slot and one script can touch them all)::

    <p>:sessions            ZSET    session id -> creation time (the session index every node lists)
    <p>:{<id>}:log          STREAM  one entry per log entry: fields seq=<seq>, e=<the entry's JSON>
    <p>:{<id>}:meta         HASH    seq (last written), ms (its entry id's time), created (session.created)
    <p>:{<id>}:owner        STRING  the node that runs the session (a lease with renewal in phase 2)

Entries are the file log's bytes (:class:`engine.log.Record`, msgspec JSON), so a stream exported as
NDJSON *is* a file log. A stream entry's id is ``<ms>-<seq>``: the Turnstile seq is the id's sequence
part (and the ``seq`` field), ``ms`` the Redis server's clock when the batch was written (never going
back), so ``MINID`` trimming by age works and ``Last-Event-ID`` (a seq) means the same on every node:
a reader maps a seq to its id (:meth:`RedisLogStore.read_async`).

Writes go through one Lua script per batch (:data:`APPEND_SCRIPT`): it checks that the batch continues
the log (the ``seq`` in the meta hash), adds every entry, and moves the meta on — atomically. A batch sent
again after a lost answer is recognised and not written twice; a log that Redis lost (restarted without
persistence) or that another writer moved on is refused with :class:`engine.errors.LogError`, never
papered over with a gap.

Trimming (``--redis-trim``): ``maxlen:N`` (default 100000) keeps about the last N entries of each session
(``XADD MAXLEN ~``); ``age:SECONDS`` drops entries older than that (``XADD MINID ~``) and lets a stopped
session's keys expire after it; ``none`` keeps everything. Trimmed history cannot be replayed.

This module does I/O with coredis (anyio; it runs natively under trio) and never imports trio.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from turnstile.engine.errors import ConfigError, LogCorrupted, LogDiverged, LogError
from turnstile.engine.log import Record, SessionStopped, decode_entry
from turnstile.engine.stores import AsyncLogStore
from turnstile.engine.stores.file import validate_session_id
from turnstile.engine.stores.memory import check_continues

try:  # an optional dependency: pip install 'turnstile[redis]'
    import anyio
    import coredis
    from coredis.exceptions import NoScriptError, RedisError
    from coredis.tokens import PureToken

    HAVE_COREDIS = True
except ImportError:  # pragma: no cover - reported by RedisRepository
    HAVE_COREDIS = False

__all__ = [
    "APPEND_SCRIPT",
    "RedisLogStore",
    "RedisRepository",
    "RedisSettings",
    "Trim",
    "parse_trim",
    "split_session_url",
]

logger = logging.getLogger("turnstile.redis")

T = TypeVar("T")

DEFAULT_TRIM: Final = "maxlen:100000"
_READ_PAGE: Final = 1024
_REDIS_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError) + (
    (RedisError,) if HAVE_COREDIS else ()
)

APPEND_SCRIPT: Final = b"""
-- Append a batch to a session's stream, atomically and exactly once (Turnstile).
-- KEYS: stream, meta, owner.  ARGV: expected last seq, trim kind (maxlen|minid|none), trim value
-- (entries | age in ms), ttl in seconds once the session stopped (0: none), then the entries' JSON.
local last = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local prev = tonumber(redis.call('HGET', KEYS[2], 'ms') or '0')
local expected = tonumber(ARGV[1])
if last ~= expected then
  return {'seq', string.format('%d', last), string.format('%d', prev)}
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ms < prev then ms = prev end
local kind = ARGV[2]
local n = #ARGV - 4
for i = 1, n do
  local seq = string.format('%d', expected + i)
  local id = string.format('%d', ms) .. '-' .. seq
  if kind == 'maxlen' then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], id, 'seq', seq, 'e', ARGV[4 + i])
  elseif kind == 'minid' then
    local minid = string.format('%d', ms - tonumber(ARGV[3]))
    redis.call('XADD', KEYS[1], 'MINID', '~', minid, id, 'seq', seq, 'e', ARGV[4 + i])
  else
    redis.call('XADD', KEYS[1], id, 'seq', seq, 'e', ARGV[4 + i])
  end
end
redis.call('HSET', KEYS[2], 'seq', string.format('%d', expected + n), 'ms', string.format('%d', ms))
if expected == 0 then redis.call('HSET', KEYS[2], 'created', ARGV[5]) end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ttl) end
end
return {'ok', string.format('%d', ms)}
"""


class Trim(msgspec.Struct, frozen=True):
    """How streams are trimmed: ``kind`` ``maxlen`` (``value`` entries), ``age`` (seconds) or ``none``."""

    kind: Literal["maxlen", "age", "none"]
    value: int = 0

    def script_args(self) -> list[str]:
        """The trim arguments of :data:`APPEND_SCRIPT`."""
        if self.kind == "maxlen":
            return ["maxlen", str(self.value)]
        if self.kind == "age":
            return ["minid", str(self.value * 1000)]
        return ["none", "0"]

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.value}"


def parse_trim(text: str) -> Trim:
    """``maxlen:N``, ``age:SECONDS`` (also ``age:7d``, ``12h``, ``30m``) or ``none``.

    Raises :class:`ConfigError`.
    """
    raw = text.strip().lower()
    if raw == "none":
        return Trim("none")
    kind, _, value = raw.partition(":")
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if kind == "maxlen":
            n = int(value)
        elif kind == "age":
            mult = units.get(value[-1:], 0)
            n = int(value[:-1]) * mult if mult else int(value)
        else:
            raise ValueError(kind)
    except ValueError:
        raise ConfigError(
            f"redis_trim {text!r} is not a trim policy: use maxlen:N (keep about N entries per session), "
            "age:SECONDS (or age:7d, 12h, 30m: drop older entries) or none"
        ) from None
    if n < 1:
        raise ConfigError(f"redis_trim {text!r}: the number must be at least 1")
    return Trim(kind, n)  # type: ignore[arg-type]


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the shared log is and who this server is.

    ``url``: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS). ``node``: this server's name,
    unique among the servers sharing the database and the same across its restarts (default: the host
    name). ``prefix``: of every key (``turnstile``). ``trim``: see :func:`parse_trim`.
    ``connect_timeout_s``/``command_timeout_s``: a command not answered within the latter fails (the
    writer retries it; readiness reports it).
    """

    url: str
    node: str = ""
    prefix: str = "turnstile"
    trim: Trim = Trim("maxlen", 100000)
    connect_timeout_s: float = 2.0
    command_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"redis_url {self.url!r} must start with redis://, rediss:// or unix:// "
                "(e.g. redis://127.0.0.1:6379/0)"
            )
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", self.node_name):
            raise ConfigError(
                f"node_id {self.node_name!r}: use 1-64 letters, digits, '_', '.', ':' and '-' "
                "(a name unique among the servers sharing the Redis database, stable across restarts)"
            )

    @property
    def node_name(self) -> str:
        """``node``, or the host name when it is empty."""
        return self.node or socket.gethostname()

    @property
    def where(self) -> str:
        """The URL without a password, for messages."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


def split_session_url(url: str) -> tuple[str, str]:
    """``redis://host:port/db/SESSION`` → (``redis://host:port/db``, ``SESSION``).

    Raises :class:`ConfigError`.
    """
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("redis", "rediss") or len(segments) != 2 or not segments[0].isdigit():
        raise ConfigError(
            f"{url!r} is not a session in Redis: write redis://HOST:PORT/DB/SESSION (e.g. "
            "redis://127.0.0.1:6379/0/s-1a2b3c)"
        )
    base = parts._replace(path=f"/{segments[0]}", query="", fragment="").geturl()
    try:
        return base, validate_session_id(segments[1])
    except LogError as exc:
        raise ConfigError(f"{url!r}: {exc}") from None


class _Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.index = f"{prefix}:sessions"

    def log(self, sid: str) -> str:
        return f"{self.prefix}:{{{sid}}}:log"

    def meta(self, sid: str) -> str:
        return f"{self.prefix}:{{{sid}}}:meta"

    def owner(self, sid: str) -> str:
        return f"{self.prefix}:{{{sid}}}:owner"


class RedisRepository:
    """The sessions of every server sharing one Redis database. Use inside :meth:`connected`.

    This server (``settings.node``) runs the sessions whose owner key names it; it reads the others.
    """

    shared = True

    def __init__(self, settings: RedisSettings) -> None:
        if not HAVE_COREDIS:
            raise ConfigError(
                "--redis-url needs the coredis package: pip install 'turnstile[redis]' (coredis>=6.9,<7)"
            )
        self.settings = settings
        self.node = settings.node_name
        self.keys = _Keys(settings.prefix)
        self.description = f"Redis at {settings.where}"
        self.client: coredis.Redis[bytes] = coredis.Redis.from_url(
            settings.url, connect_timeout=settings.connect_timeout_s, decode_responses=False
        )
        self._append = self.client.register_script(APPEND_SCRIPT)
        self._script_loaded = False
        self._problem: str | None = None
        self._trouble_logged = False

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """The client's connection pool, open for the ``async with`` (it connects lazily)."""
        async with self.client:
            yield

    # --- health -------------------------------------------------------------------------------------------

    def problem(self) -> str | None:
        """Why Redis cannot be written now (from the last check or failed command), or None."""
        return self._problem

    async def check(self) -> str | None:
        """PING Redis now; remember and return what is wrong, or None."""
        try:
            await self.call(self.client.ping())
        except LogError as exc:
            self.note_trouble(str(exc))
        else:
            if self._problem is not None:
                logger.warning("%s answers again", self.description)
            self._problem = None
            self._trouble_logged = False
        return self._problem

    def note_trouble(self, reason: str) -> None:
        """A command failed: readiness says so until a check succeeds."""
        if not self._trouble_logged:
            logger.error("%s: %s", self.description, reason)
            self._trouble_logged = True
        self._problem = reason

    async def call(self, request: Awaitable[T], *, timeout_s: float | None = None) -> T:
        """Await one command; raises :class:`LogError` when it fails or is not answered in time."""
        limit = self.settings.command_timeout_s if timeout_s is None else timeout_s
        try:
            with anyio.fail_after(limit):
                return await request
        except TimeoutError:
            raise LogError(f"{self.description} did not answer within {limit:g} s") from None
        except _REDIS_ERRORS as exc:
            raise LogError(f"{self.description}: {_describe(exc)}") from exc

    # --- the session index -------------------------------------------------------------------------------

    async def claim(self, session_id: str) -> bool:
        """Make this node the owner of a new session id and list it; False if the id is taken."""
        sid = validate_session_id(session_id)
        owner_key = self.keys.owner(sid)
        taken = not await self.call(self.client.set(owner_key, self.node, condition=PureToken.NX))
        logged: int = await self.call(self.client.exists([self.keys.meta(sid)])) if not taken else 0
        if logged:
            # A log without an owner key (restored from elsewhere): the id is not free.
            await self.call(self.client.delete([owner_key]))
            taken = True
        if taken:
            return False
        await self.call(self.client.zadd(self.keys.index, {sid: _now()}, condition=PureToken.NX))
        return True

    async def release(self, session_id: str) -> None:
        """Undo :meth:`claim` for a session whose ``session.created`` was never written."""
        sid = validate_session_id(session_id)
        if await self.call(self.client.exists([self.keys.meta(sid)])):
            return
        await self.call(self.client.zrem(self.keys.index, [sid]))
        if await self.call(self.client.get(self.keys.owner(sid))) == self.node.encode():
            await self.call(self.client.delete([self.keys.owner(sid)]))

    async def delete(self, session_id: str) -> None:
        """Remove the session's log, meta and owner keys and take it out of the index."""
        sid = validate_session_id(session_id)
        keys = [self.keys.log(sid), self.keys.meta(sid), self.keys.owner(sid)]
        await self.call(self.client.delete(keys))
        await self.call(self.client.zrem(self.keys.index, [sid]))

    async def owner(self, session_id: str) -> str | None:
        """The node that runs ``session_id`` (None: no such session)."""
        value = await self.call(self.client.get(self.keys.owner(validate_session_id(session_id))))
        return value.decode() if value is not None else None

    async def all_ids(self) -> list[str]:
        """Every session in the index, oldest first."""
        ids = await self.call(self.client.zrange(self.keys.index, 0, -1))
        return [i.decode() for i in ids]

    async def exists(self, session_id: str) -> bool:
        """Whether a log (or a claim) exists for ``session_id``."""
        sid = validate_session_id(session_id)
        return bool(await self.call(self.client.exists([self.keys.meta(sid), self.keys.owner(sid)])))

    async def session_ids(self) -> list[str]:
        """The sessions this node runs (their owner key names it), oldest first."""
        ids = await self.all_ids()
        owners = await self._owners(ids)
        return [sid for sid in ids if owners.get(sid) == self.node]

    async def _owners(self, ids: Sequence[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for start in range(0, len(ids), 512):
            chunk = ids[start : start + 512]
            async with self.client.pipeline(transaction=False) as pipe:
                replies = [pipe.get(self.keys.owner(sid)) for sid in chunk]
            for sid, reply in zip(chunk, replies, strict=True):
                value = await self.call(reply)
                out[sid] = value.decode() if value is not None else None
        return out

    async def created_entry(self, session_id: str) -> bytes | None:
        """The session's ``session.created`` entry as written (kept when the stream is trimmed)."""
        return await self.call(self.client.hget(self.keys.meta(session_id), "created"))

    async def last_seq(self, session_id: str) -> int:
        """The seq of the session's last written entry (0: none)."""
        value = await self.call(self.client.hget(self.keys.meta(session_id), "seq"))
        return int(value) if value is not None else 0

    # --- stores ------------------------------------------------------------------------------------------

    async def open(self, session_id: str) -> RedisLogStore:
        """The store of ``session_id`` (empty if it has no log yet)."""
        sid = validate_session_id(session_id)
        seq, ms = await self.call(self.client.hmget(self.keys.meta(sid), ["seq", "ms"]))
        return RedisLogStore(self, sid, int(seq) if seq else 0, int(ms) if ms else 0)

    def present(self, session_id: str) -> bool:
        """Redis logs are not moved aside by hand."""
        return True

    def created_at(self, session_id: str) -> float | None:
        """Unknown without I/O (a log with no ``session.created`` keeps the recovery time)."""
        return None

    async def append_many(
        self, batches: Sequence[tuple[AsyncLogStore, Sequence[Record]]]
    ) -> list[int | LogError]:
        """Append a batch to each of several sessions' streams in one pipeline (one round trip).

        Per batch: how many of its records are written now (all; a first part after a lost answer; 0 to
        send again at once), or the :class:`LogError` that stops its log. Raises :class:`LogError` when
        Redis cannot be reached (then nothing is known to be written: send the same batches again).
        """
        sha = self._append.sha
        limit = self.settings.command_timeout_s
        stores = [_redis_store(store) for store, _batch in batches]
        calls = [
            (store, store.append_args(batch)) for store, (_s, batch) in zip(stores, batches, strict=True)
        ]
        if not self._script_loaded:
            await self.call(self.client.script_load(APPEND_SCRIPT))
            self._script_loaded = True
        try:
            with anyio.fail_after(limit):
                async with self.client.pipeline(transaction=False, raise_on_error=False) as pipe:
                    requests = [pipe.evalsha(sha, keys=store._keys, args=args) for store, args in calls]
        except TimeoutError:
            raise LogError(f"{self.description} did not answer within {limit:g} s") from None
        except _REDIS_ERRORS as exc:
            raise LogError(f"{self.description}: {_describe(exc)}") from exc
        out: list[int | LogError] = []
        reload = False
        for store, (_store, batch), request in zip(stores, batches, requests, strict=True):
            try:
                reply = await request
            except NoScriptError:
                reload = True  # Redis restarted and forgot the script: load it, send again
                out.append(0)
                continue
            except _REDIS_ERRORS as exc:
                out.append(LogError(f"{self.description}: {_describe(exc)}"))
                continue
            try:
                out.append(store.take_reply(batch, reply))
            except LogError as exc:
                out.append(exc)
        if reload:
            self._script_loaded = False  # loaded before the next round
        return out

    async def read_new(
        self, stores: Sequence[tuple[RedisLogStore, int]], *, block_ms: int, count: int = _READ_PAGE
    ) -> dict[str, list[Record]]:
        """One ``XREAD BLOCK`` over several sessions' streams: what follows each given seq (by session id).

        Empty after ``block_ms`` without a new entry. This is the node's one blocking read (its tailer):
        every local subscriber of sessions run elsewhere is fed from it.
        """
        streams = {store.key: store.id_after(after) for store, after in stores}
        reply = await self.call(
            self.client.xread(streams, count=count, block=block_ms),
            timeout_s=block_ms / 1000 + self.settings.command_timeout_s,
        )
        out: dict[str, list[Record]] = {}
        if not reply:
            return out
        by_key = {store.key: (store, after) for store, after in stores}
        for key, entries in reply.items():
            store, after = by_key[key.decode() if isinstance(key, bytes) else key]
            out[store.session_id] = store.records_of(entries, after)
        return out


class RedisLogStore:
    """One session's stream. Appends are atomic, idempotent batches (:data:`APPEND_SCRIPT`)."""

    def __init__(self, repo: RedisRepository, session_id: str, last_seq: int, last_ms: int) -> None:
        self.repo = repo
        self.session_id = session_id
        self.key = repo.keys.log(session_id)
        self._keys = [self.key, repo.keys.meta(session_id), repo.keys.owner(session_id)]
        self._last = last_seq
        # The time part of each entry's id, by seq (from _first on): a seq's id is "<ms>-<seq>". Values
        # may be a lower bound (a batch whose answer was lost): reads filter by seq, so that is safe.
        self._ms = array("q")
        self._first = 0
        self._last_ms = last_ms
        self._closed = False

    @property
    def last_seq(self) -> int:
        """The seq of the last entry written (or found when the store was opened)."""
        return self._last

    def id_after(self, seq: int) -> str:
        """The stream id to read after ``seq`` from (exclusive), or ``0-0`` for the whole stream."""
        ms = self._ms_at(seq)
        return "0-0" if ms is None or seq <= 0 else f"{ms}-{seq}"

    async def append_async(self, records: Sequence[Record]) -> None:
        """Append ``records`` (continuing the log) in one script call; all or none."""
        pending = list(records)
        while pending:
            args = self.append_args(pending)
            reply: Any = await self.repo.call(self.repo._append(keys=self._keys, args=args))
            del pending[: self.take_reply(pending, reply)]

    def append_args(self, records: Sequence[Record]) -> list[Any]:
        """The :data:`APPEND_SCRIPT` arguments that append ``records`` (raises :class:`SequenceGap`)."""
        if self._closed:
            raise LogError(f"append to the closed Redis log of session {self.session_id}")
        check_continues(self._last, records)
        settings = self.repo.settings
        ttl = 0
        if settings.trim.kind == "age" and any(type(r.entry) is SessionStopped for r in records):
            ttl = settings.trim.value
        args: list[Any] = [str(records[0].entry.seq - 1), *settings.trim.script_args(), str(ttl)]
        args.extend(r.data for r in records)
        return args

    def take_reply(self, records: Sequence[Record], reply: Any) -> int:
        """How many of ``records`` the script's ``reply`` says are written (all, or — after a lost answer
        — a first part: send the rest again). Raises :class:`LogError` when the log cannot go on."""
        status, value = reply[0], reply[1]
        expected = records[0].entry.seq - 1
        if status == b"ok":
            ms = int(value)
            for r in records:
                self._remember(r.entry.seq, ms)
            self._last = records[-1].entry.seq
            return len(records)
        found = int(value)
        if expected < found <= records[-1].entry.seq:
            # An earlier try of (part of) this batch was written and its answer lost: skip that part.
            lower = self._ms[-1] if len(self._ms) else self._last_ms
            applied = found - expected
            for r in records[:applied]:
                self._remember(r.entry.seq, lower)
            self._last = found
            return applied
        repo = self.repo
        if found < expected:
            raise LogDiverged(
                f"the Redis log of session {self.session_id} ends at seq {found} but seq {expected} was "
                f"written: {repo.description} lost entries (restarted without persistence, or the keys "
                "were deleted). Nothing more is written to it; see docs/scaling.md, Persistence"
            )
        raise LogDiverged(
            f"the Redis log of session {self.session_id} already goes on to seq {found} (this server "
            f"wrote up to {expected}): another server writes to it. Two servers share the node id "
            f"{repo.node!r}? Give each its own --node-id"
        )

    async def read_async(self, after: int = 0, limit: int | None = None) -> list[Record]:
        """Records with ``seq > after`` (``XRANGE`` from ``after``'s id, exclusive), ``limit`` at most."""
        want = limit if limit is not None else -1
        out: list[Record] = []
        cursor = after
        start = self._range_start(after)
        repo = self.repo
        while want < 0 or len(out) < want:
            page = _READ_PAGE if want < 0 else min(_READ_PAGE, want - len(out))
            entries = await repo.call(repo.client.xrange(self.key, start, "+", count=page))
            if not entries:
                break
            records = self.records_of(entries, cursor)
            out.extend(records)
            if records:
                cursor = records[-1].entry.seq
            start = "(" + _text(entries[-1].identifier)
            if len(entries) < page:
                break
        return out

    def records_of(self, entries: Sequence[Any], after: int) -> list[Record]:
        """Decode stream entries into records with ``seq > after`` (remembering their ids)."""
        out: list[Record] = []
        for item in entries:
            ident = _text(item.identifier)
            fields = item.field_values
            data = fields.get(b"e")
            ms_text, _, seq_text = ident.partition("-")
            try:
                seq = int(seq_text)
                if data is None:
                    raise ValueError("no 'e' field")
                entry = decode_entry(data)
            except (ValueError, msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                raise LogCorrupted(
                    f"{self.repo.description} {self.key} entry {ident} is not a Turnstile log entry ({exc})"
                ) from exc
            if entry.seq != seq:
                raise LogCorrupted(
                    f"{self.repo.description} {self.key} entry {ident} holds seq {entry.seq}, not {seq}"
                )
            self._remember(seq, int(ms_text))
            if seq > after:
                out.append(Record(entry, data))
        return out

    def close(self) -> None:
        """No more appends (the repository's connections stay open)."""
        self._closed = True

    # --- seq -> id ---------------------------------------------------------------------------------------

    def _range_start(self, after: int) -> str:
        ms = self._ms_at(after)
        return "-" if ms is None or after <= 0 else f"({ms}-{after}"

    def _ms_at(self, seq: int) -> int | None:
        """The id time of ``seq``, or a lower bound of it; None when nothing is known at or before it."""
        if not self._ms or seq < self._first:
            return None
        index = seq - self._first
        return self._ms[index] if index < len(self._ms) else self._ms[-1]

    def _remember(self, seq: int, ms: int) -> None:
        if not self._ms:
            self._first = seq
            self._ms.append(ms)
            return
        end = self._first + len(self._ms)
        if seq < end:
            return
        if seq > end:
            # Not read yet (a gap): the last known time is a lower bound for every seq in it.
            self._ms.extend([self._ms[-1]] * (seq - end))
        self._ms.append(ms)


def _redis_store(store: AsyncLogStore) -> RedisLogStore:
    if not isinstance(store, RedisLogStore):
        raise TypeError(f"{store!r} is not a Redis log")
    return store


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _now() -> float:
    return time.time()
