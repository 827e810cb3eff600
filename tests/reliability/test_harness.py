"""The checks of the fault matrix catch what they claim to (a check that never fails proves nothing)."""

from __future__ import annotations

import json
from typing import Any

from tests.reliability.clients import Received, check_log, check_subscriber


def _log() -> list[dict[str, Any]]:
    return [
        {"kind": "session.created", "seq": 1, "ts": 1.0, "stream": None, "session_id": "s", "agent": "sim"},
        {"kind": "turn.requested", "seq": 2, "ts": 1.0, "stream": "t1", "prompt": "hi"},
        {"kind": "prompt.written", "seq": 3, "ts": 1.0, "stream": "t1", "pid": 1, "bytes": 2},
        {"kind": "process.exited", "seq": 4, "ts": 2.0, "stream": "t1", "pid": 1, "returncode": 1},
        {
            "kind": "stream.ended",
            "seq": 5,
            "ts": 2.0,
            "stream": "t1",
            "outcome": "failed",
            "reason": "the agent exited with status 1",
            "timing": None,
            "exit_status": 1,
        },
    ]


def _raw(entries: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in entries)


def _info(outcome: str = "failed", reason: str = "the agent exited with status 1") -> dict[str, Any]:
    return {"turns": [{"id": "t1", "state": outcome, "outcome": outcome, "reason": reason, "ended": True}]}


def _reader(entries: list[dict[str, Any]], seqs: list[int]) -> Received:
    rec = Received(name="r")
    by_seq = {e["seq"]: e for e in entries}
    for s in seqs:
        rec.add(s, by_seq[s]["kind"], by_seq[s])
        if by_seq[s]["kind"] == "stream.ended":
            rec.terminal = by_seq[s]
    return rec


def test_a_good_log_and_reader_pass() -> None:
    log = _log()
    assert check_log(_raw(log), log, _info()) == []
    assert check_subscriber(_reader(log, [2, 3, 4, 5]), log, stream="t1") == []
    assert check_subscriber(_reader(log, [1, 2, 3, 4, 5]), log, stream="t1", whole_session=True) == []


def test_log_problems_are_caught() -> None:
    log = _log()
    gap = [e for e in log if e["seq"] != 3]
    assert any("1..N" in p for p in check_log(_raw(gap), gap, _info()))
    twice = [*log, {**log[-1], "seq": 6}]
    assert any("2 stream.ended" in p for p in check_log(_raw(twice), twice, _info()))
    open_stream = log[:-1]
    problems = check_log(_raw(open_stream), open_stream, {"turns": [{"id": "t1", "ended": False}]})
    assert any("0 stream.ended" in p for p in problems)
    assert any("not ended" in p or "still open" in p for p in problems)
    assert any("server says" in p for p in check_log(_raw(log), log, _info(reason="something else")))
    assert any("server says" in p for p in check_log(_raw(log), log, _info(outcome="completed")))


def test_reader_problems_are_caught() -> None:
    log = _log()
    assert check_subscriber(_reader(log, [2, 4, 5]), log, stream="t1")  # a gap
    assert check_subscriber(_reader(log, [2, 3, 3, 4, 5]), log, stream="t1")  # a duplicate
    assert check_subscriber(_reader(log, [2, 3, 4]), log, stream="t1")  # no terminal entry
    assert check_subscriber(_reader(log, [2, 4, 3, 5]), log, stream="t1")  # out of order
    changed = _reader(log, [2, 3, 4, 5])
    changed.data[1] = {**changed.data[1], "bytes": 999}
    assert check_subscriber(changed, log, stream="t1")  # content differs from the log
