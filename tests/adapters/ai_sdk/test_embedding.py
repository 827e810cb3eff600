"""The chat endpoints mounted alone in another Starlette app (docs/examples/ai_sdk_starlette.py, shown
verbatim in docs/ai-sdk.md), driven by the SDK's client with its default paths."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import trio

from tests.adapters.ai_sdk.conftest import assert_all_valid, run_js
from tests.net import free_port

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[3] / "docs"


def load() -> ModuleType:
    path = DOCS / "examples" / "ai_sdk_starlette.py"
    spec = importlib.util.spec_from_file_location("docs_example_ai_sdk_starlette", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_page_shows_the_example_verbatim() -> None:
    code = (DOCS / "examples" / "ai_sdk_starlette.py").read_text().rstrip("\n")
    assert code in (DOCS / "ai-sdk.md").read_text()


async def test_mounted_alone_at_the_sdks_default_path(js: Path, nursery: trio.Nursery) -> None:
    port = free_port()
    await nursery.start(load().main, port)
    base = f"http://127.0.0.1:{port}"
    result = await run_js(
        js,
        {
            "op": "send",
            "version": 6,
            "api": f"{base}/api/chat",
            "chatId": "mounted",
            "text": '[[sim say="hi"]]',
        },
    )
    assert_all_valid(result["bodies"][0])
    assert [p.get("text") for p in result["first"]["message"]["parts"] if p["type"] == "text"] == ["hi"]
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        assert (await c.get("/api/chat/mounted/stream")).status_code == 204
        assert [m["role"] for m in (await c.get("/api/chat/mounted/messages")).json()] == [
            "user",
            "assistant",
        ]
        assert (await c.get("/v1/chat/mounted/messages")).status_code == 404  # only what was mounted
        r = await c.post("/api/chat", content=b"{}", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_body"
    nursery.cancel_scope.cancel()
