"""``turnstile cli fetch``: CLI versions from an npm registry into the cache — against a fake registry on 127.0.0.1.

The real ``npm`` (``npm view``, ``npm pack``) talks to a stdlib HTTP server that serves packuments and
tarballs built here: a native-shaped version (a platform package holding ``claude``), a ``cli.js``-shaped one
(run with Node.js), a version whose binary lies about its version, plus an unknown version and a closed port.
Each fake ``claude`` refuses to answer ``--version`` unless ``DISABLE_AUTOUPDATER=1``: the fetch must never
let the CLI update itself.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from turnstile.adapters.clifetch import PACKAGE, cached_cli, fetch_cli, platform_key
from turnstile.engine.errors import CliFetchError

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

NATIVE = "9.1.0"
JS = "9.0.0"
LIAR = "9.2.0"
GUARD = 'if [ "$DISABLE_AUTOUPDATER" != 1 ]; then echo "auto-updating!" >&2; exit 3; fi\n'


def _tarball(files: dict[str, tuple[str, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, (text, mode) in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class FakeRegistry:
    """Packuments and tarballs for @anthropic-ai/claude-code (and this platform's native package)."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.tarballs: dict[str, bytes] = {}
        self.packuments: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        plat = f"{PACKAGE}-{platform_key()}"
        native_exe = f"#!/bin/sh\n{GUARD}echo '{NATIVE} (Claude Code)'\n"
        liar_exe = f"#!/bin/sh\n{GUARD}echo '1.0.0 (Claude Code)'\n"
        cli_js = (
            "#!/usr/bin/env node\n"
            'if (process.env.DISABLE_AUTOUPDATER !== "1") { console.error("auto-updating!"); process.exit(3); }\n'
            f'console.log("{JS} (Claude Code)");\n'
        )
        self._add(plat, NATIVE, {"claude": (native_exe, 0o755), "package.json": ("{}", 0o644)})
        self._add(plat, LIAR, {"claude": (liar_exe, 0o755)})
        native_deps = {f"{PACKAGE}-{p}": NATIVE for p in ("darwin-arm64", platform_key())}
        self._add(
            PACKAGE,
            NATIVE,
            {"bin/claude.exe": ("placeholder", 0o644)},
            optionalDependencies=native_deps,
            bin={"claude": "bin/claude.exe"},
        )
        self._add(
            PACKAGE,
            LIAR,
            {"bin/claude.exe": ("placeholder", 0o644)},
            optionalDependencies={plat: LIAR},
            bin={"claude": "bin/claude.exe"},
        )
        self._add(
            PACKAGE, JS, {"cli.js": (cli_js, 0o755)}, bin={"claude": "cli.js"}, engines={"node": ">=18.0.0"}
        )
        self.packuments[PACKAGE]["dist-tags"] = {"latest": NATIVE}

    def _add(self, name: str, version: str, files: dict[str, tuple[str, int]], **meta: Any) -> None:
        data = _tarball(files)
        path = f"tarballs/{name.replace('/', '__')}-{version}.tgz"
        self.tarballs["/" + path] = data
        doc = self.packuments.setdefault(
            name, {"name": name, "dist-tags": {"latest": version}, "versions": {}}
        )
        doc["versions"][version] = {
            "name": name,
            "version": version,
            **meta,
            "dist": {
                "tarball": self.url + path,
                "shasum": hashlib.sha1(data).hexdigest(),
                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                registry.requests.append(self.path)
                path = unquote(self.path.split("?")[0])
                if path in registry.tarballs:
                    body, kind = registry.tarballs[path], "application/octet-stream"
                elif path.lstrip("/") in registry.packuments:
                    body, kind = (
                        json.dumps(registry.packuments[path.lstrip("/")]).encode(),
                        "application/json",
                    )
                else:
                    self.send_response(404)
                    self.send_header("content-type", "application/json")
                    body = b'{"error":"Not found"}'
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def __enter__(self) -> FakeRegistry:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRegistry]:
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))  # npm's own cache: not the user's
    with FakeRegistry() as fake:
        yield fake


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnstile.adapters.cli", "cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_native_version_is_installed_and_then_served_from_the_cache(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    done = cli("fetch", NATIVE, "--registry", registry.url, "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr
    path = done.stdout.strip()
    assert path == str(cache / NATIVE / "claude")
    ran = subprocess.run(
        [path, "--version"], capture_output=True, text=True, env={**os.environ, "DISABLE_AUTOUPDATER": "1"}
    )
    assert ran.stdout.strip() == f"{NATIVE} (Claude Code)"
    meta = json.loads((cache / NATIVE / "fetched.json").read_text())
    assert meta["shape"] == "native" and meta["package"] == f"{PACKAGE}-{platform_key()}@{NATIVE}"
    assert meta["integrity"].startswith("sha512-") and meta["cli_version"] == f"{NATIVE} (Claude Code)"
    assert not list(cache.glob(".partial-*"))
    # Cached: no registry at all the second time (the port is closed now).
    registry.server.shutdown()
    registry.server.server_close()
    again = cli("fetch", NATIVE, "--registry", registry.url, "--cache-dir", str(cache), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) | {"cached": True} == json.loads(again.stdout)
    assert json.loads(again.stdout)["path"] == path
    listing = cli("list", "--cache-dir", str(cache))
    assert listing.stdout.split("\t")[:2] == [NATIVE, "native"]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_js_version_gets_a_launcher_that_runs_cli_js_with_node(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    found, cached = fetch_cli(JS, cache_dir=tmp_path / "cache", registry=registry.url)
    assert not cached and found.shape == "js" and found.node == shutil.which("node")
    launcher = Path(found.path)
    assert launcher.name == "claude" and "cli.js" in launcher.read_text()
    ran = subprocess.run(
        [found.path, "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "DISABLE_AUTOUPDATER": "1"},
    )
    assert ran.stdout.strip() == f"{JS} (Claude Code)"
    assert cached_cli(JS, tmp_path / "cache") == found


def test_a_dist_tag_resolves_to_its_version(registry: FakeRegistry, tmp_path: Path) -> None:
    found, _ = fetch_cli("latest", cache_dir=tmp_path / "cache", registry=registry.url)
    assert found.version == NATIVE


def test_unknown_version_exits_2_with_the_reason(registry: FakeRegistry, tmp_path: Path) -> None:
    done = cli("fetch", "9.9.9", "--registry", registry.url, "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 2 and done.stdout == ""
    assert "9.9.9" in done.stderr and "check the version" in done.stderr
    assert not (tmp_path / "cache" / "9.9.9").exists()


def test_unreachable_registry_exits_2_quickly_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    done = cli("fetch", NATIVE, "--registry", f"http://127.0.0.1:{port}/", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 2
    assert "registry unreachable" in done.stderr and "ECONNREFUSED" in done.stderr


def test_a_binary_that_reports_another_version_is_refused_and_not_cached(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    with pytest.raises(CliFetchError, match=r"answered `--version` with '1\.0\.0"):
        fetch_cli(LIAR, cache_dir=tmp_path / "cache", registry=registry.url)
    assert cached_cli(LIAR, tmp_path / "cache") is None
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary directory went too


def test_no_build_for_the_platform_and_bad_specs(registry: FakeRegistry, tmp_path: Path) -> None:
    with pytest.raises(CliFetchError, match="no native build for sunos-sparc"):
        fetch_cli(NATIVE, cache_dir=tmp_path / "cache", registry=registry.url, platform="sunos-sparc")
    with pytest.raises(CliFetchError, match="neither a version"):
        fetch_cli("2.1.x", cache_dir=tmp_path / "cache", registry=registry.url)
    offline = cli("fetch", NATIVE, "--offline", "--cache-dir", str(tmp_path / "cache"))
    assert offline.returncode == 2 and "not in the cache" in offline.stderr


def test_without_npm_the_error_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from turnstile.adapters import clifetch

    monkeypatch.setattr(clifetch.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(CliFetchError, match="npm is not installed"):
        fetch_cli(NATIVE, cache_dir=tmp_path)
