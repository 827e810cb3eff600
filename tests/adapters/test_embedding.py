"""docs/embedding.md's examples run, and the page shows them exactly as they are in docs/examples/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import trio

from tests.adapters.conftest import free_port, sse_events
from tests.net import JSON

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[2] / "docs"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", DOCS / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["embed_engine", "embed_starlette"])
def test_the_page_shows_the_example_verbatim(name: str) -> None:
    code = (DOCS / "examples" / f"{name}.py").read_text().rstrip("\n")
    assert code in (DOCS / "embedding.md").read_text()


async def test_engine_example_runs_a_turn() -> None:
    text, outcome = await load("embed_engine").ask('[[sim say="Hello from the engine"]]')
    assert (text, outcome) == ("Hello from the engine", "completed")


async def test_starlette_example_serves_both_apps(nursery: trio.Nursery) -> None:
    port = free_port()
    await nursery.start(load("embed_starlette").main, port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=JSON, timeout=30) as c:
        assert (await c.get("/")).json()["app"] == "my dashboard"
        r = await c.post("/agent/v1/sessions", json={})
        assert r.status_code == 201
        sid = r.json()["id"]
        r = await c.post(f"/agent/v1/sessions/{sid}/turns", json={"prompt": "mounted"})
        url = r.json()["events_url"]
        assert url.startswith("/agent/v1/")
        events = await sse_events(c, url)
        assert events[-1].event == "stream.ended"
    nursery.cancel_scope.cancel()
