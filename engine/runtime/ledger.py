"""The process ledger: every agent process this server spawned, so a restarted server can reap leftovers.

A server killed with SIGKILL cannot clean up; its agent processes (in their own process groups) live on.
On the next start :meth:`ProcessLedger.reap_leftovers` kills those — but only the ones that are provably
ours: the pid is alive, its start time (``/proc/<pid>/stat`` field 22, in clock ticks since boot, with the
boot id) and its program (command line or executable) match what we wrote down when we spawned it; then
its whole process group is killed. A pid reused by some unrelated process fails that test and is left
alone. Never by name. (Tools left behind by an agent that itself already exited cannot be proven ours
and are not touched; an agent normally exits when its stdin closes with the dead server.)

The ledger is a small append-only file (``<data_dir>/processes.json``, one JSON object per line: an entry
when a process is spawned, ``{"gone": pid}`` when it is reaped), compacted by an atomic rewrite once most
of its lines are history; with no data directory it lives in memory only. Its methods are synchronous and
quick — one small ``O_APPEND`` write per change, as the logs do (a file renamed over another on every
spawn made ext4 flush it, and stalled every stream on the event loop) — and a server killed at any point
leaves a ledger that reads back whole (a torn last line is skipped). Ledgers written as one JSON array
by earlier versions are read too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import msgspec

__all__ = ["LedgerEntry", "ProcessLedger", "process_identity"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class LedgerEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One spawned process: how to recognise it again.

    ``cmdline`` is what ``/proc`` showed right after the spawn (a script started through its ``#!``
    line shows its interpreter first); ``exe`` the program's path, which stays right even when the
    program later rewrites its own command line (as Node programs setting ``process.title`` do).
    """

    pid: int
    argv: list[str]
    start_ticks: int | None
    boot_id: str | None
    spawned_at: float
    session: str | None = None
    cmdline: list[str] | None = None
    exe: str | None = None


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (after the parenthesised command, which may contain spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1]]


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def process_identity(pid: int) -> tuple[int | None, str | None]:
    """The (start ticks, boot id) that identify a live pid, or Nones where /proc does not tell."""
    return _start_ticks(pid), _boot_id()


class ProcessLedger:
    """A persistent set of the agent processes we spawned. ``path=None`` keeps it in memory."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[int, LedgerEntry] = {}
        self._lines = 0  # lines in the file: compact when most of them are history
        if self.path is not None:
            try:
                raw = self.path.read_bytes()
            except OSError:
                raw = b""
            self._entries, self._lines = _parse(raw)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[LedgerEntry]:
        """What is recorded, oldest first."""
        return sorted(self._entries.values(), key=lambda e: e.spawned_at)

    def add(self, pid: int, argv: list[str], session: str | None = None) -> LedgerEntry:
        """Record a process right after it was spawned."""
        ticks, boot = process_identity(pid)
        entry = LedgerEntry(
            pid=pid,
            argv=list(argv),
            start_ticks=ticks,
            boot_id=boot,
            spawned_at=time.time(),
            session=session,
            cmdline=_cmdline(pid),
            exe=_exe(pid),
        )
        self._entries[pid] = entry
        self._append(_encode(entry))
        return entry

    def remove(self, pid: int) -> None:
        """Forget a process once it has been reaped (idempotent)."""
        if self._entries.pop(pid, None) is not None:
            self._append(_encode(_Gone(gone=pid)))

    def is_ours(self, entry: LedgerEntry) -> bool:
        """True only when the pid, its start time and boot, and its program all match a live process.

        The program matches when the command line is the argv we spawned or the one seen at spawn time,
        or when the executable is the one seen at spawn time.
        """
        if entry.start_ticks is None:
            return False
        ticks, boot = process_identity(entry.pid)
        if ticks != entry.start_ticks or boot != entry.boot_id:
            return False
        cmdline = _cmdline(entry.pid)
        if cmdline is not None and cmdline in (entry.argv, entry.cmdline):
            return True
        return entry.exe is not None and _exe(entry.pid) == entry.exe

    def reap_leftovers(self) -> list[LedgerEntry]:
        """SIGKILL the process group of every recorded process that is provably ours; forget the rest.

        Returns the entries that were killed. Called once at startup, before anything is spawned.
        """
        killed: list[LedgerEntry] = []
        for entry in self.entries():
            if self.is_ours(entry):
                # The agent was started in its own session, so its pid is its process group id; the
                # group holds whatever tools it had running.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(entry.pid, signal.SIGKILL)
                killed.append(entry)
        self._entries.clear()
        self._save()
        return killed

    def _append(self, line: bytes) -> None:
        if self.path is None:
            return
        if self._lines >= _COMPACT_MIN_LINES and self._lines >= 4 * len(self._entries):
            self._save()  # the new line is in the rewrite: _entries already holds the change
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)  # one small write of a whole line (O_APPEND: never interleaved)
            finally:
                os.close(fd)
            self._lines += 1
        except OSError:
            pass  # best effort, like _save

    def _save(self) -> None:
        """Rewrite the file with the live entries only (atomically: a crash leaves the old or the new)."""
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(b"".join(_encode(e) for e in self.entries()))
            os.replace(tmp, self.path)
            self._lines = len(self._entries)
        except OSError:
            # Best effort: losing the ledger loses only the reaping of leftovers after a crash.
            with contextlib.suppress(OSError):
                tmp.unlink()


_COMPACT_MIN_LINES = 256


class _Gone(msgspec.Struct, frozen=True):
    gone: int


def _encode(item: LedgerEntry | _Gone) -> bytes:
    return msgspec.json.encode(item) + b"\n"


def _parse(raw: bytes) -> tuple[dict[int, LedgerEntry], int]:
    """The live entries of a ledger file, and its line count. Never raises: a damaged ledger only costs
    the reaping of leftovers, and must never stop a start."""
    entries: dict[int, LedgerEntry] = {}
    if raw.lstrip().startswith(b"["):  # an earlier version's single JSON array
        try:
            return {e.pid: e for e in msgspec.json.decode(raw, type=list[LedgerEntry])}, 1
        except (msgspec.DecodeError, msgspec.ValidationError):
            return {}, 1
    lines = raw.splitlines()
    for line in lines:
        try:
            item = _decode_item(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # a torn last line (a crash mid-write), or damage: skip it
        if isinstance(item, _Gone):
            entries.pop(item.gone, None)
        else:
            entries[item.pid] = item
    return entries, len(lines)


class _AnyItem(msgspec.Struct):
    """Just enough of a line to tell a removal from an entry."""

    gone: int | None = None


def _decode_item(line: bytes) -> LedgerEntry | _Gone:
    if _probe.decode(line).gone is not None:
        return msgspec.json.decode(line, type=_Gone)
    return msgspec.json.decode(line, type=LedgerEntry)


_probe = msgspec.json.Decoder(_AnyItem)
