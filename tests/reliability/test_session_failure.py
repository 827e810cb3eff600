"""A bug inside one session's task must not leave a stream stuck.

docs/runtime.md: "A session whose task fails with a bug is logged; the others go on." The others do; but
the failed session itself must not keep accepting turns that nothing will ever run, and the stream that
was running must not be told "server shutting down" while the server runs on.

The bug is injected where a real one was found (tests/reliability/test_fuzz.py): the stdout path, which
raised IndexError / UnicodeDecodeError / RecursionError on some lines before engine/protocol.py was
fixed. Here the journal's line decoder raises on a marker line, standing in for any future bug there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

import turnstile.engine.runtime.journal as journal_module
from tests.reliability.clients import wait_turn_ended
from tests.reliability.matrix import run_turn
from tests.reliability.servers import inproc_server, runtime_config, sim_wrapper

pytestmark = pytest.mark.slow

MARKER = b"BOOM-7f3a"


async def test_a_bug_in_a_session_task_never_leaves_a_turn_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = journal_module.entries_from_frames  # type: ignore[attr-defined]

    def buggy(frames: Sequence[Any], **kw: Any) -> Any:
        if any(isinstance(f, bytes) and MARKER in f for f in frames):
            raise RuntimeError("simulated bug on the stdout path")
        return real(frames, **kw)

    monkeypatch.setattr(journal_module, "entries_from_frames", buggy)
    # The agent takes a second to close (it ignores stdin EOF until SIGTERM), as a busy CLI may.
    rc = runtime_config(tmp_path / "data", pool_size=0, wrapper=sim_wrapper(tmp_path / "bin"))
    async with inproc_server(rc) as live, live.client() as c:
        sid = (await c.post("/v1/sessions", json={"model": "fault-slow-exit"})).json()["id"]
        r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": f'[[sim say="{MARKER.decode()}"]]'})
        first = await wait_turn_ended(c, sid, r.json()["turn_id"], limit_s=8)
        problems = []
        if first["reason"] == "server shutting down":
            problems.append(
                f"the broken turn ended {first['outcome']}/'server shutting down' while the server runs"
            )
        # The next turn on that session: refused, or run to its end — never accepted and left queued.
        r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "hello again"})
        if r.status_code == 202:
            try:
                await wait_turn_ended(c, sid, r.json()["turn_id"], limit_s=8)
            except trio.TooSlowError:
                info = (await c.get(f"/v1/sessions/{sid}")).json()
                problems.append(
                    f"a turn accepted (202) after the session's task died never ended: state {info['state']}, "
                    f"turns {[(t['id'], t['state']) for t in info['turns']]}"
                )
        elif r.status_code not in (409, 503):
            problems.append(f"the next turn got {r.status_code} {r.text}")
        # Everything else goes on.
        assert (await c.get("/healthz")).status_code == 200
        other = (await c.post("/v1/sessions", json={})).json()["id"]
        outcome, log_problems = await run_turn(c, other, "hi")
        assert outcome == "completed" and not log_problems, log_problems
        assert not problems, problems
