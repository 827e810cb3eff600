"""Pure helpers for running the Claude Code CLI in stream-json mode.

Nothing here spawns a process or touches trio: these functions locate the binary, build its
argv and environment, and encode the lines Turnstile writes on the CLI's stdin. Keeping them
pure makes them trivial to unit-test and lets the runtime, the tests and the recording script
share exactly one definition of "how we start claude".
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from turnstile.engine.errors import AgentBinaryNotFound
from turnstile.engine.protocol import encode_stdin, interrupt_request, user_input

__all__ = [
    "BUNDLED_SDK_PACKAGE",
    "CLAUDE_BIN_ENV",
    "SDK_REQUIREMENT",
    "BinarySource",
    "LocatedBinary",
    "bundled_claude_binary",
    "claude_argv",
    "find_claude_binary",
    "interrupt_line",
    "locate_claude_binary",
    "offline_env",
    "user_message_line",
]

#: Environment variable that names the CLI binary (second in the order of preference).
CLAUDE_BIN_ENV = "TURNSTILE_CLAUDE_BIN"
#: Import name of the PyPI package whose wheel bundles the native CLI.
BUNDLED_SDK_PACKAGE = "claude_agent_sdk"
#: The pinned requirement we tell users to install; its wheel ships CLI 2.1.327.
SDK_REQUIREMENT = "claude-agent-sdk==0.2.184"

_EXE_NAME = "claude.exe" if sys.platform == "win32" else "claude"

BinarySource = Literal["flag", "env", "path", "bundled"]
"""Where :func:`locate_claude_binary` found the CLI: ``--claude-bin`` (or a config's ``binary``),
``$TURNSTILE_CLAUDE_BIN``, ``claude`` on PATH, or the ``claude-agent-sdk`` wheel."""


def _is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _resolve(candidate: str, search_path: str | None) -> str | None:
    """Resolve a user-supplied binary: a path is checked as is, a bare name is looked up on PATH."""
    expanded = os.path.expanduser(candidate)
    if os.sep in expanded or (os.altsep is not None and os.altsep in expanded):
        return os.path.abspath(expanded) if _is_executable_file(expanded) else None
    return shutil.which(expanded, path=search_path)


def _bundled_binary() -> tuple[str | None, str]:
    """Locate the CLI shipped inside the installed ``claude_agent_sdk`` wheel.

    ``find_spec`` on a *top-level* package only consults the import machinery's finders; it does
    not execute the package's ``__init__`` (which pulls in mcp, jsonschema, anyio, ...). That keeps
    binary discovery cheap and free of side effects.

    Returns the path (or None) and a short note for the "what was searched" error message.
    """
    try:
        spec = importlib.util.find_spec(BUNDLED_SDK_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None, f"bundled in {BUNDLED_SDK_PACKAGE} (package not installed)"
    tried: list[str] = []
    for location in spec.submodule_search_locations:
        candidate = str(Path(location) / "_bundled" / _EXE_NAME)
        tried.append(candidate)
        if _is_executable_file(candidate):
            return candidate, candidate
    return None, f"bundled in {BUNDLED_SDK_PACKAGE} (no executable at {', '.join(tried)})"


class LocatedBinary(NamedTuple):
    """A CLI executable and where it was found (:func:`locate_claude_binary`)."""

    path: str
    source: BinarySource


def find_claude_binary(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Return the path of the Claude Code CLI executable to run (see :func:`locate_claude_binary`).

    Raises:
        AgentBinaryNotFound: nothing usable was found; the message lists what was searched and
            how to fix it.
    """
    return locate_claude_binary(explicit, env).path


def locate_claude_binary(explicit: str | None = None, env: Mapping[str, str] | None = None) -> LocatedBinary:
    """Find the Claude Code CLI executable, and say where it came from.

    Order of preference:

    1. ``explicit`` (e.g. the ``--claude-bin`` flag): a path, or a bare name looked up on PATH;
    2. the ``TURNSTILE_CLAUDE_BIN`` environment variable (same rules);
    3. ``claude`` on ``PATH``;
    4. the binary bundled in the installed ``claude-agent-sdk`` wheel.

    An explicit choice (1 or 2) that does not resolve is an error rather than a silent fallback:
    the user asked for that binary, and quietly running another version would be worse.

    Args:
        explicit: binary requested by the caller, or None.
        env: environment to read ``TURNSTILE_CLAUDE_BIN`` and ``PATH`` from; defaults to
            ``os.environ``.

    Raises:
        AgentBinaryNotFound: nothing usable was found; the message lists what was searched and
            how to fix it.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    # An explicitly passed env without PATH must not fall back to our own os.environ PATH.
    search_path = environ.get("PATH", "")
    fix = (
        f"Install the CLI with `pip install {SDK_REQUIREMENT}` (its wheel bundles it), "
        f"put `claude` on PATH, or pass --claude-bin /path/to/claude (or set {CLAUDE_BIN_ENV})."
    )

    if explicit:
        found = _resolve(explicit, search_path)
        if found is None:
            raise AgentBinaryNotFound(
                f"Claude Code CLI not found: --claude-bin {explicit!r} is not an executable file "
                f"(nor a command on PATH). {fix}"
            )
        return LocatedBinary(found, "flag")

    from_env = environ.get(CLAUDE_BIN_ENV)
    if from_env:
        found = _resolve(from_env, search_path)
        if found is None:
            raise AgentBinaryNotFound(
                f"Claude Code CLI not found: {CLAUDE_BIN_ENV}={from_env!r} is not an executable file "
                f"(nor a command on PATH). {fix}"
            )
        return LocatedBinary(found, "env")

    on_path = shutil.which(_EXE_NAME, path=search_path) if search_path else None
    if on_path is not None:
        return LocatedBinary(on_path, "path")

    bundled, bundled_note = _bundled_binary()
    if bundled is not None:
        return LocatedBinary(bundled, "bundled")

    searched = [
        "--claude-bin (not given)",
        f"${CLAUDE_BIN_ENV} (not set)",
        f"`{_EXE_NAME}` on PATH (not found)",
        bundled_note,
    ]
    raise AgentBinaryNotFound(f"Claude Code CLI not found. Searched: {'; '.join(searched)}. {fix}")


def bundled_claude_binary() -> str | None:
    """The CLI bundled in the installed ``claude-agent-sdk`` wheel, or None (whatever is on PATH)."""
    return _bundled_binary()[0]


def claude_argv(
    binary: str,
    *,
    model: str | None,
    allowed_tools: Sequence[str],
    partial_messages: bool = True,
    resume: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Build the argv that starts the CLI as a long-lived stream-json process.

    ``--verbose`` is mandatory: ``-p`` with ``--output-format stream-json`` is rejected without it.
    ``--allowedTools`` is needed because ``-p`` mode has nobody to answer permission prompts.

    Args:
        binary: path of the CLI (see :func:`find_claude_binary`).
        model: model name passed as ``--model``; None keeps the CLI's default.
        allowed_tools: tool names pre-approved for this process; empty omits the flag.
        partial_messages: add ``--include-partial-messages`` (token-level ``stream_event`` lines).
        resume: session id to continue with ``--resume``.
        extra_args: appended verbatim at the end.
    """
    argv = [
        binary,
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    if partial_messages:
        argv.append("--include-partial-messages")
    if model:
        argv += ["--model", model]
    if allowed_tools:
        argv += ["--allowedTools", ",".join(allowed_tools)]
    if resume:
        argv += ["--resume", resume]
    argv.extend(extra_args)
    return argv


def offline_env(base_url: str, home: str) -> dict[str, str]:
    """Environment additions that make the CLI talk only to ``base_url`` (e.g. a fake model API).

    The result is meant to be layered over a base environment; it is not a complete environment.
    ``HOME`` points at a scratch directory so no config, credentials or session history of the
    machine leak into (or out of) the run.

    Args:
        base_url: root URL of the Messages API, e.g. ``http://127.0.0.1:PORT``.
        home: directory to use as the CLI's ``HOME``.
    """
    return {
        "ANTHROPIC_BASE_URL": base_url,
        # Any non-empty key works against a fake API; it keeps the CLI from looking for a login.
        "ANTHROPIC_API_KEY": "test-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "HOME": home,
    }


def user_message_line(text: str) -> bytes:
    """Encode one user turn as a stdin line (JSON + ``\\n``); see :func:`engine.protocol.user_input`.

    ``session_id`` is ``"default"`` as in the official SDK; the CLI ignores it and reports its own.
    """
    return encode_stdin(user_input(text))


def interrupt_line(request_id: str) -> bytes:
    """Encode an ``interrupt`` control request as a stdin line (JSON + ``\\n``).

    The CLI answers with a ``control_response`` carrying the same ``request_id``.
    """
    return encode_stdin(interrupt_request(request_id))
