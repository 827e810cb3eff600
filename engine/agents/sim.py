"""Turnstile's simulated agent: a stand-in for the Claude Code CLI in stream-json mode.

Run it as ``python -m turnstile.engine.agents.sim [flags]`` (or ``turnstile sim``). It reads and writes
the CLI's ``stream-json`` protocol on stdin/stdout exactly as
``claude -p --input-format stream-json --output-format stream-json --verbose`` does, so
Turnstile runs anywhere with no credentials, and tests can inject every fault a real CLI
shows. Standard library only, so it starts in a few tens of milliseconds.

Behaviour shared with the real CLI (checked against recordings of CLI 2.1.29 / 2.1.220 and a
live 2.1.327):

* Nothing is printed until the first user message arrives on stdin (control responses
  excepted). Messages written while a turn runs are queued and served in order.
* Each turn prints ``system/init`` (with ``session_id``, ``cwd``, ``model``, ``tools``,
  ``claude_code_version: "sim-0.1"``, ``uuid``), then the answer, then one ``result``
  (``success``; ``total_cost_usd`` is the running total of the process, ``usage`` is the
  turn's; ``terminal_reason: "completed"``). The session id is a uuid kept across turns.
* One ``assistant`` line per content block; blocks of one API message repeat its
  ``message.id``. A tool call is an assistant ``tool_use`` block (``Bash``), then - once the
  tool has "run" - a ``user`` line with the ``tool_result``, then the next API message.
* ``--include-partial-messages`` adds ``stream_event`` lines: ``message_start``,
  ``content_block_start``, ``content_block_delta`` (``text_delta``, ``thinking_delta``,
  ``signature_delta``, ``input_json_delta``), ``content_block_stop``, ``message_delta``,
  ``message_stop``. The full per-block ``assistant`` line comes after the block's last delta
  and before its ``content_block_stop``. Each API call is announced by a ``system/status``
  line (``status: "requesting"``), as 2.1.220 and 2.1.327 do in this mode.
* ``--replay-user-messages`` echoes each stdin user message back (``isReplay: true``) just
  before the first output of its answer, as 2.1.220 does.
* Control requests on stdin are handled at once, even mid-turn: ``interrupt`` is answered with
  ``{"still_queued": [uuids of queued messages]}`` (``cancel_queued: true`` drops them), then
  the turn ends as in 2.1.220/2.1.327: the partial assistant block (``aborted: true``), a user
  line ``[Request interrupted by user]``, with partial messages the synthetic
  ``content_block_stop``/``message_delta``/``message_stop`` that close the abandoned API
  message, and a ``result`` ``error_during_execution`` with ``is_error: true`` and
  ``terminal_reason: "aborted_streaming"``. If a tool was running, a failed ``tool_result`` and
  a user ``[Request interrupted by user for tool use]`` come instead of the plain line and the
  reason is ``aborted_tools`` (this shape is a best guess: no recording shows it).
  ``initialize``, ``set_model``, ``set_permission_mode`` and ``mcp_status`` are answered with
  success; any other subtype with an error response ``Unsupported control request subtype: X``
  (``error_code: "unsupported_request"``), as 2.1.327 does.
* A stdin line that is not a JSON object: ``Error parsing streaming input line ...`` on
  stderr, exit 1.
* stdin EOF: the running turn and every queued message are still served (the official SDK
  closes stdin right after a one-shot prompt), then the process exits: 0, or 1 if the last
  result had ``is_error: true``. With nothing to do it exits within milliseconds. A hung turn
  (``hang=``) exits 0 at once on EOF.
* SIGTERM exits 143 at once (SIGINT 130). stdout is flushed after every line.
* ``--resume ID`` reuses ID as the session id (``--fork-session`` picks a new one). An ID that
  starts with ``lost-`` fails like 2.1.220/2.1.327: at startup, without reading stdin, one lone
  ``result`` ``error_during_execution`` (``num_turns: 0``, reason in ``errors``) on stdout,
  ``No conversation found with session ID: ID`` on stderr, exit 1.
* ``-p`` with ``--output-format stream-json`` but no ``--verbose`` is refused like the real CLI.
* ``--max-turns N``: a turn that would need more API calls ends with ``error_max_turns``.

Flags
-----
Accepted like the real CLI, so one argv builder serves both: ``-p/--print``,
``--input-format``, ``--output-format``, ``--verbose``, ``--include-partial-messages``,
``--replay-user-messages``, ``--model M``, ``--allowedTools X`` (also variadic or
comma-separated), ``--tools X``, ``--resume ID``, ``--session-id ID``, ``--fork-session``,
``--permission-mode M``, ``--max-turns N``; the other flags the official SDK passes
(``--system-prompt``, ``--mcp-config``, ``--setting-sources``, ...) are accepted and ignored.
Unknown flags are ignored with a note on stderr.

Simulator-only flags:

``--speed F``
    Multiplies every simulated delay. 0 = no sleeps at all (tests, benchmarks); 1.0 (default)
    = realistic: 20-40 ms before ``init``, 0.2-0.5 s before the first token of each API call,
    20-40 ms per text delta of a word or so.
``--slow-start S``
    Sleep S seconds (not scaled by ``--speed``) before reading stdin at all: a slow-to-warm
    process.
``--crash-at-start``
    Print a message on stderr and exit 1 immediately.
``--ignore-interrupt``
    Never acknowledge an interrupt (no ``control_response``) and keep going.
``--seed N``
    Seed for generated text and timing jitter (ids and uuids stay random).

Prompt directives
-----------------
Write ``[[sim key=value key2="quoted value" flag]]`` anywhere in a prompt (several keys per
bracket, several brackets per prompt; later keys win). The bracket is removed before the
prompt is echoed in the default answer. A bare key takes the default in parentheses.

===================== ====================================================================
``say="..."``         answer with exactly this text (``\\"`` escapes a quote)
``text=N``            answer with N generated words
``tokens=N``          stream the answer as exactly N text deltas (fewer if it has fewer
                      characters); alone, it also means "N generated words"
``token_ms=MS``       delay before each delta after the first (default 20-40 ms)
``ttft_ms=MS``        delay before the first token of each API call (default 200-500 ms)
``thinking=N``        a thinking block of N deltas before the answer (3)
``tools=N``           N ``Bash`` tool calls, one per API message, then the answer (1)
``tool_s=S``          seconds each tool call "runs" (default 1)
``crash=start|mid``   exit 1 with a stderr line: right after ``init`` / halfway through the
                      answer, without a result (mid)
``kill=mid``          SIGKILL itself halfway through the answer (mid)
``hang=first|mid``    stop emitting before the first token / halfway through the answer and
                      never finish (``hang=start``: before ``init``, printing nothing at all);
                      interrupt, stdin EOF and SIGTERM still work (mid)
``garbage``           halfway through: a non-JSON noise line and a malformed ``{`` line
``oversized=BYTES``   halfway through: one valid JSON line (``system/sim_oversized``) of
                      exactly BYTES bytes before its newline (1 MiB + 1)
``nonutf8``           halfway through: a JSON-shaped line containing invalid UTF-8 bytes
``exit0``             exit 0 halfway through, without a result
``truncate``          halfway through: write half of a JSON line without newline, exit 0
``stderr_flood=N``    write N lines to stderr right after ``init`` (1000)
``api_error=CODE``    end the turn like a real API error: for 408/409/429/5xx first
                      ``retries`` ``system/api_retry`` lines with growing backoff (other
                      codes fail at once, as 2.1.327 retries a 400 silently), then a
                      synthetic ``assistant`` (model ``<synthetic>``, ``error``, text
                      ``API Error: CODE ...``) and a ``result`` ``success`` with
                      ``is_error: true``, ``terminal_reason: "api_error"``,
                      ``api_error_status: CODE`` (500)
``retries=N``         number of ``api_retry`` lines before the final API error (10)
``replay=NAME``       emit the first turn of a bundled recording (``recordings/``, by file
                      name or its last ``__`` part, e.g. ``tool-use-turn``) line by line,
                      byte for byte minus the recorder's ``_t`` field, paced by ``_t`` times
                      ``--speed`` (30 ms per line when absent); no sim ``init`` is added
``ignore_interrupt``  this turn ignores interrupts like ``--ignore-interrupt``
===================== ====================================================================

With no directive the answer is a short friendly sentence that echoes a few words of the
prompt. Unknown keys and bad values are reported on stderr and ignored.

Not simulated (use ``replay=`` or the real CLI for these): ``rate_limit_event``,
``system/task_*`` and ``thinking_tokens`` lines, 2.1.327's ``command_lifecycle`` lines, the
many extra fields of newer builds (``ttft_ms``, ``subagent_stats``, ``api_message_id`` ...),
shuffled key order in ``result``, permission prompts (``can_use_tool``), hooks, MCP, and
compaction. ``--allowedTools`` is accepted but every tool call "runs".

Exit codes
----------
0 stdin closed (last result not an error), ``exit0``, ``truncate``, EOF during a hang;
1 stdin closed after an ``is_error`` result, ``crash=``, ``--crash-at-start``, resume lost,
bad stdin line, ``-p`` without ``--verbose``; 143 SIGTERM; 130 SIGINT; -9 ``kill=mid``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, Final, NoReturn

__all__ = ["RECORDINGS_DIR", "VERSION", "Directives", "main", "parse_directives"]

JSON = dict[str, Any]

#: What ``claude_code_version`` says in ``system/init``.
VERSION = "sim-0.1"
#: Model name used when ``--model`` is not given.
DEFAULT_MODEL = "claude-sim-1"
#: Bundled recordings that ``replay=NAME`` can play back.
RECORDINGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recordings")

_DEFAULT_TOOLS = ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "WebFetch", "WebSearch"]
_SLASH_COMMANDS = ["compact", "context", "cost", "init", "review"]
_AGENTS = ["general-purpose", "Explore", "Plan"]
_CAPABILITIES = ["interrupt_receipt_v1", "interrupt_cancel_queued_v1"]

_INTERRUPTED = "[Request interrupted by user]"
_INTERRUPTED_TOOL = "[Request interrupted by user for tool use]"
# Verbatim from the 2.1.220 and 2.1.327 interrupted results.
_EDE_DIAGNOSTIC = "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"

# Sonnet-like prices, so costs look plausible and rise with every turn.
_INPUT_PRICE = 3e-6
_OUTPUT_PRICE = 15e-6

_WORD_TEXT = (
    "turnstile stream token process pool session quiet bright steady gentle river signal window "
    "lantern harbor meadow compass garden thread simple careful patient kind clear warm small "
    "answer question moment journey pattern rhythm balance detail light morning evening cloud "
    "breeze pebble orchard ribbon canvas melody puzzle beacon anchor voyage summit valley echo"
)
_WORDS = tuple(_WORD_TEXT.split())


# --------------------------------------------------------------------------------------------
# small helpers


def _uuid() -> str:
    return str(uuid.uuid4())


def _now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _dumps(obj: object) -> bytes:
    # Compact, non-ASCII kept raw: the real CLI (JSON.stringify) writes UTF-8 text as is.
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. "\ud800" in a prompt) cannot be UTF-8: escape like JSON.stringify.
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _err(message: str) -> None:
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed: nothing useful left to do with the note


def _sentences(rng: random.Random, n_words: int) -> str:
    """N pleasant generated words, capitalised and punctuated into sentences."""
    words: list[str] = []
    sentence_left = 0
    for i in range(n_words):
        word = rng.choice(_WORDS)
        if sentence_left == 0:
            word = word.capitalize()
            sentence_left = rng.randint(6, 12)
        sentence_left -= 1
        if sentence_left == 0 or i == n_words - 1:
            word += "."
        words.append(word)
    return " ".join(words)


def _word_pieces(text: str) -> list[str]:
    """Split into deltas of one word each, whitespace kept in front ("a b" -> "a", " b")."""
    pieces: list[str] = []
    current = ""
    for ch in text:
        if ch.isspace() and current.strip():
            pieces.append(current)
            current = ch
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


def _even_pieces(text: str, n: int) -> list[str]:
    """Split into exactly ``min(n, len(text))`` pieces of near-equal length."""
    n = min(n, len(text))
    if n <= 0:
        return []
    size, extra = divmod(len(text), n)
    pieces: list[str] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _prompt_text(message: JSON) -> str:
    """The text of a stdin user message: a string, or the text blocks of a list."""
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


# --------------------------------------------------------------------------------------------
# directives


def _scan_bracket(s: str, k: int) -> tuple[dict[str, str | bool], int]:
    """Tokenise ``key=value key2="v w" flag]]`` starting at ``k``; return tokens and end index.

    The end index is -1 when the bracket is never closed (the text is then left alone).
    """
    tokens: dict[str, str | bool] = {}
    n = len(s)
    while True:
        while k < n and s[k].isspace():
            k += 1
        if k >= n:
            return {}, -1
        if s.startswith("]]", k):
            return tokens, k + 2
        start = k
        while k < n and not s[k].isspace() and s[k] != "=" and not s.startswith("]]", k):
            k += 1
        key = s[start:k]
        if k < n and s[k] == "=":
            k += 1
            if k < n and s[k] in "\"'":
                quote = s[k]
                k += 1
                chars: list[str] = []
                while k < n and s[k] != quote:
                    if s[k] == "\\" and k + 1 < n:
                        k += 1
                    chars.append(s[k])
                    k += 1
                if k >= n:
                    return {}, -1
                k += 1
                tokens[key] = "".join(chars)
            else:
                start = k
                while k < n and not s[k].isspace() and not s.startswith("]]", k):
                    k += 1
                tokens[key] = s[start:k]
        else:
            tokens[key] = True


def parse_directives(prompt: str) -> tuple[dict[str, str | bool], str]:
    """Extract every ``[[sim ...]]`` bracket from a prompt.

    Returns the raw key/value pairs (a bare key maps to True) and the prompt with the brackets
    removed. ``[[simple]]`` or an unclosed bracket is not a directive and stays in the text.
    """
    raw: dict[str, str | bool] = {}
    parts: list[str] = []
    i = 0
    while True:
        j = prompt.find("[[sim", i)
        if j < 0:
            parts.append(prompt[i:])
            break
        k = j + len("[[sim")
        if k < len(prompt) and not (prompt[k].isspace() or prompt.startswith("]]", k)):
            parts.append(prompt[i:k])
            i = k
            continue
        tokens, end = _scan_bracket(prompt, k)
        if end < 0:
            parts.append(prompt[i:])
            break
        parts.append(prompt[i:j])
        raw.update(tokens)
        i = end
    return raw, "".join(parts)


def _to_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _to_float(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError("must be >= 0")
    return number


def _choice(*allowed: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return convert


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be a flag (true/false)")


# key -> (attribute, converter of the value, value used when the key is given bare).
# A bare key with no default (None) is an error: it needs a value.
_DIRECTIVE_SPEC: dict[str, tuple[str, Callable[[str], object], object]] = {
    "say": ("say", str, None),
    "text": ("text_words", _to_int, None),
    "tokens": ("tokens", _to_int, None),
    "token_ms": ("token_ms", _to_float, None),
    "ttft_ms": ("ttft_ms", _to_float, None),
    "thinking": ("thinking", _to_int, 3),
    "tools": ("tools", _to_int, 1),
    "tool_s": ("tool_s", _to_float, None),
    "crash": ("crash", _choice("start", "mid"), "mid"),
    "kill": ("kill", _choice("mid"), "mid"),
    "hang": ("hang", _choice("start", "first", "mid"), "mid"),
    "garbage": ("garbage", _flag, True),
    "oversized": ("oversized", _to_int, 1024 * 1024 + 1),
    "nonutf8": ("nonutf8", _flag, True),
    "exit0": ("exit0", _flag, True),
    "truncate": ("truncate", _flag, True),
    "stderr_flood": ("stderr_flood", _to_int, 1000),
    "api_error": ("api_error", _to_int, 500),
    "retries": ("retries", _to_int, None),
    "replay": ("replay", str, None),
    "ignore_interrupt": ("ignore_interrupt", _flag, True),
}


class Directives:
    """What one turn should do, from the ``[[sim ...]]`` brackets of its prompt."""

    def __init__(self) -> None:
        self.say: str | None = None
        self.text_words: int | None = None
        self.tokens: int | None = None
        self.token_ms: float | None = None
        self.ttft_ms: float | None = None
        self.thinking: int = 0
        self.tools: int = 0
        self.tool_s: float = 1.0
        self.crash: str | None = None
        self.kill: str | None = None
        self.hang: str | None = None
        self.garbage: bool = False
        self.oversized: int | None = None
        self.nonutf8: bool = False
        self.exit0: bool = False
        self.truncate: bool = False
        self.stderr_flood: int = 0
        self.api_error: int | None = None
        self.retries: int | None = None
        self.replay: str | None = None
        self.ignore_interrupt: bool = False

    @classmethod
    def from_raw(cls, raw: Mapping[str, str | bool]) -> tuple[Directives, list[str]]:
        """Convert raw pairs from :func:`parse_directives`; returns the directives and warnings."""
        directives = cls()
        warnings: list[str] = []
        for key, value in raw.items():
            spec = _DIRECTIVE_SPEC.get(key)
            if spec is None:
                warnings.append(f"unknown directive {key!r} ignored")
                continue
            attribute, convert, bare = spec
            if value is True:
                if bare is None:
                    warnings.append(f"directive {key!r} needs a value; ignored")
                    continue
                converted = bare
            else:
                try:
                    converted = convert(str(value))
                except ValueError as exc:
                    warnings.append(f"directive {key}={value!r} ignored: {exc}")
                    continue
            setattr(directives, attribute, converted)
        return directives, warnings


# --------------------------------------------------------------------------------------------
# options


class Options:
    """Command-line options, typed."""

    def __init__(self, ns: argparse.Namespace, unknown: list[str]) -> None:
        self.print_mode: bool = bool(ns.print_mode)
        self.input_format: str = str(ns.input_format)
        self.output_format: str = str(ns.output_format)
        self.verbose: bool = bool(ns.verbose)
        self.partial: bool = bool(ns.include_partial_messages)
        self.replay_user: bool = bool(ns.replay_user_messages)
        self.model: str = str(ns.model)
        self.allowed_tools: list[str] = [
            name for value in ns.allowed_tools for name in str(value).split(",") if name.strip()
        ]
        self.tools: list[str] = list(_DEFAULT_TOOLS)
        if ns.tools is not None and ns.tools != "default":
            self.tools = [name for name in str(ns.tools).split(",") if name.strip()]
        self.resume: str | None = None if ns.resume is None else str(ns.resume)
        self.session_id: str | None = None if ns.session_id is None else str(ns.session_id)
        self.fork_session: bool = bool(ns.fork_session)
        self.permission_mode: str = str(ns.permission_mode)
        self.max_turns: int | None = None if ns.max_turns is None else int(ns.max_turns)
        self.speed: float = float(ns.speed)
        self.slow_start: float = float(ns.slow_start)
        self.crash_at_start: bool = bool(ns.crash_at_start)
        self.ignore_interrupt: bool = bool(ns.ignore_interrupt)
        self.seed: int | None = None if ns.seed is None else int(ns.seed)
        self.unknown: list[str] = unknown


# Real CLI flags that take a value and that the sim accepts without using.
_IGNORED_VALUE_FLAGS = (
    "--system-prompt",
    "--system-prompt-file",
    "--append-system-prompt",
    "--max-budget-usd",
    "--task-budget",
    "--fallback-model",
    "--betas",
    "--permission-prompt-tool",
    "--settings",
    "--add-dir",
    "--mcp-config",
    "--resume-session-at",
    "--resume-drops-turn",
    "--setting-sources",
    "--plugin-dir",
    "--thinking",
    "--thinking-display",
    "--max-thinking-tokens",
    "--effort",
    "--json-schema",
    "--agents",
)
# Real CLI boolean flags that the sim accepts without using.
_IGNORED_BOOL_FLAGS = (
    "--include-hook-events",
    "--strict-mcp-config",
    "--session-mirror",
    "--dangerously-skip-permissions",
    "--debug-to-stderr",
)


def _non_negative_float(value: str) -> float:
    try:
        return _to_float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number >= 0") from None


def _doc_section(title: str) -> str:
    """The body of one section of this module's docstring (a title underlined with dashes)."""
    doc = __doc__ or ""  # (None under python -OO)
    header = f"\n{title}\n{'-' * len(title)}\n"
    if header not in doc:
        return f"(see the docstring of {__name__})"
    body = doc[doc.index(header) + len(header) :]
    ends = [i for i in (body.find(f"\n\n{t}\n") for t in _DOC_SECTIONS) if i >= 0]
    return (body[: min(ends)] if ends else body).strip("\n")


