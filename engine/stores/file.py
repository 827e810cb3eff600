"""The embedded default store: one append-only NDJSON file per session under a data directory.

Durability: every append is one ``write`` of whole lines to a file opened with ``O_APPEND``, so a server
killed with SIGKILL loses nothing it appended (the kernel has the bytes). ``fsync`` additionally guards
against power loss, by policy: ``always`` (every append, inline), ``lifecycle`` (the default: an append
that carries a lifecycle entry — a turn requested, a stream ended, a process spawned or exited — marks the
file :attr:`FileLogStore.sync_pending`, and :meth:`FileLogStore.sync` does the fsync; the runtime calls it
from a worker thread, so a slow disk never stalls the event loop and every other stream), or ``never``.

Crash repair: a crash in the middle of a write can leave a torn last line. :meth:`FileLogStore.open`
finds it, cuts the file back to the last complete entry, and appends a ``log.repaired`` entry that keeps
the torn bytes — so the sequence continues and no complete entry is ever lost. Damage *before* the last
line is not a crash artefact and raises :class:`engine.errors.LogCorrupted` with the line number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, Literal, TypeAlias

import msgspec

from turnstile.engine.errors import LogCorrupted, LogError
from turnstile.engine.log import CliLine, LogRepaired, Record, decode_entry, kind_of, raw_field, record
from turnstile.engine.stores.memory import check_continues

__all__ = ["FileLogRepository", "FileLogStore", "FsyncPolicy", "validate_session_id"]

FsyncPolicy: TypeAlias = Literal["always", "lifecycle", "never"]

_LIFECYCLE_KINDS: Final = frozenset(
    {"turn.requested", "stream.ended", "process.spawned", "process.exited", "session.created"}
    | {"session.stopped", "session.recovered", "session.titled", "log.repaired"}
)
# Used with fullmatch: a `$` would also match before a trailing newline ("nl\n" would pass).
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PROBE_PREFIX: Final = ".write-probe"
_READ_CHUNK: Final = 1 << 20
# A line that is not an entry. RecursionError: JSON nested deeper than the decoder goes (a hand-edited or
# corrupted line; the runtime never writes one) — damaged like any other, never an exception of its own.
_UNREADABLE: Final = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


class FileLogStore:
    """One session's log as an NDJSON file. Create with :meth:`open`."""

    def __init__(self, path: Path, fd: int, offsets: list[int], size: int, fsync: FsyncPolicy) -> None:
        self.path = path
        self._fd = fd
        # _offsets[i] is the byte offset of the line of seq i + 1; a read can seek straight to any seq.
        self._offsets = offsets
        self._size = size
        self._fsync = fsync
        # Lifecycle appends made (event loop) and covered by a finished fsync (worker thread). Counting
        # instead of a flag: a flag cleared when an fsync *starts* would tell a second caller "done"
        # while the first fsync is still running.
        self._appended_gen = 0
        self._synced_gen = 0
        # sync() may run in a worker thread: never fsync a descriptor that close() is releasing.
        self._sync_lock = threading.Lock()
        self._closed = False
        self.repaired: LogRepaired | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "lifecycle",
        clock: Callable[[], float] = time.time,
    ) -> FileLogStore:
        """Open (creating if needed) the log at ``path``, repairing a torn last line.

        After a repair, :attr:`repaired` holds the ``log.repaired`` entry that was appended.
        """
        p = Path(path)
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise LogError(
                f"cannot open log {p}: {exc.strerror}; check the data directory's permissions"
            ) from exc
        try:
            offsets, good_end, torn = _scan(fd, p)
            store = cls(p, fd, offsets, good_end, fsync)
            if torn is not None:
                os.ftruncate(fd, good_end)
                raw, encoding = raw_field(torn)
                repair = LogRepaired(
                    seq=len(offsets) + 1, ts=clock(), dropped_bytes=len(torn), raw=raw, encoding=encoding
                )
                store.append([record(repair)])
                store.repaired = repair
        except BaseException:
            os.close(fd)
            raise
        return store

    @property
    def sync_pending(self) -> bool:
        """A lifecycle entry was appended and no finished fsync covers it yet (policy ``lifecycle``)."""
        return self._appended_gen > self._synced_gen

    @property
    def last_seq(self) -> int:
        """The seq of the last entry (0 when empty)."""
        return len(self._offsets)

    def append(self, records: Sequence[Record]) -> None:
        """Append whole lines in one write; fsync by policy."""
        if self._closed:
            raise LogError(f"append to closed log {self.path}")
        if not records:
            return
        check_continues(self.last_seq, records)
        blob = b"".join(r.data + b"\n" for r in records)
        try:
            _write_all(self._fd, blob)
            if self._fsync == "always":
                os.fsync(self._fd)
            elif self._fsync == "lifecycle" and any(
                type(r.entry) is not CliLine and kind_of(r.entry) in _LIFECYCLE_KINDS for r in records
            ):
                self._appended_gen += 1
        except OSError as exc:
            # Undo a partial write so the file still ends on a line boundary and the append can be retried.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise LogError(f"cannot append to log {self.path}: {exc.strerror}") from exc
        offset = self._size
        for r in records:
            self._offsets.append(offset)
            offset += len(r.data) + 1
        self._size = offset

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Record]:
        """Records with ``seq > after``, in order (up to the last seq at the time of the call)."""
        start = max(after, 0)
        stop = len(self._offsets) if limit is None else min(len(self._offsets), start + limit)
        if start >= stop:
            return iter(())
        return self._read_range(start, stop)

    def _read_range(self, start: int, stop: int) -> Iterator[Record]:
        begin = self._offsets[start]
        end = self._offsets[stop] if stop < len(self._offsets) else self._size
        with open(self.path, "rb") as f:
            f.seek(begin)
            pending = b""
            remaining = end - begin
            while remaining > 0:
                chunk = f.read(min(_READ_CHUNK, remaining))
                if not chunk:
                    raise LogError(f"log {self.path} is shorter than its index; was it changed by hand?")
                remaining -= len(chunk)
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    yield Record(decode_entry(line), line)

    def sync(self) -> None:
        """fsync what was appended if a lifecycle entry is not on disk yet. Safe from a worker thread."""
        with self._sync_lock:
            target = self._appended_gen
            if target > self._synced_gen and not self._closed:
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    raise LogError(f"cannot sync log {self.path}: {exc.strerror}") from exc
                self._synced_gen = max(self._synced_gen, target)

    def close(self) -> None:
        """Sync what is pending, then close the file (idempotent)."""
        with self._sync_lock:
            if not self._closed:
                if self.sync_pending:
                    with contextlib.suppress(OSError):
                        os.fsync(self._fd)
                    self._synced_gen = self._appended_gen
                self._closed = True
                os.close(self._fd)

    def __enter__(self) -> FileLogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_from(fd: int, pos: int) -> bytes:
    os.lseek(fd, pos, os.SEEK_SET)
    return _read_rest(fd)


