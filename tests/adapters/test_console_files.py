"""The console's files: every module it imports is there, and the vendored libraries are exactly the
pinned versions, with their licences, served by the server."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.adapters.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "adapters" / "console"
VENDOR = CONSOLE / "vendor"
PINS = json.loads((ROOT / "tools" / "console-vendor" / "package.json").read_text())["dependencies"]

# What each vendored file must say about its version (the upstream headers).
HEADERS = {
    "marked.esm.js": f"marked v{PINS['marked']}",
    "purify.es.mjs": f"DOMPurify {PINS['dompurify']}",
    "highlight.min.js": f"Highlight.js v{PINS['@highlightjs/cdn-assets']}",
}


def test_every_import_of_the_console_resolves() -> None:
    for module in CONSOLE.glob("*.js"):
        for target in re.findall(r'^import [^;]*? from "(\./[^"]+)";', module.read_text(), re.M):
            assert (CONSOLE / target).is_file(), f"{module.name} imports {target}, which is missing"


def test_vendored_files_are_the_pinned_versions_with_licences() -> None:
    listed = (VENDOR / "VERSIONS.txt").read_text()
    for name, header in HEADERS.items():
        assert header in (VENDOR / name).read_text()[:600], (name, header)
    for path in VENDOR.iterdir():
        if path.name != "VERSIONS.txt":
            assert f"{path.name}  <-  " in listed, f"{path.name} is not in VERSIONS.txt"
    for licence in ("LICENSE.marked.md", "LICENSE.dompurify.txt", "LICENSE.highlight.js.txt"):
        assert (VENDOR / licence).stat().st_size > 500
    for package, version in PINS.items():
        assert f"{package}@{version} " in listed


def test_the_wheel_carries_the_vendored_files() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"console/vendor/*"' in pyproject


async def test_the_server_serves_the_console_the_viewer_and_the_libraries(server: Server) -> None:
    async with server.client() as c:
        for path, kind in [
            ("/", "text/html"),
            ("/replay", "text/html"),
            ("/console/console.js", "javascript"),
            ("/console/replay.js", "javascript"),
            ("/console/vendor/marked.esm.js", "javascript"),
            ("/console/vendor/purify.es.mjs", "javascript"),
            ("/console/vendor/highlight-github.min.css", "text/css"),
        ]:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.status_code)
            assert kind in r.headers["content-type"], (path, r.headers["content-type"])
