"""Log entries: the typed, append-only record that all Turnstile state is a fold over (sans-IO).

A session's log is a sequence of :data:`Entry` values with ``seq`` 1, 2, 3, ... (gap-free), a wall-clock
``ts`` (seconds since the epoch; ``None`` only in entries read from raw transcripts without times), and
the id of the ``stream`` (turn) it belongs to, if any. Each entry is one msgspec Struct of a tagged union
on ``kind``; on the wire it is one JSON object per line::

    {"kind":"turn.requested","seq":7,"ts":1764064330.12,"stream":"t2","prompt":"hello"}
    {"kind":"cli","seq":8,"ts":1764064330.61,"stream":"t2","type":"system","msg":{...the CLI's bytes...}}

Lossless: a :class:`CliLine` embeds the CLI's line as :class:`msgspec.Raw`, so encoding the entry
writes the CLI's bytes verbatim and decoding it gives them back untouched (:func:`cli_bytes`). Lines
that are not JSON objects are kept too (:class:`CliDecodeError`), and oversized lines keep their length,
head and tail (:class:`CliOversized`).

Schema evolution (see ``docs/log-format.md``): new kinds may appear; new fields are added at the end with
defaults. Readers decode an unknown kind to :class:`UnknownEntry` rather than failing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal, TypeAlias, cast

import msgspec

from turnstile.engine.framing import Frame, Oversized, Truncated
from turnstile.engine.protocol import (
    InvalidMessage,
    LineError,
    Message,
    StdoutMessage,
    UnknownMessage,
    decode_line,
    decode_message,
)
from turnstile.engine.timing import TurnTiming

__all__ = [
    "CliDecodeError",
    "CliLine",
    "CliOversized",
    "Entry",
    "InterruptEscalated",
    "InterruptRequested",
    "LogDropped",
    "LogRepaired",
    "Outcome",
    "PoolCheckout",
    "PoolDegraded",
    "PoolDrainRequested",
    "PoolProcessLost",
    "PoolProcessReady",
    "PoolSpawnFailed",
    "PoolSpawnStarted",
    "PoolStarted",
    "PoolStopped",
    "ProcessExited",
    "ProcessSpawnFailed",
    "ProcessSpawned",
    "PromptWritten",
    "Record",
    "SessionCreated",
    "SessionRecovered",
    "SessionShutdown",
    "SessionStopRequested",
    "SessionStopped",
    "SessionTitled",
    "Stderr",
    "StreamEnded",
    "StreamStalled",
    "Timeout",
    "TimeoutKind",
    "TurnRequested",
    "UnknownEntry",
    "cli_bytes",
    "decode_entry",
    "describe_exit",
    "encode_entry",
    "entries_from_frames",
    "entry_from_frame",
    "kind_of",
    "raw_bytes",
    "raw_field",
    "record",
    "view_of",
]

Outcome: TypeAlias = Literal["completed", "failed", "cancelled", "timed_out"]
"""The four terminal outcomes of a stream."""

TERMINAL_OUTCOMES: Final[tuple[Outcome, ...]] = ("completed", "failed", "cancelled", "timed_out")


class _Entry(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Fields every entry has. ``seq`` is assigned by the log's single writer."""

    seq: int
    ts: float | None
    stream: str | None = None


# --- what the CLI wrote -------------------------------------------------------------------------------


class CliLine(_Entry, frozen=True, kw_only=True, tag="cli"):
    """One stdout line of the CLI, byte for byte. ``type`` is the line's ``type`` (copied for routing)."""

    type: str
    msg: msgspec.Raw


class CliDecodeError(_Entry, frozen=True, kw_only=True, tag="cli.decode_error"):
    """A stdout line that is not a JSON object with a string ``type``, or a line cut short at EOF.

    ``reason`` is ``noise``, ``malformed``, ``no_type`` or ``truncated``. ``raw`` holds the exact bytes:
    as text when they are valid UTF-8 (``encoding`` ``utf-8``), else base64 (``encoding`` ``base64``).
    """

    reason: Literal["noise", "malformed", "no_type", "truncated"]
    error: str
    raw: str
    encoding: Literal["utf-8", "base64"] = "utf-8"


