"""A conversation the agent cannot resume: that turn fails with a plain reason, the next starts afresh —
and the API, the log and an offline replay all tell the same story (docs/runtime.md, "Crashes and
``--resume``"). Found with the real CLI killed mid-stream (its conversation was not saved yet), made
deterministic here with the simulator, which refuses ``--resume lost-*`` exactly as the CLI refuses an
unknown conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.clients import check_log, fetch_log
from tests.reliability.matrix import run_turn
from tests.reliability.servers import inproc_server, runtime_config, sim_wrapper

pytestmark = pytest.mark.slow


async def test_a_lost_conversation_fails_one_turn_plainly_and_the_api_agrees_with_the_log(
    tmp_path: Path,
) -> None:
    rc = runtime_config(tmp_path / "data", pool_size=0, wrapper=sim_wrapper(tmp_path / "bin"))
    async with inproc_server(rc) as live, live.client() as c:
        sid = (await c.post("/v1/sessions", json={"model": "fault-lost-session"})).json()["id"]
        outcomes = []
        for prompt in ["first", "second: resumes a conversation the agent lost", "third: starts afresh"]:
            outcome, _problems = await run_turn(c, sid, prompt)
            outcomes.append(outcome)
        raw, entries = await fetch_log(c, sid)
        info = (await c.get(f"/v1/sessions/{sid}")).json()
        ends = [e for e in entries if e["kind"] == "stream.ended"]
        assert outcomes == ["completed", "failed", "completed"], outcomes
        assert "could not resume" in ends[1]["reason"], ends[1]
        assert info["resume_failed"], info
        problems = check_log(raw, entries, info)
        assert not problems, problems
