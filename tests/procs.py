"""Processes: who is below us, what is left behind, and what a data directory's ledger still lists.

This test process makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), so an agent
process orphaned by a server that died (SIGKILL) is re-parented to us instead of to init and still shows
up in :func:`descendants`. "Nothing is orphaned" is then checkable: after a server has shut down, every
process below us that was not there before it started is a leftover.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path

__all__ = [
    "become_subreaper",
    "descendants",
    "kill_and_reap",
    "ledger_alive",
    "leftovers_after",
    "rss_bytes",
]

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux only; a no-op elsewhere)."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _proc_table() -> dict[int, tuple[int, str, str]]:
    table: dict[int, tuple[int, str, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        close = stat.rindex(")")
        fields = stat[close + 2 :].split()
        table[int(name)] = (int(fields[1]), fields[0], stat[stat.index("(") + 1 : close])
    return table


def descendants(root: int | None = None) -> dict[int, tuple[str, str]]:
    """Every process below ``root`` (default: this one): pid -> (state, command)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state, _cmd) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[str, str]] = {}
    todo = [os.getpid() if root is None else root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out[child] = (table[child][1], table[child][2])
                todo.append(child)
    return out


def _reap_zombies(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def kill_and_reap(pids: list[int]) -> None:
    """SIGKILL ``pids`` and reap the ones that are our children (bounded: 2 s)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)


def leftovers_after(
    before: set[int], wait_s: float = 3.0, *, ignore: set[int] | None = None
) -> dict[int, str]:
    """Live descendants not in ``before`` (nor ``ignore``), after waiting up to ``wait_s`` for them to go.

    Zombies are dead: they are reaped (as the subreaper we inherit orphans' zombies), never reported.
    Whatever is still alive at the deadline is reported, then killed so the next test starts clean.
    """
    skip = before | (ignore or set())
    deadline = time.monotonic() + wait_s
    while True:
        found = {pid: info for pid, info in descendants().items() if pid not in skip}
        _reap_zombies([pid for pid, (state, _cmd) in found.items() if state == "Z"])
        alive = {pid: f"{cmd} (state {state})" for pid, (state, cmd) in found.items() if state != "Z"}
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if alive:
        kill_and_reap(list(alive))
    return alive


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def ledger_alive(data_dir: Path) -> list[int]:
    """Pids the data directory's process ledger lists that are still the same live process."""
    path = data_dir / "processes.json"
    try:
        text = path.read_bytes()
    except OSError:
        return []
    # One JSON object per line: an entry per spawn, {"gone": pid} per reap (or one JSON array).
    listed: dict[int, dict[str, object]] = {}
    for line in text.splitlines() if not text.lstrip().startswith(b"[") else [text]:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        for obj in item if isinstance(item, list) else [item]:
            if isinstance(obj, dict) and isinstance(obj.get("gone"), int):
                listed.pop(obj["gone"], None)
            elif isinstance(obj, dict) and isinstance(obj.get("pid"), int):
                listed[obj["pid"]] = obj
    alive = []
    for pid, entry in listed.items():
        ticks = _start_ticks(pid)
        if ticks is None:
            continue
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state != "Z" and (entry.get("start_ticks") is None or entry.get("start_ticks") == ticks):
            alive.append(pid)
    return alive


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (default: this process), from /proc."""
    try:
        text = Path(f"/proc/{pid or 'self'}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