class CliOversized(_Entry, frozen=True, kw_only=True, tag="cli.oversized_line"):
    """A stdout line over the size limit: its length and its first and last bytes (as lossy text)."""

    length: int
    limit: int
    head: str
    tail: str


class Stderr(_Entry, frozen=True, kw_only=True, tag="stderr"):
    """Text the CLI wrote on stderr (line-framed, truncated). ``dropped`` counts lines rate-limited away."""

    text: str
    dropped: int = 0


# --- session and process lifecycle ----------------------------------------------------------------------


class SessionCreated(_Entry, frozen=True, kw_only=True, tag="session.created"):
    """A session exists: its agent, its spawn configuration, and the pool key derived from it."""

    session_id: str
    agent: str
    config: dict[str, Any] = {}
    pool_key: str = ""


class SessionStopRequested(_Entry, frozen=True, kw_only=True, tag="session.stop_requested"):
    """Someone asked the session to stop."""

    reason: str = ""


class SessionStopped(_Entry, frozen=True, kw_only=True, tag="session.stopped"):
    """The session is over; its process is gone."""

    reason: str = ""


class SessionShutdown(_Entry, frozen=True, kw_only=True, tag="session.shutdown"):
    """The server is shutting down: the session's open streams end ``cancelled`` with ``reason`` and its
    process is closed, but the session is not over (after a restart it goes on with ``--resume``)."""

    reason: str = ""


class SessionTitled(_Entry, frozen=True, kw_only=True, tag="session.titled"):
    """Someone named the session (what session lists show); an empty ``title`` means "no title": lists
    fall back to the first prompt."""

    title: str = ""


class SessionRecovered(_Entry, frozen=True, kw_only=True, tag="session.recovered"):
    """The server (re)opened this session's log after a restart; ``ended`` lists streams it closed."""

    ended: list[str] = []


class ProcessSpawned(_Entry, frozen=True, kw_only=True, tag="process.spawned"):
    """An agent process started (``warm`` when taken from the pool). ``resume`` is the CLI session id."""

    pid: int
    argv: list[str]
    warm: bool = False
    resume: str | None = None


class ProcessSpawnFailed(_Entry, frozen=True, kw_only=True, tag="process.spawn_failed"):
    """An agent process could not be started (binary missing, permission, ...)."""

    error: str


class ProcessExited(_Entry, frozen=True, kw_only=True, tag="process.exited"):
    """The agent process ended. ``returncode`` is negative for a signal (as in :mod:`subprocess`)."""

    pid: int
    returncode: int | None
    expected: bool = False
    reason: str = ""
    stderr_tail: list[str] = []


def describe_exit(returncode: int | None) -> str:
    """How a process ended, in words: ``process exited with status 1``, ``process killed by signal 9``."""
    if returncode is None:
        return "process exited (status unknown)"
    if returncode < 0:
        return f"process killed by signal {-returncode}"
    return f"process exited with status {returncode}"


# --- turns (streams) -------------------------------------------------------------------------------------


class TurnRequested(_Entry, frozen=True, kw_only=True, tag="turn.requested"):
    """A turn was accepted; written (durably) before the prompt reaches the CLI. Opens the stream."""

    prompt: str | list[dict[str, Any]]


class PromptWritten(_Entry, frozen=True, kw_only=True, tag="prompt.written"):
    """The prompt was written to the CLI's stdin."""

    pid: int = 0
    bytes: int = 0


class InterruptRequested(_Entry, frozen=True, kw_only=True, tag="interrupt.requested"):
    """An interrupt of the stream was asked for (``by``: who asked)."""

    by: str = "client"
    request_id: str = ""


class InterruptEscalated(_Entry, frozen=True, kw_only=True, tag="interrupt.escalated"):
    """The CLI did not honour the interrupt in time; ``signal`` was sent to its process group."""

    signal: str


TimeoutKind: TypeAlias = Literal["spawn", "first_event", "idle", "stall", "turn"]
"""Which layered timeout fired (see ``docs/runtime.md``, Timeouts)."""