_DOC_SECTIONS: Final = ("Flags", "Prompt directives", "Exit codes")


class _DirectivesHelp(argparse.Action):
    """``--help-directives``: print the prompt directive table and exit, as ``--help`` does."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print("Prompt directives\n-----------------\n" + _doc_section("Prompt directives"))
        parser.exit()


def build_parser(prog: str = "python -m turnstile.engine.agents.sim") -> argparse.ArgumentParser:
    """The sim's argument parser: a short ``--help``; ``--help-directives`` prints the directive table.

    The whole story (behaviour shared with the real CLI, what is not simulated) is this module's docstring.
    """
    summary = (__doc__ or "").split("\n\n", 1)[0]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{summary}\nIt speaks the CLI's stream-json protocol on stdin/stdout, as\n"
        "`claude -p --input-format stream-json --output-format stream-json --verbose` does.",
        epilog="Prompt directives script a turn or inject a fault: write [[sim key=value ...]] in a prompt,\n"
        'e.g. "hello [[sim tools=3 tool_s=0.5]]" or "[[sim hang=mid]]". The table: --help-directives.\n'
        "Everything else (behaviour shared with the real CLI, what is not simulated):\n"
        "python -m pydoc turnstile.engine.agents.sim\n\n"
        "exit status (the Claude Code CLI's):\n" + _doc_section("Exit codes").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--help-directives", action=_DirectivesHelp, help="print the prompt directive table and exit"
    )
    cli = parser.add_argument_group("Claude Code CLI flags (accepted like the real CLI)")
    cli.add_argument("-p", "--print", action="store_true", dest="print_mode", help="print mode")
    cli.add_argument(
        "--input-format", default="stream-json", metavar="FORMAT", help="only stream-json is spoken"
    )
    cli.add_argument(
        "--output-format", default="stream-json", metavar="FORMAT", help="only stream-json is spoken"
    )
    cli.add_argument("--verbose", action="store_true", help="required with -p and stream-json")
    cli.add_argument("--include-partial-messages", action="store_true", help="emit stream_event lines")
    cli.add_argument("--replay-user-messages", action="store_true", help="echo stdin user messages")
    cli.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="M", help=f"model name (default {DEFAULT_MODEL})"
    )
    cli.add_argument(
        "--allowedTools",
        "--allowed-tools",
        dest="allowed_tools",
        metavar="TOOLS",
        nargs="+",
        action="extend",
        default=[],
        help="accepted; tools always run",
    )
    cli.add_argument(
        "--disallowedTools",
        "--disallowed-tools",
        metavar="TOOLS",
        nargs="+",
        action="extend",
        default=[],
        help="accepted, no effect",
    )
    cli.add_argument(
        "--tools", metavar="TOOLS", help="comma-separated tool list for system/init ('default' = all)"
    )
    cli.add_argument("--resume", "-r", metavar="ID", help="session id to continue; ids starting 'lost-' fail")
    cli.add_argument("--session-id", metavar="ID", help="use this session id")
    cli.add_argument("--fork-session", action="store_true", help="with --resume: use a new session id")
    cli.add_argument("--continue", "-c", action="store_true", dest="continue_", help="accepted, no effect")
    cli.add_argument("--permission-mode", default="default", metavar="MODE", help="reported in system/init")
    cli.add_argument(
        "--max-turns", type=int, metavar="N", help="API calls allowed per turn (error_max_turns)"
    )
    for name in _IGNORED_VALUE_FLAGS:
        cli.add_argument(name, help=argparse.SUPPRESS)
    for name in _IGNORED_BOOL_FLAGS:
        cli.add_argument(name, action="store_true", help=argparse.SUPPRESS)
    sim = parser.add_argument_group("simulator flags")
    sim.add_argument(
        "--speed", type=_non_negative_float, default=1.0, metavar="F", help="delay multiplier; 0 = none"
    )
    sim.add_argument(
        "--slow-start",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="seconds before reading stdin (not scaled by --speed)",
    )
    sim.add_argument("--crash-at-start", action="store_true", help="exit 1 at once")
    sim.add_argument("--ignore-interrupt", action="store_true", help="never acknowledge interrupts")
    sim.add_argument("--seed", type=int, metavar="N", help="seed for generated text and jitter")
    return parser


# --------------------------------------------------------------------------------------------
# output


class _Output:
    """Line writer shared by the turn thread and the stdin thread; one lock, flush per line."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._stream = sys.stdout.buffer

    def line(self, obj: object) -> None:
        self.raw(_dumps(obj) + b"\n")

    def raw(self, data: bytes) -> None:
        with self.lock:
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):
                # Nobody reads our stdout any more: a real CLI dies of EPIPE here too.
                os._exit(1)


