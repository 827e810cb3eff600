"""The prose of docs/compatibility.md: the introduction, how to run it, and where every ✘ and ⏳ comes from.

Written by hand (the results are not): :func:`explanation` must have something to say for every cell that is
not ✔, or tests/compat/test_compat_doc.py fails.
"""

from __future__ import annotations

from typing import Final

INTRO: Final = """\
Users run whatever Claude Code CLI their machine has, and its stream-json protocol drifts between releases.
This page is the live answer to "does Turnstile work with mine?": every scenario below ran against every
version listed, offline — the real CLI, pointed at a scripted fake of the model API on 127.0.0.1
(`tests/fakeapi.py`), in a scratch `HOME`, with the auto-updater off. The *turnstile* scenarios go through
Turnstile's own runtime (`open_runtime` with `AgentConfig(agent="claude", binary=…)`: sessions, the hot
pool, timeouts, the log); the *protocol* ones drive the CLI directly, for parts of the protocol Turnstile
does not use yet; `doctor` is `turnstile doctor`'s offline probe.

The suite that wrote this page (`tests/compat/test_cli_matrix.py`, part of `make test`) checks on every run
that each cell still reads as below, facts included, so a CLI that changes behaviour fails CI until this
page is regenerated and the change explained. Your own CLI: `turnstile doctor` (or `GET /v1/agent` on a
running server, shown in the console's top bar) probes it the same way and says what Turnstile does
without whatever it lacks."""

RUNNING: Final = """\
## Running it, regenerating it, adding a version

```sh
turnstile cli fetch 2.1.332 2.1.220 2.1.74      # once: into ~/.cache/turnstile/cli (make clis and .ci/run do it)
pytest tests/compat                             # the matrix (the bundled 2.1.327 always runs; a version
                                                # missing from the cache is skipped, saying how to fetch it)
TURNSTILE_UPDATE_COMPAT=1 pytest tests/compat   # regenerate this page and tests/compat/results.json
python -m tests.compat.matrix                   # re-render this page alone (after editing tests/compat/notes.py)
TURNSTILE_COMPAT_VERSIONS=2.1.327,2.1.340 pytest tests/compat   # try another version (reported, not judged)
```

To add a version for good: add it to `VERSIONS` in `tests/compat/versions.py` with the reason, record its
output (`.venv/bin/python tests/fixtures/record_real_cli.py --claude-bin $(turnstile cli fetch X)`), add its
`tests/fixtures/cli-X` recordings' golden traces (`TURNSTILE_UPDATE_GOLDEN=1 pytest tests/engine/test_replay.py`),
regenerate this page, and explain any ✘ in `tests/compat/notes.py`. The matrix adds about three minutes to
`make test` on a 2-core machine (most of it the CLIs' own start-up; the `stall-pings` row, which waits for
the CLI's 10 s keep-alive period, runs all versions side by side)."""

#: scenario (or ``scenario@version``, which wins) -> where its ✘/⏳ comes from and what Turnstile does.
EXPLAINED: Final[dict[str, str]] = {
    "stall-pings": (
        "**✘ known, Turnstile issue 14** — not a CLI bug. While the model API's stream stays open but sends "
        "no content (the real API sends SSE `ping` events), CLI 2.1.327 and later print a `stream_event` "
        "`ping` line every ~10 s. Turnstile's idle timeout (`idle_timeout_s`, 600 s by default) counts every "
        "CLI line as activity, so such a stall is never detected: the turn stays busy until an interrupt "
        "(which works: the stalled turn ends `cancelled`) or the CLI's own request timeout. Issue 14 makes "
        "progress mean content, not keep-alives (`stall_timeout_s`). 2.1.220 and 2.1.74 print nothing while "
        "stalled, so there the idle timeout does fire (✔, after 600 s with the defaults)."
    ),
    "approval-turnstile": (
        "**⏳ pending Turnstile issue 17** (tool approvals from any client): Turnstile runs the CLI with a "
        "fixed `--allowedTools` list today. The `approval-allow` and `approval-deny` rows show that every "
        "version here sends `can_use_tool` with `--permission-prompt-tool stdio` and honours the answer — "
        'including 2.1.74, inside the range of anthropics/claude-code#34046 ("CLI does not emit '
        'can_use_tool … 2.1.73 + 2.1.74", reported on WSL with the Write tool; not reproduced here on '
        "Linux with Bash). A one-off run of `turnstile doctor` on 2.1.78, reported broken by "
        'chenhg5/cc-connect#237 ("MCP tool stdio not found"), also found `can_use_tool` working.'
    ),
    "doctor@2.1.74": (
        "**✘ degraded, not broken.** 2.1.74 predates the `get_context_usage` control request and answers it "
        '"Unsupported control request subtype". Turnstile\'s pool counts an error answer as answered, so '
        "warm processes are primed with `initialize` only (the `warm-pool` row: ✔) and the CLI builds its "
        "system prompt during the first turn instead of before it; `turnstile doctor`, `/readyz` and the "
        "console say so."
    ),
}

CAVEATS: Final = """\
## Caveats found while building the matrix (not cells: they depend on timing)

- **When the turn reaches the disk.** 2.1.327 and 2.1.332 write a turn to their transcript
  (`~/.claude/projects/…/<session>.jsonl`) before printing its `result`. 2.1.220 and 2.1.74 write it
  after: in a check of five turns each, the answer reached the file 5 to 150 ms after `result` (4 of 5 on
  2.1.220, 5 of 5 on 2.1.74). A crash in that window loses the last answer, or — before the first turn
  was written — the whole conversation: the next turn then fails with "No conversation found with session
  ID" and Turnstile starts a new conversation (the `resume` row therefore crashes the CLI once the turn is
  on disk). Graceful stops are not affected: Turnstile closes stdin and waits `close_grace_s`.
- **A generic 400** is retried silently by newer CLIs while they strip optional request features: 6
  requests on 2.1.327/2.1.332, 2 on 2.1.220, none on 2.1.74 (`api-400` facts). The turn still fails with
  the API's message; only its duration differs."""


def explanation(scenario: str, versions: list[str]) -> str:
    """The note for ``scenario``'s ✘/⏳ cells on ``versions`` ("UNEXPLAINED" when there is none)."""
    parts = [EXPLAINED.get(f"{scenario}@{v}") or EXPLAINED.get(scenario) or "UNEXPLAINED" for v in versions]
    return " ".join(dict.fromkeys(parts))
