"""Recovery ends every turn: any prefix of any Turnstile log, torn at any byte, reopens to a log where every
turn has exactly one terminal entry and the seqs are gap-free — also when the tear falls in what an
earlier recovery wrote (the stuck-stream defect: a repair that cut off the recovery's ``stream.ended``
left a turn that no later recovery ended).

Everything goes through the real code path: the bytes are written as a session's ``.ndjson`` in a data
directory, and a real runtime (:func:`open_runtime`, with the scripted launcher: no agent is needed to
recover) reopens it — :class:`FileLogStore`'s repair, then the runtime's recovery.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime.conftest import config, run_turn
from tests.scripted import ScriptedLauncher
from turnstile.engine.log import AnyEntry, PromptWritten, StreamEnded, TurnRequested, decode_entry
from turnstile.engine.runtime import open_runtime

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"

PROPERTY = settings(
    max_examples=int(os.environ.get("TURNSTILE_RECOVERY_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _lines(raw: bytes) -> list[bytes]:
    return [line for line in raw.split(b"\n") if line.strip()]


def _log_of(data: Path, sid: str) -> bytes:
    return (data / "sessions" / f"{sid}.ndjson").read_bytes()


async def _wait_for(data: Path, sid: str, kind: type, limit_s: float = 10.0) -> None:
    with trio.fail_after(limit_s):
        while not any(isinstance(decode_entry(x), kind) for x in _lines(_log_of(data, sid))):  # noqa: ASYNC110
            await trio.sleep(0.01)


async def _make_logs(root: Path) -> dict[str, bytes]:
    """Logs a runtime writes: turns of every outcome, a kill -9 mid-turn (the file copied while the turn
    runs is exactly what a SIGKILL leaves: appends are whole writes), a stopped session, a recovery."""
    out: dict[str, bytes] = {}
    data = root / "made"
    async with open_runtime(config(data_dir=str(data)), launcher=ScriptedLauncher()) as rt:
        await rt.create_session(session_id="a")
        await run_turn(rt, "a", "one [[sim tokens=3]]")
        await run_turn(rt, "a", "[[sim crash=mid]]")
        await run_turn(rt, "a", "[[sim api_error=500]]")
        await rt.start_turn("a", "[[sim hang=first]]")
        await rt.start_turn("a", "queued behind the hang")
        await _wait_for(data, "a", PromptWritten)
        out["killed-mid-turn"] = _log_of(data, "a")
        await rt.create_session(session_id="b")
        await run_turn(rt, "b", "[[sim tokens=2 stderr_flood=2]]")
        await rt.stop_session("b")
        out["stopped"] = _log_of(data, "b")
    out["shut-down"] = _log_of(data, "a")
    again = root / "again"
    (again / "sessions").mkdir(parents=True)
    (again / "sessions" / "a.ndjson").write_bytes(out["killed-mid-turn"])
    async with open_runtime(config(data_dir=str(again)), launcher=ScriptedLauncher()) as rt:
        await rt.wait_recovered()
        out["recovered-then-killed"] = _log_of(again, "a")
    return out


class _Logs(dict[str, bytes]):
    """The logs by name (a short repr: Hypothesis prints the arguments of a failing example)."""

    def __repr__(self) -> str:
        return f"<logs: {', '.join(sorted(self))}>"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> _Logs:
    made = _Logs(trio.run(_make_logs, tmp_path_factory.mktemp("logs")))
    for path in sorted(FIXTURES.glob("turnstile__*.ndjson")):
        made[path.name] = path.read_bytes()
    return made


async def _recover(data: Path) -> dict[str, str]:
    async with open_runtime(config(data_dir=str(data)), launcher=ScriptedLauncher()) as rt:
        await rt.wait_recovered()
        return dict(rt.recovery_errors)


def _check(raw: bytes) -> list[AnyEntry]:
    entries = [decode_entry(line) for line in _lines(raw)]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1)), "seqs are not 1..N"
    turns = {e.stream for e in entries if isinstance(e, TurnRequested | StreamEnded) and e.stream}
    ends: dict[str, int] = {}
    for e in entries:
        if isinstance(e, StreamEnded) and e.stream is not None:
            ends[e.stream] = ends.get(e.stream, 0) + 1
    assert {t: ends.get(t, 0) for t in turns} == dict.fromkeys(turns, 1), "a turn without exactly one end"
    return entries


@PROPERTY
@given(data=st.data())
def test_any_torn_prefix_recovers_with_every_turn_ended_once(
    logs: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(logs)), label="log")
    raw = logs[name]
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    root = tmp_path_factory.mktemp("torn")
    path = root / "sessions" / "x.ndjson"
    path.parent.mkdir(parents=True)
    path.write_bytes(raw[:cut])
    assert trio.run(_recover, root) == {}
    recovered = path.read_bytes()
    _check(recovered)
    # A second crash tears what the recovery wrote (anywhere in it), and the server starts again.
    if data.draw(st.booleans(), label="torn again"):
        kept = len(raw[:cut].rsplit(b"\n", 1)[0]) if b"\n" in raw[:cut] else 0
        # Drawn as a fraction: the recovered file's length varies with the clock (its timestamps).
        at = data.draw(st.integers(0, 1 << 20), label="second cut")
        second = kept + (len(recovered) - kept) * at // (1 << 20)
        path.write_bytes(recovered[:second])
        assert trio.run(_recover, root) == {}
        _check(path.read_bytes())


async def test_the_torn_recovery_reproduction_ends_its_turn(logs: dict[str, bytes], tmp_path: Path) -> None:
    """The issue's steps, in process: kill -9 mid-turn, restart, kill -9, cut the last line (the recovery's
    stream.ended) in half, restart: the turn must end, and a subscriber to it must get that end."""
    path = tmp_path / "sessions" / "a.ndjson"
    path.parent.mkdir(parents=True)
    raw = logs["recovered-then-killed"]
    last = _lines(raw)[-1]
    assert isinstance(decode_entry(last), StreamEnded)
    path.write_bytes(raw[: len(raw) - len(last) // 2 - 1])
    async with open_runtime(config(data_dir=str(tmp_path)), launcher=ScriptedLauncher()) as rt:
        await rt.wait_recovered()
        _check(path.read_bytes())
        hung = decode_entry(last).stream  # the turn whose terminal entry the tear cut off
        assert hung is not None
        with trio.fail_after(10):
            async with rt.subscribe("a", stream=hung) as sub:
                got = [r.entry async for batch in sub for r in batch]
        assert isinstance(got[-1], StreamEnded) and got[-1].stream == hung


async def test_a_line_nested_too_deep_is_damage_not_a_crash(tmp_path: Path) -> None:
    """JSON nested deeper than the decoder goes (RecursionError) is a damaged line like any other: as the
    last line it is a torn tail (repaired), before it the session is damaged — and the server comes up."""
    deep = b'{"kind":"stderr","seq":2,"ts":null,"text":' + b"[" * 5000 + b"]" * 5000 + b"}"
    head = (
        b'{"kind":"session.created","seq":1,"ts":1.0,"stream":null,"session_id":"x","agent":"sim",'
        b'"config":{},"pool_key":""}\n'
    )
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "tail.ndjson").write_bytes(head + deep + b"\n")
    (sessions / "mid.ndjson").write_bytes(head + deep + b"\n" + head.replace(b'"seq":1', b'"seq":3'))
    async with open_runtime(config(data_dir=str(tmp_path)), launcher=ScriptedLauncher()) as rt:
        await rt.wait_recovered()
        assert set(rt.recovery_errors) == {"mid"} and "mid.ndjson:2" in rt.recovery_errors["mid"]
        _check((sessions / "tail.ndjson").read_bytes())
        assert rt.session("tail").state != "stopped"
