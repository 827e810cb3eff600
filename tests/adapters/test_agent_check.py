"""The server's agent check: ``turnstile doctor`` at start, shown in ``/readyz`` and ``GET /v1/agent``.

A real server on loopback whose default agent is a stand-in ``claude`` (the simulator behind a script: it
lacks ``get_context_usage``), a CLI that dies at once (the server is then not ready, and says why), the
built-in simulator (not probed), and the check turned off.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from turnstile.adapters.config import ServerConfig
from turnstile.adapters.server import run_server
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig

ROOT = Path(__file__).resolve().parents[2]


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "claude"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def sim_as_claude(tmp_path: Path) -> str:
    return script(
        tmp_path,
        f'PYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -m turnstile.engine.agents.sim '
        '--speed 1 "$@"',
    )


async def serve(
    nursery: trio.Nursery, tmp_path: Path, agent: AgentConfig, **server: Any
) -> httpx.AsyncClient:
    config = ServerConfig(port=0, ws_port=-1, **server)
    runtime = RuntimeConfig(data_dir=str(tmp_path / "data"), pool_size=0, default_agent=agent)
    ports = await nursery.start(run_server, config, runtime)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http}", timeout=30)


async def checked(client: httpx.AsyncClient) -> httpx.Response:
    """``/readyz`` once the agent check is done (it runs in the background after start)."""
    with trio.fail_after(60):
        while True:
            r = await client.get("/readyz")
            if r.json()["agent"]["state"] != "checking":
                return r
            await trio.sleep(0.1)


async def test_a_degraded_cli_is_reported_and_the_server_stays_ready(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    client = await serve(nursery, tmp_path, AgentConfig(agent="claude", binary=sim_as_claude(tmp_path)))
    async with client:
        first = await client.get("/readyz")
        assert first.status_code == 200 and first.json()["agent"]["state"] in ("checking", "degraded")
        ready = await checked(client)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        agent = ready.json()["agent"]
        assert agent["state"] == "degraded" and agent["version"] == "sim-0.1" and agent["source"] == "flag"
        missing = {m["name"]: m for m in agent["missing"]}
        assert (
            "get_context_usage" in missing
            and "primed with `initialize` only" in missing["get_context_usage"]["without"]
        )
        full = (await client.get("/v1/agent")).json()
        assert full["state"] == "degraded" and {c["name"] for c in full["capabilities"]} >= {
            "stream_json",
            "interrupt",
        }
        assert full["probe"].startswith("offline")
        # The server works with it all the same.
        sid = (await client.post("/v1/sessions", json={})).json()["id"]
        turn = await client.post(f"/v1/sessions/{sid}/turns", json={"prompt": "hi"})
        assert turn.status_code in (200, 201, 202), turn.text


async def test_a_cli_that_cannot_run_a_turn_makes_the_server_not_ready(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    binary = script(tmp_path, "echo 'this is not Claude Code' >&2; exit 1")
    client = await serve(nursery, tmp_path, AgentConfig(agent="claude", binary=binary))
    async with client:
        ready = await checked(client)
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["agent"]["state"] == "unusable"
        assert (
            "the agent CLI cannot run turns" in body["reason"] and "this is not Claude Code" in body["reason"]
        )
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_simulator_and_a_check_turned_off_are_not_probed(
    nursery: trio.Nursery, tmp_path: Path, enabled: bool
) -> None:
    agent = (
        AgentConfig(agent="sim") if enabled else AgentConfig(agent="claude", binary=sim_as_claude(tmp_path))
    )
    client = await serve(nursery, tmp_path, agent, agent_check=enabled)
    async with client:
        body = (await client.get("/readyz")).json()
        assert body["ready"] is True and body["agent"]["state"] == "skipped"
        assert ("simulator" if enabled else "TURNSTILE_AGENT_CHECK=0") in body["agent"]["summary"]
        assert (await client.get("/v1/agent")).json()["state"] == "skipped"


def test_agent_check_from_the_environment() -> None:
    assert ServerConfig.from_env({}).agent_check is True
    assert ServerConfig.from_env({"TURNSTILE_AGENT_CHECK": "0"}).agent_check is False
    assert ServerConfig.from_env({"TURNSTILE_AGENT_CHECK": "off"}).agent_check is False
    assert ServerConfig.from_env({"TURNSTILE_AGENT_CHECK": "1"}).agent_check is True