class Timeout(_Entry, frozen=True, kw_only=True, tag="timeout"):
    """A layered timeout fired: ``spawn``, ``first_event``, ``idle``, ``stall`` or ``turn``."""

    which: TimeoutKind
    after_s: float


class StreamStalled(_Entry, frozen=True, kw_only=True, tag="stream.stalled"):
    """The model API made no progress for ``after_s`` seconds (since ``since``, the time of the turn's
    last progress): keep-alive pings arrive, content does not. A signal to subscribers; the stream's
    time from ``since`` on counts as stalled. If nothing comes, a ``stall`` timeout ends the turn."""

    after_s: float
    since: float | None = None


class StreamEnded(_Entry, frozen=True, kw_only=True, tag="stream.ended"):
    """The one terminal entry of a stream: its outcome, why, and its timing."""

    outcome: Outcome
    reason: str = ""
    timing: TurnTiming | None = None
    exit_status: int | None = None


# --- the pool's own log -----------------------------------------------------------------------------------


class PoolStarted(_Entry, frozen=True, kw_only=True, tag="pool.started"):
    """The pool began; ``target`` warm processes per key."""

    target: int


class PoolSpawnStarted(_Entry, frozen=True, kw_only=True, tag="pool.spawn_started"):
    """The pool started warming a process for ``key``."""

    key: str
    pid: int = 0


class PoolProcessReady(_Entry, frozen=True, kw_only=True, tag="pool.process_ready"):
    """A warm process for ``key`` is ready to be checked out."""

    key: str
    pid: int


class PoolSpawnFailed(_Entry, frozen=True, kw_only=True, tag="pool.spawn_failed"):
    """Warming failed; the pool retries after ``retry_in_s`` (with backoff) within its budget."""

    key: str
    error: str
    retry_in_s: float | None = None


class PoolCheckout(_Entry, frozen=True, kw_only=True, tag="pool.checkout"):
    """A warm process was handed to a session."""

    key: str
    pid: int
    session: str


class PoolProcessLost(_Entry, frozen=True, kw_only=True, tag="pool.process_lost"):
    """A warm process left the pool without being checked out (crashed, recycled, too old)."""

    key: str
    pid: int
    reason: str


class PoolDegraded(_Entry, frozen=True, kw_only=True, tag="pool.degraded"):
    """The pool cannot keep its target (e.g. the agent binary is missing); turns still get cold processes."""

    reason: str


class PoolDrainRequested(_Entry, frozen=True, kw_only=True, tag="pool.drain_requested"):
    """The pool is shutting down: no new warm processes, idle ones are closed."""

    reason: str = ""


class PoolStopped(_Entry, frozen=True, kw_only=True, tag="pool.stopped"):
    """The pool holds no process any more."""


# --- the store's own repairs ------------------------------------------------------------------------------


class LogRepaired(_Entry, frozen=True, kw_only=True, tag="log.repaired"):
    """On reopen the file ended in a torn line (a crash mid-write); it was cut off and kept here."""

    dropped_bytes: int
    raw: str
    encoding: Literal["utf-8", "base64"] = "utf-8"


class LogDropped(_Entry, frozen=True, kw_only=True, tag="log.dropped"):
    """While the log could not be written, the agent's output went past the memory bound for entries
    waiting to be written (``limit`` bytes): ``entries`` lines of it (``bytes`` bytes, stdout and stderr)
    were not kept. Written once the storage works again, right after the entries that were kept."""

    entries: int
    bytes: int
    limit: int
    reason: str


Entry: TypeAlias = (
    CliLine
    | CliDecodeError
    | CliOversized
    | Stderr
    | SessionCreated
    | SessionStopRequested
    | SessionStopped
    | SessionRecovered
    | SessionTitled
    | ProcessSpawned
    | ProcessSpawnFailed
    | ProcessExited
    | TurnRequested
    | PromptWritten
    | InterruptRequested
    | InterruptEscalated
    | Timeout
    | StreamStalled
    | StreamEnded
    | SessionShutdown
    | PoolStarted
    | PoolSpawnStarted
    | PoolProcessReady
    | PoolSpawnFailed
    | PoolCheckout
    | PoolProcessLost
    | PoolDegraded
    | PoolDrainRequested
    | PoolStopped
    | LogRepaired
    | LogDropped
)


class UnknownEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An entry of a kind this version does not know (written by a newer Turnstile); kept raw."""

    kind: str
    seq: int
    ts: float | None
    stream: str | None = None
    raw: bytes


AnyEntry: TypeAlias = Entry | UnknownEntry


class Record(msgspec.Struct, frozen=True, gc=False):
    """An entry together with its JSON encoding (no newline), encoded once and shared by all readers.

    Not tracked by the cyclic garbage collector (it can hold no cycle: an immutable entry and bytes), so
    a long in-memory log does not lengthen every full collection — a pause every stream would feel.
    """

    entry: AnyEntry
    data: bytes


_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[Entry]] = msgspec.json.Decoder(Entry)


class _Head(msgspec.Struct):
    kind: str
    seq: int
    ts: float | None = None
    stream: str | None = None


def encode_entry(entry: AnyEntry) -> bytes:
    """The entry's JSON line (without newline). An :class:`UnknownEntry` re-encodes to its raw bytes."""
    if isinstance(entry, UnknownEntry):
        return entry.raw
    return _encoder.encode(entry)


def record(entry: Entry) -> Record:
    """Encode ``entry`` once into a :class:`Record`."""
    return Record(entry, _encoder.encode(entry))


def decode_entry(data: bytes) -> AnyEntry:
    """Decode one log line. Unknown kinds become :class:`UnknownEntry`.

    Raises :class:`msgspec.DecodeError` (or ``ValidationError``) when the line is not an entry at all;
    the stores turn that into a repair (torn last line) or :class:`engine.errors.LogCorrupted`.
    """
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError:
        head = msgspec.json.decode(data, type=_Head)
        if head.kind in _KNOWN_KINDS:
            raise
        return UnknownEntry(kind=head.kind, seq=head.seq, ts=head.ts, stream=head.stream, raw=data)


_KNOWN_KINDS: Final = frozenset(cls.__struct_config__.tag for cls in Entry.__args__)


def kind_of(entry: AnyEntry) -> str:
    """The entry's ``kind`` tag (e.g. ``turn.requested``)."""
    if isinstance(entry, UnknownEntry):
        return entry.kind
    tag = entry.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def cli_bytes(entry: CliLine) -> bytes:
    """The CLI's original line, exactly as it was received."""
    return bytes(entry.msg)