class _Interrupted(Exception):
    """Raised inside a turn when an interrupt request arrived."""


# --------------------------------------------------------------------------------------------
# the process


class Sim:
    """One simulated CLI process: session state, the stdin reader and the turn loop."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.out = _Output()
        self.rng = random.Random(opts.seed)
        if opts.resume and not opts.fork_session:
            self.session_id = opts.resume
        elif opts.session_id:
            self.session_id = opts.session_id
        else:
            self.session_id = _uuid()
        self.model = opts.model
        self.permission_mode = opts.permission_mode
        self.total_cost = 0.0
        self.model_usage: dict[str, JSON] = {}
        self.last_result_is_error = False
        #: Set by the stdin thread when an interrupt must end the running turn.
        self.interrupt = threading.Event()
        # Guards the queue and the turn flags below. Lock order: _cond, then out.lock; the
        # turn thread never takes _cond while holding out.lock, so there is no cycle.
        self._cond = threading.Condition()
        self._queue: deque[JSON] = deque()
        self._eof = False
        self._turn_active = False
        self._ignore_interrupt = opts.ignore_interrupt
        self._hanging = False

    # ---- lifecycle

    def exit_now(self, code: int) -> NoReturn:
        """Exit at once without cutting a line another thread is writing."""
        with self.out.lock:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os._exit(code)

    def serve(self) -> int:
        """Read stdin on a thread and run turns until stdin is closed and drained."""
        reader = threading.Thread(target=self._read_stdin, name="sim-stdin", daemon=True)
        reader.start()
        while True:
            message = self._next_message()
            if message is None:
                return 1 if self.last_result_is_error else 0
            try:
                _Turn(self, message).run()
            finally:
                with self._cond:
                    self._turn_active = False
                    self._ignore_interrupt = self.opts.ignore_interrupt

    def _next_message(self) -> JSON | None:
        with self._cond:
            while not self._queue and not self._eof:
                self._cond.wait()
            if not self._queue:
                return None
            self._turn_active = True
            self.interrupt.clear()
            return self._queue.popleft()

    def write_result(self, obj: JSON) -> None:
        """Write the turn's result line: from then on the turn no longer ignores interrupts.

        Both happen under ``_cond``, so an interrupt the caller sends once it has read the result is
        acknowledged (the turn's own ``ignore_interrupt`` must not outlive its result).
        """
        with self._cond:
            self._ignore_interrupt = self.opts.ignore_interrupt
            self.out.line(obj)

    def set_turn_ignores_interrupt(self) -> None:
        """The running turn asked (``ignore_interrupt``) not to honour interrupts."""
        with self._cond:
            self._ignore_interrupt = True

    def hang(self) -> NoReturn:
        """Block until interrupted (then raise _Interrupted); exit 0 if stdin is or gets closed."""
        with self._cond:
            if self._eof:
                self.exit_now(0)
            self._hanging = True
        try:
            self.interrupt.wait()
        finally:
            with self._cond:
                self._hanging = False
        raise _Interrupted

    # ---- stdin

    def _read_stdin(self) -> None:
        # os.read on the raw fd, not sys.stdin: a daemon thread blocked inside a buffered
        # reader can abort interpreter shutdown ("could not acquire lock for <stdin>").
        pending = b""
        while True:
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            while True:
                newline = pending.find(b"\n")
                if newline < 0:
                    break
                line, pending = pending[:newline], pending[newline + 1 :]
                self._on_stdin_line(line)
        if pending.strip():
            self._on_stdin_line(pending)
        with self._cond:
            self._eof = True
            self._cond.notify_all()
            if self._hanging:
                self.exit_now(0)

    def _on_stdin_line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            message: object = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            _err(f"Error parsing streaming input line (type=unknown, {len(line)} chars): SyntaxError")
            self.exit_now(1)
        kind = message.get("type")
        if kind == "user":
            with self._cond:
                self._queue.append(message)
                self._cond.notify_all()
        elif kind == "control_request":
            self._on_control_request(message)
        elif kind in ("control_response", "control_cancel_request", "keep_alive"):
            pass  # the sim never sends requests of its own, so there is nothing to match
        else:
            _err(f"sim: ignoring stdin message of type {kind!r}")

    def _on_control_request(self, message: JSON) -> None:
        request_id = message.get("request_id")
        raw_request = message.get("request")
        request: JSON = raw_request if isinstance(raw_request, dict) else {}
        subtype = request.get("subtype")
        if subtype == "interrupt":
            with self._cond:
                if self._ignore_interrupt:
                    return
                queued = [str(m.get("uuid") or "") for m in self._queue]
                if request.get("cancel_queued"):
                    self._queue.clear()
                    queued = []
                # The response goes out before the turn's aborted tail, as in the recordings:
                # write it first, then wake the turn.
                self._respond(request_id, {"still_queued": queued})
                if self._turn_active:
                    self.interrupt.set()
        elif subtype == "initialize":
            self._respond(request_id, self._server_info())
        elif subtype == "set_model":
            model = request.get("model")
            self.model = str(model) if model else self.opts.model
            self._respond(request_id, {})
        elif subtype == "set_permission_mode":
            mode = request.get("mode")
            self.permission_mode = str(mode) if mode else self.permission_mode
            self._respond(request_id, {})
        elif subtype == "mcp_status":
            self._respond(request_id, {"mcpServers": []})
        else:
            self.out.line(
                {
                    "type": "control_response",
                    "response": {
                        "subtype": "error",
                        "request_id": request_id,
                        "error": f"Unsupported control request subtype: {subtype}",
                        "error_code": "unsupported_request",
                    },
                }
            )

    def _respond(self, request_id: object, payload: JSON) -> None:
        self.out.line(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": request_id, "response": payload},
            }
        )

    def _server_info(self) -> JSON:
        return {
            "commands": [
                {"name": name, "description": f"/{name}", "argumentHint": ""} for name in _SLASH_COMMANDS
            ],
            "agents": [{"name": name, "description": f"{name} agent"} for name in _AGENTS],
            "output_style": "default",
            "available_output_styles": ["default"],
            "models": [
                {
                    "value": "default",
                    "resolvedModel": self.model,
                    "displayName": "Default (simulated)",
                    "description": "Turnstile's simulated model",
                }
            ],
            "account": {"tokenSource": "none", "apiKeySource": "none", "apiProvider": "sim"},
            "pid": os.getpid(),
            "claude_code_version": VERSION,
            "current_permission_mode": self.permission_mode,
            "session_state": "running" if self._turn_active else "idle",
            "capabilities": list(_CAPABILITIES),
        }

    # ---- accounting

    def add_usage(self, model: str, input_tokens: int, output_tokens: int) -> None:
        """Add one turn's tokens to the process totals (cost and per-model usage)."""
        cost = input_tokens * _INPUT_PRICE + output_tokens * _OUTPUT_PRICE
        self.total_cost = round(self.total_cost + cost, 10)
        usage = self.model_usage.setdefault(
            model,
            {
                "inputTokens": 0,
                "outputTokens": 0,
                "cacheReadInputTokens": 0,
                "cacheCreationInputTokens": 0,
                "webSearchRequests": 0,
                "costUSD": 0.0,
                "contextWindow": 200000,
                "maxOutputTokens": 64000,
            },
        )
        usage["inputTokens"] += input_tokens
        usage["outputTokens"] += output_tokens
        usage["costUSD"] = round(usage["costUSD"] + cost, 10)


# --------------------------------------------------------------------------------------------
# one turn


def _find_recording(name: str) -> str | None:
    try:
        files = sorted(f for f in os.listdir(RECORDINGS_DIR) if f.endswith(".jsonl"))
    except OSError:
        return None
    for file_name in files:
        stem = file_name[: -len(".jsonl")]
        if stem == name or stem.endswith("__" + name):
            return os.path.join(RECORDINGS_DIR, file_name)
    return None


def _strip_t(line: bytes, obj: JSON) -> bytes:
    """Remove the recorder's ``_t`` field, keeping every other byte of the line as recorded."""
    if "_t" not in obj:
        return line
    if line.startswith(b'{"_t":'):
        comma = line.find(b",")
        if comma > 0:
            candidate = b"{" + line[comma + 1 :]
            try:
                parsed: object = json.loads(candidate)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and parsed == {k: v for k, v in obj.items() if k != "_t"}:
                return candidate
    return _dumps({k: v for k, v in obj.items() if k != "_t"})


def _api_error_kind(status: int) -> tuple[str, str, str]:
    """(assistant ``error`` value, API error type, API message) for an HTTP status.

    2.1.327 reports a generic 400 with ``error: "unknown"``; 2.1.220 a 401 with
    ``authentication_failed``.
    """
    if status == 401:
        return "authentication_failed", "authentication_error", "invalid x-api-key"
    if status == 402:
        return "billing_error", "billing_error", "credit balance is too low"
    if status == 429:
        return "rate_limit", "rate_limit_error", "simulated rate limit"
    if status == 529:
        return "server_error", "overloaded_error", "Overloaded"
    if status >= 500:
        return "server_error", "api_error", "Internal server error"
    return "unknown", "invalid_request_error", "simulated invalid request"


class _Turn:
    """Everything printed for one user message, from ``system/init`` to ``result``."""

    def __init__(self, sim: Sim, message: JSON) -> None:
        self.sim = sim
        self.opts = sim.opts
        self.out = sim.out
        self.rng = sim.rng
        self.message = message
        raw, self.clean_prompt = parse_directives(_prompt_text(message))
        self.d, self.warnings = Directives.from_raw(raw)
        self.model = sim.model
        self.started = time.monotonic()
        self.api_seconds = 0.0
        self.num_turns = 0  # API calls made, as the real result counts them
        self.input_tokens = 0
        self.output_tokens = 0
        self.echoed = False
        # The API message being streamed.
        self.msg_id = ""
        self.request_id = ""
        self.msg_usage: JSON = {}
        self.msg_input_tokens = 0
        self.msg_output_tokens = 0
        self.msg_started = 0.0
        self.message_open = False
        self.index = 0
        self.first_delta_done = False
        # The content block being streamed (for the aborted assistant line on interrupt).
        self.block: JSON | None = None
        self.block_text = ""
        self.block_open = False
        # Set while a tool "runs": an interrupt then ends the turn as aborted_tools.
        self.running_tool: str | None = None

    # ---- emission

    def emit(self, obj: JSON) -> None:
        if obj.get("type") == "result":
            self.sim.write_result(obj)
        else:
            self.out.line(obj)

    def event(self, event: JSON) -> None:
        if self.opts.partial:
            self.emit(
                {
                    "type": "stream_event",
                    "event": event,
                    "session_id": self.sim.session_id,
                    "parent_tool_use_id": None,
                    "uuid": _uuid(),
                }
            )

    def assistant(self, block: JSON, *, aborted: bool = False) -> JSON:
        line: JSON = {
            "type": "assistant",
            "message": {
                "model": self.model,
                "id": self.msg_id,
                "type": "message",
                "role": "assistant",
                "content": [block],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self.msg_usage,
                "context_management": None,
            },
            "parent_tool_use_id": None,
            "session_id": self.sim.session_id,
            "uuid": _uuid(),
            "timestamp": _now_iso(),
            "request_id": self.request_id,
        }
        if aborted:
            line["aborted"] = True
        return line

    def user(self, content: list[JSON], **extra: object) -> JSON:
        line: JSON = {
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": None,
            "session_id": self.sim.session_id,
            "uuid": _uuid(),
            "timestamp": _now_iso(),
        }
        line.update(extra)
        return line

    def echo_user(self) -> None:
        """Echo the stdin message (``--replay-user-messages``) once, before the answer."""
        if self.opts.replay_user and not self.echoed:
            self.echoed = True
            self.emit(
                {
                    "type": "user",
                    "message": self.message.get("message"),
                    "session_id": self.sim.session_id,
                    "parent_tool_use_id": None,
                    "uuid": self.message.get("uuid") or _uuid(),
                    "timestamp": _now_iso(),
                    "isReplay": True,
                }
            )

    # ---- pacing

    def pace(self, seconds: float) -> None:
        """Sleep ``seconds * --speed``; raise _Interrupted if an interrupt is (or gets) pending."""
        delay = seconds * self.opts.speed
        if delay > 0:
            if self.sim.interrupt.wait(delay):
                raise _Interrupted
        elif self.sim.interrupt.is_set():
            raise _Interrupted

    def delta_pause(self) -> None:
        # The first delta of an API message follows its time-to-first-token directly.
        if not self.first_delta_done:
            self.first_delta_done = True
            return
        if self.d.token_ms is not None:
            self.pace(self.d.token_ms / 1000)
        else:
            self.pace(self.rng.uniform(0.02, 0.04))

    def ttft(self) -> float:
        return self.d.ttft_ms / 1000 if self.d.ttft_ms is not None else self.rng.uniform(0.2, 0.5)

    # ---- the turn

    def run(self) -> None:
        for warning in self.warnings:
            _err(f"sim: {warning}")
        if self.d.ignore_interrupt:
            self.sim.set_turn_ignores_interrupt()
        try:
            if self.d.replay is not None:
                path = _find_recording(self.d.replay)
                if path is not None:
                    self.replay(path)
                    return
                _err(f"sim: no recording named {self.d.replay!r} in {RECORDINGS_DIR}; answering normally")
            if self.d.hang == "start":
                self.sim.hang()  # silent: not even init
            self.init()
            if self.d.api_error is not None:
                self.api_error(self.d.api_error)
            else:
                self.answer()
        except _Interrupted:
            self.interrupted_tail()

    def init(self) -> None:
        # A hot CLI prints init 20-40 ms after the prompt. Not interruptible on purpose: an
        # interrupt stays pending and ends the turn right after init, as in the real CLI.
        delay = self.rng.uniform(0.02, 0.04) * self.opts.speed
        if delay > 0:
            time.sleep(delay)
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.sim.session_id,
                "tools": list(self.opts.tools),
                "mcp_servers": [],
                "model": self.model,
                "permissionMode": self.sim.permission_mode,
                "slash_commands": list(_SLASH_COMMANDS),
                "apiKeySource": "none",
                "claude_code_version": VERSION,
                "output_style": "default",
                "agents": list(_AGENTS),
                "skills": [],
                "plugins": [],
                "capabilities": list(_CAPABILITIES),
                "uuid": _uuid(),
                "fast_mode_state": "off",
            }
        )
        if self.d.stderr_flood:
            filler = "simulated diagnostic output " * 3
            for i in range(self.d.stderr_flood):
                sys.stderr.write(f"sim: stderr flood line {i + 1}/{self.d.stderr_flood}: {filler}\n")
            sys.stderr.flush()
        if self.d.crash == "start":
            _err("sim: simulated crash right after init (crash=start)")
            self.sim.exit_now(1)

    def final_text(self) -> str:
        d = self.d
        if d.say is not None:
            return d.say
        if d.text_words is not None:
            return _sentences(self.rng, d.text_words)
        if d.tokens is not None:
            return _sentences(self.rng, d.tokens)
        echo = " ".join(self.clean_prompt.split()[:6])
        if len(echo) > 48:
            echo = echo[:45].rstrip() + "..."
        if echo:
            reply = self.rng.choice(
                (
                    f'Happy to help! You said "{echo}". The Turnstile simulator is answering.',
                    f'Thanks for writing "{echo}". This is a short reply from the simulator.',
                    f'Got it: "{echo}". Everything is running smoothly on this side.',
                )
            )
        else:
            reply = "Hello! The Turnstile simulator is ready when you are."
        if d.tools:
            plural = "s" if d.tools != 1 else ""
            reply = f"Done: ran {d.tools} simulated command{plural}. {reply}"
        return reply

    def text_pieces(self, text: str) -> list[str]:
        d = self.d
        if d.tokens is not None and (d.say is not None or d.text_words is not None):
            return _even_pieces(text, d.tokens)
        return _word_pieces(text)

    def answer(self) -> None:
        d = self.d
        text = self.final_text()
        for call in range(d.tools + 1):
            if self.opts.max_turns is not None and call >= self.opts.max_turns:
                self.result_max_turns()
                return
            self.requesting()
            if call == 0 and d.hang == "first":
                self.sim.hang()
            self.pace(self.ttft())
            self.echo_user()
            self.begin_message()
            if call == 0 and d.thinking:
                self.thinking_block(d.thinking)
            if call < d.tools:
                self.tool_call(call)
            else:
                self.text_block(text)
        self.result_success(text)

    # ---- API messages and blocks

    def requesting(self) -> None:
        # With partial messages on, 2.1.220 and 2.1.327 announce every API call like this.
        if self.opts.partial:
            self.emit(
                {
                    "type": "system",
                    "subtype": "status",
                    "status": "requesting",
                    "session_id": self.sim.session_id,
                    "uuid": _uuid(),
                }
            )

    def begin_message(self) -> None:
        self.num_turns += 1
        self.message_open = True
        self.msg_id = "msg_sim_" + uuid.uuid4().hex[:24]
        self.request_id = "req_sim_" + uuid.uuid4().hex[:24]
        self.msg_started = time.monotonic()
        self.index = 0
        self.first_delta_done = False
        # A rough token count: the prompt on the first call, the tool result on later ones.
        self.msg_input_tokens = 12 + len(self.clean_prompt) // 4 if self.num_turns == 1 else 8
        self.msg_output_tokens = 0
        self.msg_usage = {
            "input_tokens": self.msg_input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
            "service_tier": "standard",
        }
        self.event(
            {
                "type": "message_start",
                "message": {
                    "model": self.model,
                    "id": self.msg_id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": self.msg_usage,
                },
            }
        )

    def end_message(self, stop_reason: str) -> None:
        self.event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {
                    "input_tokens": self.msg_input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": self.msg_output_tokens,
                },
                "context_management": {"applied_edits": []},
            }
        )
        self.event({"type": "message_stop"})
        self.message_open = False
        self.account_message()

    def account_message(self) -> None:
        self.api_seconds += time.monotonic() - self.msg_started
        self.input_tokens += self.msg_input_tokens
        self.output_tokens += self.msg_output_tokens
        self.msg_input_tokens = self.msg_output_tokens = 0

    def start_block(self, block: JSON) -> None:
        self.block_open = True
        self.event({"type": "content_block_start", "index": self.index, "content_block": block})

    def delta(self, delta: JSON) -> None:
        self.msg_output_tokens += 1
        self.event({"type": "content_block_delta", "index": self.index, "delta": delta})

    def finish_block(self, block: JSON) -> None:
        self.emit(self.assistant(block))
        self.event({"type": "content_block_stop", "index": self.index})
        self.block_open = False
        self.index += 1
        self.block = None
        self.block_text = ""

    def thinking_block(self, n_deltas: int) -> None:
        self.start_block({"type": "thinking", "thinking": "", "signature": ""})
        self.block = {"type": "thinking", "thinking": "", "signature": ""}
        topic = " ".join(self.clean_prompt.split()[:3]) or "the request"
        thoughts = _word_pieces(f"Considering {topic}. " + _sentences(self.rng, max(0, n_deltas - 3)))
        pieces = (thoughts + [" ok"] * n_deltas)[:n_deltas]
        for piece in pieces:
            self.delta_pause()
            self.block_text += piece
            self.delta({"type": "thinking_delta", "thinking": piece})
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        signature = "".join(self.rng.choice(alphabet) for _ in range(96)) + "=="
        self.delta({"type": "signature_delta", "signature": signature})
        self.finish_block({"type": "thinking", "thinking": self.block_text, "signature": signature})

    def text_block(self, text: str) -> None:
        pieces = self.text_pieces(text)
        self.start_block({"type": "text", "text": ""})
        self.block = {"type": "text", "text": ""}
        middle = len(pieces) // 2
        for i, piece in enumerate(pieces):
            if i == middle:
                self.mid_faults()
            self.delta_pause()
            self.block_text += piece
            self.delta({"type": "text_delta", "text": piece})
        if not pieces:
            self.mid_faults()
        self.finish_block({"type": "text", "text": text})
        self.end_message("end_turn")

    def tool_call(self, call: int) -> None:
        d = self.d
        tool_id = "toolu_sim_" + uuid.uuid4().hex[:24]
        marker = f"sim-tool-{call + 1}"
        tool_input = {
            "command": f"sleep {d.tool_s:g} && echo {marker}",
            "description": f"Simulated command {call + 1} of {d.tools}",
        }
        caller = {"type": "direct"}
        self.start_block({"type": "tool_use", "id": tool_id, "name": "Bash", "input": {}, "caller": caller})
        encoded = json.dumps(tool_input)
        # The real CLI's first input_json_delta is empty; the rest arrive in a few chunks.
        for piece in ["", *_even_pieces(encoded, 3)]:
            self.delta_pause()
            self.delta({"type": "input_json_delta", "partial_json": piece})
        self.finish_block(
            {"type": "tool_use", "id": tool_id, "name": "Bash", "input": tool_input, "caller": caller}
        )
        self.end_message("tool_use")
        self.running_tool = tool_id
        self.pace(d.tool_s)
        self.running_tool = None
        self.emit(
            self.user(
                [{"tool_use_id": tool_id, "type": "tool_result", "content": marker, "is_error": False}],
                tool_use_result={
                    "stdout": marker,
                    "stderr": "",
                    "interrupted": False,
                    "isImage": False,
                    "noOutputExpected": False,
                },
            )
        )

    def mid_faults(self) -> None:
        """Faults injected halfway through the answer's text."""
        d = self.d
        if d.garbage:
            self.out.raw(b"[SimNoise] this line is not JSON\n")
            self.out.raw(b'{"type":"assistant","message":{"content":[\n')
        if d.oversized is not None:
            self.out.raw(self.oversized_line(d.oversized) + b"\n")
        if d.nonutf8:
            self.out.raw(
                b'{"type":"system","subtype":"sim_nonutf8","session_id":"'
                + self.sim.session_id.encode()
                + b'","text":"invalid utf-8 follows: \xff\xfe\xc3\x28 end"}\n'
            )
        if d.truncate:
            line = _dumps(self.assistant({"type": "text", "text": self.block_text or "partial"}))
            self.out.raw(line[: len(line) // 2])
            self.sim.exit_now(0)
        if d.exit0:
            self.sim.exit_now(0)
        if d.crash == "mid":
            _err("sim: simulated crash mid-answer (crash=mid)")
            self.sim.exit_now(1)
        if d.kill == "mid":
            with self.out.lock:  # never die halfway through another thread's line
                os.kill(os.getpid(), signal.SIGKILL)
        if d.hang == "mid":
            self.sim.hang()

    def oversized_line(self, size: int) -> bytes:
        head = b'{"type":"system","subtype":"sim_oversized","session_id":"' + self.sim.session_id.encode()
        head += b'","uuid":"' + _uuid().encode() + b'","padding":"'
        tail = b'"}'
        return head + b"x" * max(0, size - len(head) - len(tail)) + tail

    # ---- endings

    def usage(self) -> JSON:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": self.output_tokens,
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": "standard",
            "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
        }

    def result(self, subtype: str, *, is_error: bool, head: JSON, tail: JSON) -> JSON:
        """Charge the turn's tokens and build its result line.

        ``head`` fields go after ``num_turns`` (``result``, ``stop_reason``), ``tail`` fields
        after ``permission_denials`` (``terminal_reason``, ``errors``, ``api_error_status``).
        """
        self.sim.add_usage(self.model, self.input_tokens, self.output_tokens)
        self.sim.last_result_is_error = is_error
        return {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
            "duration_api_ms": int(self.api_seconds * 1000),
            "num_turns": self.num_turns,
            **head,
            "session_id": self.sim.session_id,
            "total_cost_usd": self.sim.total_cost,
            "usage": self.usage(),
            "modelUsage": {name: dict(usage) for name, usage in self.sim.model_usage.items()},
            "permission_denials": [],
            **tail,
            "uuid": _uuid(),
        }

    def result_success(self, text: str) -> None:
        self.emit(
            self.result(
                "success",
                is_error=False,
                head={"result": text, "stop_reason": "end_turn"},
                tail={"terminal_reason": "completed", "api_error_status": None},
            )
        )

    def result_max_turns(self) -> None:
        self.emit(
            self.result(
                "error_max_turns",
                is_error=True,
                head={"stop_reason": "tool_use"},
                tail={
                    "terminal_reason": "max_turns",
                    "errors": [f"Reached maximum number of turns ({self.opts.max_turns})"],
                },
            )
        )

    def interrupted_tail(self) -> None:
        """End the turn as the real CLI does after an interrupt (2.1.220/2.1.327 shape)."""
        self.echo_user()
        if self.block is not None and self.block_text:
            block = dict(self.block)
            block["thinking" if block["type"] == "thinking" else "text"] = self.block_text
            self.emit(self.assistant(block, aborted=True))
        if self.running_tool is not None:
            self.emit(
                self.user(
                    [
                        {
                            "tool_use_id": self.running_tool,
                            "type": "tool_result",
                            "content": _INTERRUPTED_TOOL,
                            "is_error": True,
                        }
                    ]
                )
            )
            self.emit(self.user([{"type": "text", "text": _INTERRUPTED_TOOL}]))
            reason = "aborted_tools"
        else:
            self.emit(self.user([{"type": "text", "text": _INTERRUPTED}]))
            reason = "aborted_streaming"
        if self.message_open:
            # 2.1.327 closes the abandoned API message with synthetic stream events.
            if self.block_open:
                self.event({"type": "content_block_stop", "index": self.index})
            self.event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": None, "stop_sequence": None},
                    "usage": {"input_tokens": self.msg_input_tokens, "output_tokens": self.msg_output_tokens},
                    "context_management": None,
                }
            )
            self.event({"type": "message_stop"})
            self.message_open = self.block_open = False
            self.account_message()  # the API call in flight still costs
        self.emit(
            self.result(
                "error_during_execution",
                is_error=True,
                head={"stop_reason": None},
                tail={"terminal_reason": reason, "errors": [_EDE_DIAGNOSTIC]},
            )
        )

    def api_error(self, status: int) -> None:
        """End the turn like a failed API call: retries (if retryable), then the error."""
        error, error_type, api_message = _api_error_kind(status)
        self.num_turns = 1
        self.msg_started = time.monotonic()
        self.pace(self.ttft())
        if status in (408, 409, 429) or status >= 500:
            retries = self.d.retries if self.d.retries is not None else 10
            for attempt in range(1, retries + 1):
                # Growing backoff, like the 0.6 s, 1.1 s, 2 s, 5 s, 9 s, 17 s, 39 s ... measured.
                delay = min(0.5 * 2 ** (attempt - 1), 40.0) * self.rng.uniform(1.0, 1.2)
                self.emit(
                    {
                        "type": "system",
                        "subtype": "api_retry",
                        "attempt": attempt,
                        "max_retries": retries,
                        "retry_delay_ms": int(delay * 1000),
                        "error_status": status,
                        "error": error,
                        "session_id": self.sim.session_id,
                        "uuid": _uuid(),
                    }
                )
                self.pace(delay)
        self.api_seconds += time.monotonic() - self.msg_started
        self.msg_started = 0.0
        self.echo_user()
        text = f"API Error: {status} {api_message}"  # as 2.1.327 words it
        zero_usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "id": _uuid(),
                    "container": None,
                    "model": "<synthetic>",
                    "role": "assistant",
                    "stop_reason": "stop_sequence",
                    "stop_sequence": "",
                    "type": "message",
                    "usage": zero_usage,
                    "content": [{"type": "text", "text": text}],
                    "context_management": None,
                },
                "parent_tool_use_id": None,
                "session_id": self.sim.session_id,
                "uuid": _uuid(),
                "timestamp": _now_iso(),
                "error": error,
                "request_id": "req_sim_" + uuid.uuid4().hex[:24],
                "is_api_error_message": True,
                "api_error_status": status,
                "api_error_type": error_type,
            }
        )
        self.emit(
            self.result(
                "success",
                is_error=True,
                head={"result": text, "stop_reason": "stop_sequence"},
                tail={
                    "terminal_reason": "api_error",
                    "api_error_status": status,
                    "api_error_type": error_type,
                },
            )
        )

    def replay(self, path: str) -> None:
        """Emit the first turn of a recording, minus ``_t``, paced by its ``_t`` times."""
        with open(path, "rb") as handle:
            lines = [line for line in handle.read().split(b"\n") if line.strip()]
        previous_t: float | None = None
        for line in lines:
            parsed: object = json.loads(line)
            obj: JSON = parsed if isinstance(parsed, dict) else {}
            t = obj.get("_t")
            if previous_t is not None:
                if isinstance(t, int | float):
                    self.pace(max(0.0, (t - previous_t) / 1000))
                else:
                    self.pace(0.03)
            if isinstance(t, int | float):
                previous_t = float(t)
            elif previous_t is None:
                previous_t = 0.0
            self.out.raw(_strip_t(line, obj) + b"\n")
            if obj.get("type") == "result":
                self.sim.last_result_is_error = bool(obj.get("is_error"))
                return


