"""Bad HTTP input: the documented 4xx with a JSON error code, never a 500, and the server unaffected.

One in-process server takes a table of bad requests (malformed JSON, wrong types, huge prompts,
unknown ids, bad ``Last-Event-ID`` values, wrong methods), then a few hundred seeded random requests;
a second one checks the token. Afterwards the server answers ``/healthz`` and runs a turn to its end.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.net import JSON
from tests.reliability.matrix import run_turn
from tests.reliability.servers import inproc_server, runtime_config
from turnstile.adapters.config import ServerConfig

pytestmark = pytest.mark.slow

MIB = 1 << 20


def _code(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return code if isinstance(code, str) else None
    return None


async def test_bad_requests_get_the_documented_4xx(tmp_path: Path) -> None:
    rc = runtime_config(tmp_path / "data", pool_size=1)
    async with inproc_server(rc) as live, live.client() as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        outcome, problems = await run_turn(c, sid, "a first turn")
        assert outcome == "completed", problems
        turns = f"/v1/sessions/{sid}/turns"
        events = f"/v1/sessions/{sid}/turns/t1/events"
        last = (await c.get(f"/v1/sessions/{sid}")).json()["last_seq"]
        # (method, path, kwargs, status, code)
        cases: list[tuple[str, str, dict[str, Any], int, str | None]] = [
            # malformed JSON and wrong types
            ("POST", "/v1/sessions", {"content": b"{"}, 400, "invalid_json"),
            ("POST", "/v1/sessions", {"content": b"\xff\xfe{}"}, 400, "invalid_json"),
            ("POST", "/v1/sessions", {"content": b"[]"}, 400, "invalid_body"),
            ("POST", "/v1/sessions", {"content": b'"a string"'}, 400, "invalid_body"),
            ("POST", "/v1/sessions", {"json": {"agent": "gpt"}}, 400, "invalid_agent"),
            ("POST", "/v1/sessions", {"json": {"agent": 5}}, 400, "invalid_body"),
            ("POST", "/v1/sessions", {"json": {"unknown": 1}}, 400, "invalid_body"),
            ("POST", "/v1/sessions", {"json": {"allowed_tools": "Bash"}}, 400, "invalid_body"),
            ("POST", "/v1/sessions", {"json": {"partial_messages": "yes"}}, 400, "invalid_body"),
            ("POST", "/v1/sessions", {"json": {"model": ["x"]}}, 400, "invalid_body"),
            ("POST", "/v1/sessions", {"json": {"session_id": "../etc/passwd"}}, 400, "invalid_config"),
            ("POST", "/v1/sessions", {"json": {"session_id": "x" * 500}}, 400, "invalid_config"),
            ("POST", "/v1/sessions", {"json": {"session_id": ""}}, 400, "invalid_config"),
            ("POST", "/v1/sessions", {"json": {"session_id": sid}}, 409, "session_exists"),
            ("POST", turns, {}, 400, "missing_body"),
            ("POST", turns, {"content": b"   "}, 400, "missing_body"),
            ("POST", turns, {"content": b'{"prompt": "x"'}, 400, "invalid_json"),
            ("POST", turns, {"content": b'{"prompt": "\xff"}'}, 400, "invalid_json"),
            ("POST", turns, {"json": {"prompt": 5}}, 400, "invalid_body"),
            ("POST", turns, {"json": {"prompt": None}}, 400, "invalid_body"),
            ("POST", turns, {"json": {"prompt": ["a"]}}, 400, "invalid_body"),
            ("POST", turns, {"json": {}}, 400, "invalid_body"),
            ("POST", turns, {"json": {"prompt": "x", "extra": 1}}, 400, "invalid_body"),
            ("POST", turns, {"json": {"prompt": ""}}, 400, "empty_prompt"),
            ("POST", turns, {"json": {"prompt": " \n\t "}}, 400, "empty_prompt"),
            ("POST", turns, {"json": [1, 2]}, 400, "invalid_body"),
            # huge prompts
            ("POST", turns, {"json": {"prompt": "x" * (MIB + 10)}}, 413, "prompt_too_large"),
            ("POST", turns, {"content": b" " * (2 * MIB)}, 413, "prompt_too_large"),
            # unknown ids
            ("GET", "/v1/sessions/nope", {}, 404, "session_not_found"),
            ("GET", "/v1/sessions/" + "n" * 2000, {}, 404, "session_not_found"),
            ("GET", "/v1/sessions/%2e%2e", {}, 404, None),
            ("GET", "/v1/sessions/..%2Fetc", {}, 404, None),
            ("DELETE", "/v1/sessions/nope", {}, 404, "session_not_found"),
            ("GET", "/v1/sessions/nope/log", {}, 404, "session_not_found"),
            ("GET", "/v1/sessions/nope/events", {}, 404, "session_not_found"),
            ("POST", "/v1/sessions/nope/turns", {"json": {"prompt": "x"}}, 404, "session_not_found"),
            ("GET", f"/v1/sessions/{sid}/turns/t999", {}, 404, "turn_not_found"),
            ("GET", f"/v1/sessions/{sid}/turns/t999/events", {}, 404, "turn_not_found"),
            ("POST", f"/v1/sessions/{sid}/turns/t999/interrupt", {}, 404, "turn_not_found"),
            ("GET", f"/v1/sessions/{sid}/turns/%00/events", {}, 404, None),
            ("GET", "/v1/nothing-here", {}, 404, "not_found"),
            # bad Last-Event-ID / after values
            ("GET", events, {"headers": {"last-event-id": "abc"}}, 400, "invalid_last_event_id"),
            ("GET", events, {"headers": {"last-event-id": "-1"}}, 400, "invalid_last_event_id"),
            ("GET", events, {"headers": {"last-event-id": "1.5"}}, 400, "invalid_last_event_id"),
            ("GET", events, {"headers": {"last-event-id": "1e3"}}, 400, "invalid_last_event_id"),
            ("GET", events, {"headers": {"last-event-id": "9" * 40}}, 400, "invalid_last_event_id"),
            ("GET", events, {"headers": {"last-event-id": str(last + 1)}}, 400, "invalid_last_event_id"),
            ("GET", events, {"params": {"after": "x"}}, 400, "invalid_last_event_id"),
            ("GET", events, {"headers": {"last-event-id": str(last)}}, 204, None),
            (
                "GET",
                f"/v1/sessions/{sid}/events",
                {"headers": {"last-event-id": "-5"}},
                400,
                "invalid_last_event_id",
            ),
            ("GET", f"/v1/sessions/{sid}/log", {"params": {"after": "x"}}, 400, "invalid_after"),
            ("GET", f"/v1/sessions/{sid}/log", {"params": {"after": "-1"}}, 400, "invalid_after"),
            ("GET", f"/v1/sessions/{sid}/log", {"params": {"after": str(last + 1)}}, 400, "invalid_after"),
            # wrong methods
            ("PUT", "/v1/sessions", {}, 405, "method_not_allowed"),
            ("PUT", f"/v1/sessions/{sid}", {}, 405, "method_not_allowed"),
            ("PATCH", f"/v1/sessions/{sid}", {}, 400, "missing_body"),
            ("DELETE", "/healthz", {}, 405, "method_not_allowed"),
            ("POST", "/readyz", {}, 405, "method_not_allowed"),
            ("GET", turns, {}, 405, "method_not_allowed"),
            ("POST", events, {}, 405, "method_not_allowed"),
            ("GET", f"/v1/sessions/{sid}/turns/t1/interrupt", {}, 405, "method_not_allowed"),
            ("DELETE", "/v1/sessions", {}, 405, "method_not_allowed"),
        ]
        wrong = []
        for method, path, kw, status, code in cases:
            r = await c.request(method, path, **kw)
            if r.status_code != status or (code is not None and _code(r) != code):
                wrong.append(f"{method} {path[:60]} {str(kw)[:60]}: {r.status_code} {r.text[:160]}")
            elif status >= 400 and _code(r) is None:
                wrong.append(f"{method} {path[:60]}: {status} without a JSON error body: {r.text[:100]}")
        # A prompt just under the limit is accepted and runs to its end (the agent gets ~1 MiB on stdin).
        outcome, problems = await run_turn(c, sid, "y" * (MIB - 64))
        if outcome != "completed" or problems:
            wrong.append(f"a prompt of 1 MiB - 64 bytes: {outcome} {problems}")
        # Odd but valid prompts.
        for prompt in ["\x00\x01", "\u2028 line separators \u2029", "[[sim nonsense=1]]", "}\n{", "\ud7ff"]:
            outcome, problems = await run_turn(c, sid, prompt)
            if outcome != "completed" or problems:
                wrong.append(f"prompt {prompt!r}: {outcome} {problems}")
        assert (await c.get("/healthz")).status_code == 200
        outcome, problems = await run_turn(c, sid, "still fine?")
        assert outcome == "completed", problems
        assert not wrong, "\n".join(wrong)


def _random_request(rng: random.Random, sid: str) -> tuple[str, str, dict[str, Any]]:
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    segment = rng.choice(
        [sid, "t1", "t2", "nope", "", "..", "%00", "%ff", "x" * rng.randint(1, 300), "€", "%2F", "-1", "s 1"]
    )
    path = rng.choice(
        [
            "/v1/sessions",
            f"/v1/sessions/{segment}",
            f"/v1/sessions/{sid}/turns",
            f"/v1/sessions/{sid}/turns/{segment}",
            f"/v1/sessions/{sid}/turns/{segment}/events",
            f"/v1/sessions/{sid}/turns/{segment}/interrupt",
            f"/v1/sessions/{segment}/events",
            f"/v1/sessions/{segment}/log",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/machines",
            f"/{segment}",
        ]
    )
    kw: dict[str, Any] = {}
    body_kind = rng.random()
    if body_kind < 0.3:
        kw["content"] = rng.randbytes(rng.randint(0, 200))
    elif body_kind < 0.7:
        value: Any = rng.choice(
            [
                None,
                True,
                1,
                -1,
                1.5,
                "x",
                [],
                {},
                [1, "a"],
                {"prompt": rng.choice([None, 1, "", "hi", [], {}])},
            ]
        )
        if rng.random() < 0.5:
            value = {rng.choice(["prompt", "agent", "model", "cwd", "session_id", "x"]): value}
        kw["content"] = json.dumps(value).encode()
    headers = {}
    if rng.random() < 0.3:
        headers["last-event-id"] = rng.choice(["", "0", "-1", "abc", "99999999", "1" * 30, "3", "0x10"])
    if rng.random() < 0.3:
        headers["content-type"] = rng.choice(["application/json", "text/plain", "multipart/form-data", "x/y"])
    if rng.random() < 0.2:
        headers["accept"] = "text/event-stream"
    if headers:
        kw["headers"] = headers
    if rng.random() < 0.2:
        kw["params"] = {"after": rng.choice(["", "0", "-3", "x", "1" * 25, "2"])}
    return method, path, kw


async def test_random_requests_never_get_a_500(tmp_path: Path) -> None:
    rng = random.Random(7)
    rc = runtime_config(tmp_path / "data", pool_size=1)
    async with inproc_server(rc) as live, live.client(timeout=10) as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        outcome, _ = await run_turn(c, sid, "hi")
        assert outcome == "completed"
        bad = []
        for _ in range(300):
            method, path, kw = _random_request(rng, sid)
            try:
                async with c.stream(method, path, **kw) as r:
                    # Read a little (an SSE answer may be a live stream); never wait for a live one.
                    if r.headers.get("content-type", "").startswith("text/event-stream"):
                        pass
                    else:
                        await r.aread()
                    status = r.status_code
            except httpx.TransportError as exc:
                bad.append(f"{method} {path[:80]}: transport error {exc!r}")
                continue
            if status >= 500:
                bad.append(f"{method} {path[:80]} {str(kw)[:120]}: {status}")
        assert (await c.get("/healthz")).status_code == 200
        other = (await c.post("/v1/sessions", json={})).json()["id"]
        outcome, problems = await run_turn(c, other, "still fine?")
        assert outcome == "completed", problems
        assert not bad, "\n".join(bad[:20])


async def test_missing_or_wrong_token_gets_401(tmp_path: Path) -> None:
    sc = ServerConfig(port=0, ws_port=-1, token="s3cret", heartbeat_s=0.5, send_timeout_s=2.0)
    rc = runtime_config(tmp_path / "data", pool_size=0)
    async with inproc_server(rc, sc) as live, live.client() as c:
        good = {"authorization": "Bearer s3cret"}
        sid = (await c.post("/v1/sessions", json={}, headers=good)).json()["id"]
        wrong = []
        for headers, params in [
            ({}, {}),
            ({"authorization": "Bearer wrong"}, {}),
            ({"authorization": "Bearer"}, {}),
            ({"authorization": "Basic czNjcmV0"}, {}),
            ({"authorization": "s3cret"}, {}),
            ({}, {"token": "wrong"}),
            ({}, {"token": ""}),
            ({"authorization": "Bearer s3cret-and-more"}, {}),
        ]:
            for method, path in [
                ("GET", "/v1/sessions"),
                ("POST", "/v1/sessions"),
                ("GET", f"/v1/sessions/{sid}/log"),
                ("POST", f"/v1/sessions/{sid}/turns"),
                ("GET", "/metrics"),
            ]:
                r = await c.request(method, path, headers=headers, params=params, json={"prompt": "x"})
                if r.status_code != 401 or _code(r) != "unauthorized":
                    wrong.append(f"{method} {path} {headers} {params}: {r.status_code} {r.text[:100]}")
        assert (await c.get("/v1/sessions", params={"token": "s3cret"})).status_code == 200
        async with httpx.AsyncClient(base_url=live.base, headers={**JSON, **good}, timeout=30) as authed:
            outcome, problems = await run_turn(authed, sid, "hi")
        assert outcome == "completed", problems
        assert not wrong, "\n".join(wrong)


async def test_last_event_id_must_be_a_plain_integer(tmp_path: Path) -> None:
    """docs/api.md: a ``Last-Event-ID`` "that is not a non-negative integer" gets 400. Python's ``int()``
    also takes ``1_0`` (= 10), ``+3`` and surrounding whitespace, so those resume from a seq the client
    never sent instead of failing."""
    rc = runtime_config(tmp_path / "data", pool_size=0)
    async with inproc_server(rc) as live, live.client() as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        outcome, _ = await run_turn(c, sid, "hi")
        assert outcome == "completed"
        wrong = []
        for value in ["1_0", "+3", "0_1"]:
            async with c.stream("GET", f"/v1/sessions/{sid}/events", headers={"last-event-id": value}) as r:
                if r.status_code != 400:
                    wrong.append(f"Last-Event-ID {value!r}: {r.status_code}")
        assert not wrong, wrong
