"""The workspace root: where a client may put a session's working directory, and what it may browse there.

One rule, used both when a session is created with a ``cwd`` and when the console's directory picker lists
directories (``GET /v1/workspace/dirs``): the path is resolved — relative to the root, ``..`` collapsed,
symbolic links followed — and must then lie inside the (resolved) root. A symbolic link inside the root
that points outside it is therefore refused, and is not listed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import msgspec

from turnstile.adapters.errors import ApiError

__all__ = ["DirEntry", "DirListing", "inside_workspace", "list_dirs"]

MAX_LISTED: Final = 500
"""At most this many directories are listed per request (``truncated`` says when there were more)."""


class DirEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A directory the picker may offer: its name and its path relative to the workspace root."""

    name: str
    path: str


class DirListing(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/workspace/dirs``: the directories directly inside ``path`` (relative to ``root``; ``""`` is
    the root itself), sorted by name; ``parent`` is None at the root."""

    root: str
    path: str
    parent: str | None
    dirs: list[DirEntry]
    truncated: bool = False


def inside_workspace(root: Path, cwd: str) -> Path:
    """``cwd`` resolved (relative to ``root``, which must be resolved already; symbolic links followed) and
    checked to lie inside ``root`` and to be a directory. Raises :class:`ApiError` 400 ``invalid_cwd`` or
    403 ``cwd_not_allowed``."""
    if "\x00" in cwd:
        raise ApiError(400, "invalid_cwd", "cwd must not contain NUL characters")
    try:
        path = (root / cwd).resolve()
    except (OSError, RuntimeError) as exc:
        raise ApiError(400, "invalid_cwd", f"cwd {cwd!r} cannot be resolved: {exc}") from None
    if not path.is_relative_to(root):
        raise ApiError(
            403,
            "cwd_not_allowed",
            f"cwd {cwd!r} is outside the workspace root {root} (after resolving '..' and symbolic links); "
            "start the server with --workspace-root to change it",
        )
    if not path.is_dir():
        raise ApiError(400, "invalid_cwd", f"cwd {cwd!r} is not a directory inside {root}")
    return path


def list_dirs(root: Path, rel: str, *, hidden: bool = False) -> DirListing:
    """The directories directly inside ``rel`` (checked with :func:`inside_workspace`). Entries whose
    resolved path leaves the root (a symbolic link pointing out) are left out; so are names starting with
    a dot unless ``hidden``."""
    base = inside_workspace(root, rel)
    found: list[DirEntry] = []
    truncated = False
    try:
        with os.scandir(base) as it:
            names = sorted((e.name for e in it), key=lambda n: (n.lower(), n))
    except OSError as exc:
        raise ApiError(400, "invalid_cwd", f"cannot list {rel or '.'!r}: {exc.strerror}") from None
    for name in names:
        if name.startswith(".") and not hidden:
            continue
        try:
            target = (base / name).resolve()
        except (OSError, RuntimeError):
            continue  # a symbolic-link loop or an unreadable entry: nothing to offer
        if not target.is_relative_to(root) or not target.is_dir():
            continue
        if len(found) >= MAX_LISTED:
            truncated = True
            break
        found.append(DirEntry(name=name, path=_relative(root, base / name)))
    here = _relative(root, base)
    parent = None if base == root else _relative(root, base.parent)
    return DirListing(root=str(root), path=here, parent=parent, dirs=found, truncated=truncated)


def _relative(root: Path, path: Path) -> str:
    """``path`` (resolved, or a direct child of a resolved directory) relative to ``root``, '/'-separated."""
    rel = path.relative_to(root).as_posix()
    return "" if rel == "." else rel