# --------------------------------------------------------------------------------------------
# entry point


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # 128 + signal number, as a shell reports it: SIGTERM -> 143 (the real CLI's code).
    os._exit(128 + signum)


def _resume_lost(sim: Sim) -> int:
    """A ``--resume`` the CLI cannot honour: one lone error result, at startup, then exit 1."""
    session_id = sim.session_id
    sim.out.line(
        {
            "type": "result",
            "subtype": "error_during_execution",
            "duration_ms": 0,
            "duration_api_ms": 0,
            "is_error": True,
            "num_turns": 0,
            "stop_reason": None,
            "session_id": session_id,
            "total_cost_usd": 0,
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "service_tier": "standard",
                "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            },
            "modelUsage": {},
            "permission_denials": [],
            "uuid": _uuid(),
            "errors": [f"No conversation found with session ID: {session_id}"],
        }
    )
    _err(f"No conversation found with session ID: {session_id}")
    return 1


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m turnstile.engine.agents.sim") -> int:
    """Run the simulated CLI; returns the process exit code.

    Args:
        argv: command-line arguments without the program name; defaults to ``sys.argv[1:]``.
        prog: the program name ``--help`` shows (``turnstile sim`` when run by the ``turnstile`` command).
    """
    ns, unknown = build_parser(prog).parse_known_args(argv)
    opts = Options(ns, unknown)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    if opts.crash_at_start:
        _err("sim: simulated crash at startup (--crash-at-start)")
        return 1
    if opts.print_mode and opts.output_format == "stream-json" and not opts.verbose:
        _err("Error: When using --print, --output-format=stream-json requires --verbose")
        return 1
    if unknown:
        _err(f"sim: ignoring unknown argument(s): {' '.join(unknown)}")
    for flag, value in (("--input-format", opts.input_format), ("--output-format", opts.output_format)):
        if value != "stream-json":
            _err(f"sim: {flag} {value} is not simulated; speaking stream-json anyway")
    if opts.slow_start > 0:
        time.sleep(opts.slow_start)
    sim = Sim(opts)
    if opts.resume is not None and opts.resume.startswith("lost-"):
        return _resume_lost(sim)
    return sim.serve()


if __name__ == "__main__":
    sys.exit(main())