def raw_field(data: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """Keep arbitrary bytes in a JSON string field: as text if valid UTF-8, else base64."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        import base64

        return base64.b64encode(data).decode("ascii"), "base64"


def raw_bytes(raw: str, encoding: Literal["utf-8", "base64"]) -> bytes:
    """Inverse of :func:`raw_field`."""
    if encoding == "base64":
        import base64

        return base64.b64decode(raw)
    return raw.encode("utf-8")


def entry_from_frame(
    frame: Frame, *, seq: int, ts: float | None, stream: str | None
) -> tuple[Entry, Message | None] | None:
    """Turn one framed stdout line into its log entry and, for CLI messages, its typed view.

    Returns ``None`` for a blank line (whitespace carries no content). Never raises: bad input becomes
    :class:`CliDecodeError` or :class:`CliOversized`. This is the hot path of every CLI line.
    """
    if type(frame) is not bytes:
        return _special_frame(frame, seq, ts, stream)  # type: ignore[arg-type]
    # The CLI ends lines with "\n" only and never pads them: skip the strip (a copy) when the ends
    # are already clean.
    view: Message | LineError | None
    if frame and frame[0] == 0x7B and frame[-1] == 0x7D:  # "{" ... "}"
        view = decode_message(frame)
        tag = VIEW_TAGS.get(type(view))
        # The common case in one step: a typed message, ASCII (so valid UTF-8 — see below).
        if tag is not None and frame.isascii():
            return CliLine(seq=seq, ts=ts, stream=stream, type=tag, msg=msgspec.Raw(frame)), view  # type: ignore[return-value]
        line = frame
    else:
        line = frame.strip()
        if not line:
            return None
        view = decode_line(line)
    tag = VIEW_TAGS.get(type(view))
    # msgspec does not validate the UTF-8 of fields it skips; a CLI line kept raw must be valid UTF-8
    # or the log line embedding it would not be JSON (isascii is the fast pre-check).
    if tag is not None and (line.isascii() or valid_utf8(line)):
        return CliLine(seq=seq, ts=ts, stream=stream, type=tag, msg=msgspec.Raw(line)), cast(Message, view)
    if isinstance(view, UnknownMessage | InvalidMessage) and valid_utf8(line):
        return CliLine(seq=seq, ts=ts, stream=stream, type=view.type, msg=msgspec.Raw(line)), view
    error = view if isinstance(view, LineError) else LineError(reason="malformed", error="not valid UTF-8")
    raw, encoding = raw_field(frame)
    entry = CliDecodeError(
        seq=seq, ts=ts, stream=stream, reason=error.reason, error=error.error, raw=raw, encoding=encoding
    )
    return entry, None


def entries_from_frames(
    frames: Iterable[Frame], *, seq: int, ts: float | None, stream: str | None
) -> list[tuple[Entry, Message | None]]:
    """:func:`entry_from_frame` over a batch of frames (e.g. one pipe read), numbered from ``seq`` on.

    Blank lines are skipped (they take no seq). The runtime's hot path: one call per stdout chunk, with
    the common case — a typed CLI message in valid UTF-8 — handled inline.
    """
    out: list[tuple[Entry, Message | None]] = []
    append = out.append
    tags = VIEW_TAGS
    decode = decode_message
    raw = msgspec.Raw
    for frame in frames:
        if type(frame) is bytes and frame and frame[0] == 0x7B and frame[-1] == 0x7D:
            view = decode(frame)
            tag = tags.get(type(view))
            if tag is not None and (frame.isascii() or valid_utf8(frame)):
                entry = CliLine(seq=seq, ts=ts, stream=stream, type=tag, msg=raw(frame))
                append((entry, view))  # type: ignore[arg-type]
                seq += 1
                continue
        made = entry_from_frame(frame, seq=seq, ts=ts, stream=stream)
        if made is not None:
            append(made)
            seq += 1
    return out


def valid_utf8(line: bytes) -> bool:
    """Whether ``line`` is valid UTF-8 (a CLI line kept raw in a log entry must be)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _special_frame(
    frame: Oversized | Truncated, seq: int, ts: float | None, stream: str | None
) -> tuple[Entry, None] | None:
    if isinstance(frame, Oversized):
        return (
            CliOversized(
                seq=seq,
                ts=ts,
                stream=stream,
                length=frame.length,
                limit=frame.limit,
                head=frame.head.decode("utf-8", "replace"),
                tail=frame.tail.decode("utf-8", "replace"),
            ),
            None,
        )
    if not frame.raw.strip():
        return None
    raw, encoding = raw_field(frame.raw)
    return (
        CliDecodeError(
            seq=seq,
            ts=ts,
            stream=stream,
            reason="truncated",
            error="the stream ended in the middle of a line",
            raw=raw,
            encoding=encoding,
        ),
        None,
    )


def _struct_tags(union: Any) -> dict[type, str]:
    out: dict[type, str] = {}
    stack = list(union.__args__)
    while stack:
        cls = stack.pop()
        tag = cls.__struct_config__.tag
        if isinstance(tag, str):
            out[cls] = tag
        stack.extend(cls.__subclasses__())
    return out


VIEW_TAGS: Final[dict[type, str]] = _struct_tags(StdoutMessage)
"""The ``type`` of every typed view class (system subtype views included), for the hot paths."""


def view_of(entry: CliLine) -> Message | LineError:
    """The typed view of a logged CLI line (decoded on demand from its raw bytes)."""
    return decode_message(bytes(entry.msg))
