"""Turnstile as a user installs it: build the sdist and the wheel, install the wheel into an empty venv,
and run ``turnstile serve``, ``replay`` and ``diagram`` from a directory that is not the repository.

The build runs on a copy of the repository's files (``git ls-files``), as a fresh clone would, so it
leaves nothing in the work tree. Dependencies come from the package index; pip's cache keeps the second
run fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.net import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "transcripts" / "turnstile__tool-use-two-turns.ndjson"
BUILD_TIMEOUT = 300
# Machine-level pip configuration notes (this machine's pip.conf names local indexes); not ours.
_PIP_CONFIG_NOTE = re.compile(r"WARNING: Location '.*' is ignored")
# Test tools, the real CLI and the benchmarks' peers: none of them belongs in a serve install.
NOT_FOR_SERVING = {
    "pytest",
    "pytest-trio",
    "hypothesis",
    "mypy",
    "ruff",
    "playwright",
    "claude-agent-sdk",
    "build",
    "httpx",
    "orjson",
    "sse-starlette",
}


def _run(
    argv: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=cwd, env=env
    )
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing that points Python at the repository or our venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _deprecations(output: str) -> list[str]:
    return [line for line in output.splitlines() if "deprecat" in line.lower()]


@dataclass
class Dists:
    sdist: Path
    wheel: Path
    wheel_from_sdist: Path
    build_output: str


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    work = tmp_path_factory.mktemp("build")
    clone = work / "clone"
    files = _run(
        ["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    ).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree
        dst = clone / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)  # turnstile/engine etc. stay symbolic links
    tree = _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", work / "tree", clone])
    (sdist,) = (work / "tree").glob("turnstile-*.tar.gz")
    (wheel,) = (work / "tree").glob("turnstile-*.whl")
    again = _run([sys.executable, "-m", "build", "--wheel", "--outdir", work / "from-sdist", sdist])
    (wheel_from_sdist,) = (work / "from-sdist").glob("turnstile-*.whl")
    output = "\n".join([tree.stdout, tree.stderr, again.stdout, again.stderr])
    return Dists(sdist, wheel, wheel_from_sdist, output)


def _wheel_files(wheel: Path) -> dict[str, str]:
    """Name -> sha256 of every file in the wheel except its RECORD (which lists the hashes itself)."""
    with zipfile.ZipFile(wheel) as z:
        return {
            n: hashlib.sha256(z.read(n)).hexdigest()
            for n in z.namelist()
            if not n.endswith(".dist-info/RECORD")
        }


def _repo_files(top: str, pattern: str) -> set[str]:
    return {p.relative_to(ROOT / top).as_posix() for p in (ROOT / top).glob(pattern) if p.is_file()}


def test_the_build_prints_no_deprecation_warning(dists: Dists) -> None:
    assert _deprecations(dists.build_output) == []


def test_the_wheel_holds_the_package_and_its_data_and_nothing_else(dists: Dists) -> None:
    names = set(_wheel_files(dists.wheel))
    tops = {n.split("/")[0] for n in names}
    dist_info = next(t for t in tops if t.endswith(".dist-info"))
    assert tops == {"turnstile", dist_info}, "only the one import name; no engine/, adapters/, tests/, bench/"
    expected = {"turnstile/__init__.py", "turnstile/py.typed"}
    expected |= {f"turnstile/specs/{n}" for n in _repo_files("specs", "*.toml")}
    for top in ("engine", "adapters"):
        expected |= {f"turnstile/{top}/{n}" for n in _repo_files(top, "**/*.py")}
        expected.add(f"turnstile/{top}/py.typed")
    expected |= {f"turnstile/adapters/console/{n}" for n in _repo_files("adapters/console", "*")}
    expected |= {
        f"turnstile/engine/agents/recordings/{n}" for n in _repo_files("engine/agents/recordings", "*")
    }
    assert len(_repo_files("specs", "*.toml")) == 3
    assert expected - names == set(), "missing from the wheel"
    with zipfile.ZipFile(dists.wheel) as z:
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
        metadata = z.read(f"{dist_info}/METADATA").decode()
    assert "turnstile = turnstile.adapters.cli:main" in entry_points
    assert "License-Expression: MIT" in metadata
    requires = {
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    }
    serving = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert serving & NOT_FOR_SERVING == set(), "a test tool among the serving dependencies"
    assert "prometheus-client" in serving


def test_the_sdist_builds_the_same_wheel(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert "turnstile/specs/session.toml" in members and "docs/api.md" in members
    assert not any(m.startswith("tests/") for m in members)
    tree, from_sdist = _wheel_files(dists.wheel), _wheel_files(dists.wheel_from_sdist)
    assert sorted(set(tree) ^ set(from_sdist)) == []
    assert [n for n in tree if tree[n] != from_sdist[n]] == []


@pytest.fixture(scope="module")
def venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty venv with only the wheel (and what it depends on) installed."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", where], env=_clean_env())
    installed = _run([where / "bin" / "python", "-m", "pip", "install", dists.wheel], env=_clean_env())
    output = installed.stdout + installed.stderr
    warnings = [
        line for line in output.splitlines() if "warn" in line.lower() and not _PIP_CONFIG_NOTE.search(line)
    ]
    assert warnings == [], "pip install of the wheel warned"
    yield where


def _installed(venv: Path) -> set[str]:
    listed = _run([venv / "bin" / "python", "-m", "pip", "list", "--format", "json"], env=_clean_env()).stdout
    return {d["name"].lower().replace("_", "-") for d in json.loads(listed)}


def test_the_serve_install_is_small_and_has_no_test_tools(venv: Path) -> None:
    installed = _installed(venv)
    assert "turnstile" in installed and "prometheus-client" in installed
    assert installed & NOT_FOR_SERVING == set()
    size = sum(p.lstat().st_size for p in venv.rglob("*"))
    print(f"fresh venv with the wheel: {size / 2**20:.1f} MiB")
    assert size < 100 * 2**20  # the README's figure for `make demo` is about half of this bound


def test_installed_commands_run_outside_the_repository(venv: Path, tmp_path: Path) -> None:
    turnstile = venv / "bin" / "turnstile"
    where = tmp_path / "elsewhere"
    where.mkdir()
    env = _clean_env()
    code = "import turnstile, importlib.util as u; print(turnstile.__file__, u.find_spec('engine'))"
    out = _run([venv / "bin" / "python", "-c", code], cwd=where, env=env).stdout.split()
    assert Path(out[0]).is_relative_to(venv) and out[1] == "None"  # the wheel's copy; no bare `engine`

    diagram = _run([turnstile, "diagram", "all"], cwd=where, env=env).stdout
    assert diagram.count("stateDiagram-v2") == 3  # specs/*.toml read from the installed package

    replay = _run([turnstile, "replay", FIXTURE], cwd=where, env=env).stdout
    assert "2 streams (2 completed)" in replay and "no violations" in replay


def test_installed_server_serves_a_turn_and_stops_on_sigterm(venv: Path, tmp_path: Path) -> None:
    where = tmp_path / "elsewhere"
    where.mkdir()
    port = free_port()
    argv = [venv / "bin" / "turnstile", "serve", "--port", str(port), "--ws-port", "-1", "--sim-speed", "0"]
    log = (tmp_path / "serve.log").open("wb")  # a file, not a pipe nobody drains while the server runs
    proc = subprocess.Popen(
        [str(a) for a in argv], cwd=where, env=_clean_env(), stdout=log, stderr=log, start_new_session=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the installed server did not answer /healthz"
                time.sleep(0.05)  # polling a condition (the port opening), with the deadline above
            sid = client.post("/v1/sessions", json={}).json()["id"]
            turn = client.post(f"/v1/sessions/{sid}/turns", json={"prompt": '[[sim say="from the wheel"]]'})
            assert turn.status_code == 202, turn.text
            with connect_sse(client, "GET", turn.json()["events_url"]) as source:
                events = list(source.iter_sse())
            assert events[-1].event == "stream.ended"
            assert json.loads(events[-1].data)["outcome"] == "completed"
            assert any("from the wheel" in e.data for e in events if e.event == "cli.assistant")
            assert client.get("/").status_code == 200  # the console, from the package's data
            assert "turnstile_streams_total" in client.get("/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
        assert (where / "turnstile-data").is_dir()  # the default data directory, in the cwd
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