def _read_rest(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, _READ_CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _scan(fd: int, path: Path) -> tuple[list[int], int, bytes | None]:
    """Index the file: line offsets, the end of the last good line, and a torn tail (or None)."""
    offsets: list[int] = []
    pos = 0
    pending = b""
    line_no = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for index, line in enumerate(lines):
            line_no += 1
            try:
                entry = decode_entry(line)
            except _UNREADABLE as exc:
                # Damage on a line that has a newline after it. It is a torn tail only if nothing
                # but whitespace follows it; otherwise the file was damaged in the middle.
                rest = b"\n".join(lines[index + 1 :]) + b"\n" + pending + _read_rest(fd)
                if rest.strip():
                    raise LogCorrupted(
                        f"{path}:{line_no}: damaged entry before the end of the log ({exc}); "
                        "move the file aside to start the session's log afresh"
                    ) from exc
                return offsets, pos, _read_from(fd, pos)
            if entry.seq != len(offsets) + 1:
                raise LogCorrupted(
                    f"{path}:{line_no}: entry seq {entry.seq} where {len(offsets) + 1} was expected"
                )
            offsets.append(pos)
            pos += len(line) + 1
    if pending:
        # No newline at the end: either a complete entry whose newline was not written (keep it and
        # add the newline) or a torn line (cut it off).
        try:
            entry = decode_entry(pending)
        except _UNREADABLE:
            return offsets, pos, pending
        if entry.seq != len(offsets) + 1:
            return offsets, pos, pending
        _write_all(fd, b"\n")
        offsets.append(pos)
        pos += len(pending) + 1
    return offsets, pos, None


def validate_session_id(session_id: str) -> str:
    """Return ``session_id`` if it is safe as a file name (1-128 of letters, digits, ``_-.``, not starting
    with ``.``/``-``/``_``); raise :class:`LogError` otherwise."""
    if not _SESSION_ID.fullmatch(session_id):
        raise LogError(
            f"invalid session id {session_id!r}: use 1-128 letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )
    return session_id


class FileLogRepository:
    """The data directory: ``<root>/sessions/<session id>.ndjson``, one log per session."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: FsyncPolicy = "lifecycle") -> None:
        self.root = Path(root)
        self.fsync: FsyncPolicy = fsync
        self.sessions_dir = self.root / "sessions"

    def ensure(self) -> None:
        """Create the directories; raise :class:`LogError` with the reason when that is impossible."""
        try:
            self.sessions_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogError(f"cannot create data directory {self.sessions_dir}: {exc.strerror}") from exc

    def path_for(self, session_id: str) -> Path:
        """The log file of ``session_id`` (validated: no path tricks)."""
        return self.sessions_dir / f"{validate_session_id(session_id)}.ndjson"

    def open(self, session_id: str) -> FileLogStore:
        """Open or create the log of ``session_id``."""
        self.ensure()
        return FileLogStore.open(self.path_for(session_id), fsync=self.fsync)

    def exists(self, session_id: str) -> bool:
        """Whether a log exists for ``session_id``."""
        try:
            return self.path_for(session_id).exists()
        except LogError:
            return False

    def delete(self, session_id: str) -> None:
        """Remove the log of ``session_id`` (close its store first); nothing happens when it has none.

        Raises :class:`LogError` when the file cannot be removed.
        """
        path = self.path_for(session_id)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise LogError(f"cannot delete log {path}: {exc.strerror}") from exc

    def list_ids(self) -> list[str]:
        """Session ids with a log, oldest file first."""
        if not self.sessions_dir.is_dir():
            return []
        files = sorted(self.sessions_dir.glob("*.ndjson"), key=lambda p: (p.stat().st_mtime, p.name))
        return [p.stem for p in files]

    def writable(self) -> str | None:
        """None when the directory accepts writes, else the reason (for readiness checks).

        The probe writes a byte to a file that has no name (``O_TMPFILE``) where the file system allows
        it, so nothing is left behind even by a crash; elsewhere to a uniquely named file removed in a
        ``finally`` (:meth:`remove_stray_probes` cleans up after a crash at that instant).
        """
        try:
            self.ensure()
            _probe(self.sessions_dir)
        except (OSError, LogError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return f"data directory {self.sessions_dir} is not writable: {detail}"
        return None

    def remove_stray_probes(self) -> None:
        """Remove write probes a crashed process left behind (older versions used a fixed name)."""
        with contextlib.suppress(OSError):
            for path in self.sessions_dir.glob(_PROBE_PREFIX + "*"):
                with contextlib.suppress(OSError):
                    path.unlink()


def _probe(directory: Path) -> None:
    """Write one byte to a new file in ``directory``, leaving nothing behind; raise OSError when it fails."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            fd = os.open(directory, tmpfile | os.O_WRONLY, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            try:
                _write_all(fd, b"\0")
            finally:
                os.close(fd)
            return
    path = directory / f"{_PROBE_PREFIX}-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, b"\0")
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
