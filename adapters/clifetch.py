"""Install a chosen version of the Claude Code CLI from the npm registry into a cache, for ``--claude-bin``.

``@anthropic-ai/claude-code`` comes in two shapes, read from each version's registry metadata:

* **native** (2.1.113 and later): ``optionalDependencies`` names one package per platform
  (``@anthropic-ai/claude-code-linux-x64``, ``…-linux-x64-musl``, ``…-darwin-arm64``, …, all at the same
  version) whose tarball holds the native ``claude`` executable; the main package's ``bin/claude.exe`` is a
  placeholder a postinstall script replaces. We fetch only the platform package.
* **js** (older versions): ``bin`` is ``cli.js``, run with Node.js (``engines.node``, e.g. ``>=18``). We
  fetch the main package and write a small ``claude`` launcher that runs it with the Node found at fetch
  time (or ``node`` on PATH if that one is gone later).

Everything goes through ``npm view`` and ``npm pack``, so the user's npm configuration (registry, proxy,
CA file, auth) applies and npm checks every tarball against the registry's integrity hash. No package
script runs, and the CLI's own auto-updater never does (``DISABLE_AUTOUPDATER=1`` for the check run).

The cache holds ``<cache>/<version>/claude`` (the executable or launcher), ``package/`` (the rest of the
tarball) and ``fetched.json`` (provenance). A fetch unpacks into a temporary directory beside it and
renames it into place once ``claude --version`` answered with the right version, so a half-done or broken
fetch is never used; a version already in the cache needs no network at all.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from turnstile.engine.errors import CliFetchError

__all__ = [
    "CACHE_ENV",
    "PACKAGE",
    "CachedCli",
    "cached_cli",
    "cached_versions",
    "default_cache_dir",
    "fetch_cli",
    "platform_key",
]

PACKAGE: Final = "@anthropic-ai/claude-code"
CACHE_ENV: Final = "TURNSTILE_CLI_CACHE"
"""Overrides the cache directory (default: ``$XDG_CACHE_HOME/turnstile/cli``, else ``~/.cache/…``)."""

_EXACT: Final = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
_TAG: Final = re.compile(r"^[A-Za-z][0-9A-Za-z._-]*$")
_META: Final = "fetched.json"
_VERSION_TIMEOUT_S: Final = 60.0
_DOWNLOAD_S: Final = 900.0  # a native build is ~190 MB

Shape = Literal["native", "js"]


class CachedCli(msgspec.Struct, frozen=True, kw_only=True):
    """One installed version: where its executable is and where it came from (``fetched.json``)."""

    version: str
    path: str
    shape: Shape
    package: str  # the npm package whose tarball was unpacked, with its version
    integrity: str = ""
    tarball: str = ""
    platform: str = ""
    engines_node: str | None = None
    node: str | None = None  # the Node.js the launcher runs (js shape)
    fetched_at: str = ""
    cli_version: str = ""  # what `claude --version` printed


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$TURNSTILE_CLI_CACHE``, else ``$XDG_CACHE_HOME/turnstile/cli``, else ``~/.cache/turnstile/cli``."""
    environ = os.environ if env is None else env
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "turnstile" / "cli"


def platform_key() -> str:
    """This machine's key in the CLI's platform table: ``linux-x64``, ``linux-arm64-musl``…"""
    system = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower()
    cpu = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    key = f"{system}-{cpu}"
    if system == "linux" and _is_musl():
        key += "-musl"
    return key


def _is_musl() -> bool:
    libc, _ = platform.libc_ver()
    if libc == "glibc":
        return False
    return any(Path("/lib").glob("ld-musl-*")) if Path("/lib").is_dir() else False


def cached_cli(version: str, cache_dir: Path | None = None) -> CachedCli | None:
    """The installed ``version`` if the cache holds a complete, runnable copy, else None. No network."""
    root = (cache_dir or default_cache_dir()) / version
    try:
        meta = msgspec.json.decode((root / _META).read_bytes(), type=CachedCli)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    path = root / "claude"
    if not (path.is_file() and os.access(path, os.X_OK)):
        return None
    return msgspec.structs.replace(meta, path=str(path))


def cached_versions(cache_dir: Path | None = None) -> list[CachedCli]:
    """Every complete version in the cache, oldest version first."""
    root = cache_dir or default_cache_dir()
    found = [c for p in root.glob("*") if p.is_dir() and (c := cached_cli(p.name, root)) is not None]
    return sorted(found, key=lambda c: _version_key(c.version))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in re.split(r"[.-]", version))


# --- npm --------------------------------------------------------------------------------------------------


class _Npm:
    """Runs ``npm`` with the options every call shares; turns its failures into :class:`CliFetchError`."""

    def __init__(self, npm: str | None, registry: str | None, timeout_s: float) -> None:
        found = npm or shutil.which("npm")
        if not found:
            raise CliFetchError(
                "npm is not installed (it comes with Node.js): Turnstile fetches CLI versions with "
                "`npm view` and `npm pack`. Install Node.js, or pass --claude-bin to a CLI you already have."
            )
        self.npm = found
        self.registry = registry
        self.timeout_s = timeout_s

    def run(self, args: list[str], cwd: Path | None = None, *, download: bool = False) -> Any:
        """``npm ARGS --json``; a ``download`` (a ~190 MB native build) gets minutes, not ``timeout_s``."""
        timeout_s = max(self.timeout_s, _DOWNLOAD_S) if download else self.timeout_s
        argv = [
            self.npm,
            *args,
            "--json",
            f"--fetch-timeout={int(timeout_s * 1000)}",
            "--fetch-retries=1",  # one retry, soon: an unreachable registry is reported in seconds
            "--fetch-retry-mintimeout=1000",
            "--fetch-retry-maxtimeout=2000",
        ]
        if self.registry:
            argv.append(f"--registry={self.registry}")
        env = dict(os.environ)
        env.update(npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false")
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s * 2 + 60,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CliFetchError(
                f"`npm {args[0]}` did not finish in {exc.timeout:.0f} s; is the registry slow?"
            ) from exc
        except OSError as exc:
            raise CliFetchError(f"cannot run {self.npm}: {exc}") from exc
        out = proc.stdout.decode(errors="replace").strip()
        try:
            data = json.loads(out) if out else None
        except ValueError:
            data = None
        if proc.returncode != 0 or (isinstance(data, dict) and "error" in data):
            raise CliFetchError(self._explain(args, data, proc.stderr.decode(errors="replace")))
        return data

    def _explain(self, args: list[str], data: Any, stderr: str) -> str:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        code = str(error.get("code") or "")
        summary = str(error.get("summary") or "").strip()
        if not summary:
            lines = [ln for ln in stderr.splitlines() if ln.strip() and "complete log" not in ln]
            summary = lines[-1] if lines else f"npm exited with an error ({' '.join(args[:2])})"
        where = self.registry or "the npm registry"
        if code == "E404":
            return f"{summary} on {where}: check the version (`npm view {PACKAGE} versions`)."
        if code in {"ECONNREFUSED", "ENOTFOUND", "ETIMEDOUT", "EAI_AGAIN", "ECONNRESET", "EHOSTUNREACH"} or (
            "FetchError" in summary
        ):
            why = code or "network error"
            return f"registry unreachable ({why}): {summary}. Check the network or npm's proxy."
        return f"npm {args[0]} failed{f' ({code})' if code else ''}: {summary}"


# --- fetching ---------------------------------------------------------------------------------------------


def fetch_cli(
    spec: str,
    *,
    cache_dir: Path | None = None,
    platform: str | None = None,
    registry: str | None = None,
    npm: str | None = None,
    force: bool = False,
    timeout_s: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> tuple[CachedCli, bool]:
    """Install ``spec`` (an exact version such as ``2.1.220``, or a dist-tag such as ``latest``).

    Returns the installed CLI and whether it was already in the cache (an exact version in the cache needs
    no network; ``force`` fetches it again). ``timeout_s`` bounds each registry request.

    Raises:
        CliFetchError: no such version, registry unreachable, npm or Node.js missing, no build for this
            platform, or the unpacked CLI did not report the expected version.
    """
    say = progress or (lambda _message: None)
    root = cache_dir or default_cache_dir()
    spec = spec.strip()
    if not (_EXACT.match(spec) or _TAG.match(spec)):
        raise CliFetchError(f"{spec!r} is neither a version (e.g. 2.1.220) nor a dist-tag (e.g. latest)")
    if _EXACT.match(spec) and not force:
        hit = cached_cli(spec, root)
        if hit is not None:
            return hit, True
    client = _Npm(npm, registry, timeout_s)
    meta = client.run(["view", f"{PACKAGE}@{spec}", "version", "bin", "optionalDependencies", "engines"])
    if isinstance(meta, list):
        raise CliFetchError(f"{spec!r} matches {len(meta)} versions; give one exact version")
    if not isinstance(meta, dict) or not isinstance(meta.get("version"), str):
        raise CliFetchError(f"{PACKAGE}@{spec}: the registry returned no version for it")
    version: str = meta["version"]
    if not force:
        hit = cached_cli(version, root)
        if hit is not None:
            return hit, True
    key = platform or platform_key()
    native = {
        name: ver
        for name, ver in (meta.get("optionalDependencies") or {}).items()
        if name.startswith(f"{PACKAGE}-")
    }
    bins = meta.get("bin") or {}
    entry = bins.get("claude") if isinstance(bins, dict) else None
    if native:
        package = f"{PACKAGE}-{key}"
        if package not in native:
            raise CliFetchError(
                f"{PACKAGE}@{version} has no native build for {key} (it has: "
                f"{', '.join(sorted(n.removeprefix(PACKAGE + '-') for n in native))}); pass --platform"
            )
        shape: Shape = "native"
        target = f"{package}@{native[package]}"
    elif isinstance(entry, str) and entry.endswith(".js"):
        package, shape, target = PACKAGE, "js", f"{PACKAGE}@{version}"
    else:
        raise CliFetchError(
            f"{PACKAGE}@{version} ships neither a native build nor cli.js (bin: {bins!r}); cannot run it"
        )
    node: str | None = None
    if shape == "js":
        if sys.platform == "win32":
            raise CliFetchError(f"{PACKAGE}@{version} ships cli.js; its launcher is POSIX-only")
        node = shutil.which("node")
        if node is None:
            engines = meta.get("engines") or {}
            raise CliFetchError(
                f"{PACKAGE}@{version} ships cli.js, which runs on Node.js {engines.get('node', '')}: "
                "install Node.js (node on PATH)"
            )

    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".partial-{version}-", dir=root))
    work.chmod(0o755)  # a cache others on the machine may read
    try:
        say(f"fetching {target} ({shape}) from {registry or 'the npm registry'}")
        packed = client.run(
            ["pack", target, "--ignore-scripts", f"--pack-destination={work}"], cwd=work, download=True
        )
        if not (isinstance(packed, list) and packed and isinstance(packed[0], dict)):
            raise CliFetchError(f"npm pack {target}: unexpected output {packed!r}")
        info: dict[str, Any] = packed[0]
        tgz = work / str(info.get("filename"))
        _unpack(tgz, work)
        tgz.unlink()
        exe = work / "claude"
        if shape == "native":
            name = "claude.exe" if key.startswith("win32") else "claude"
            built = work / "package" / name
            if not built.is_file():
                raise CliFetchError(f"{target}: the tarball has no package/{name}")
            built.rename(exe)
            exe.chmod(exe.stat().st_mode | 0o111)
        else:
            assert node is not None
            script = work / "package" / str(entry)
            if not script.is_file():
                raise CliFetchError(f"{target}: the tarball has no package/{entry}")
            exe.write_text(_launcher(node, script.relative_to(work)))
            exe.chmod(0o755)
        printed = _check_version(exe, version)
        record = CachedCli(
            version=version,
            path=str(root / version / "claude"),
            shape=shape,
            package=target,
            integrity=str(info.get("integrity", "")),
            tarball=str(info.get("filename", "")),
            platform=key if shape == "native" else "any (Node.js)",
            engines_node=(meta.get("engines") or {}).get("node"),
            node=node,
            fetched_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            cli_version=printed,
        )
        (work / _META).write_bytes(msgspec.json.format(msgspec.json.encode(record)) + b"\n")
        final = root / version
        if final.exists():
            if not force and cached_cli(version, root) is not None:
                return cached_cli(version, root) or record, True  # another fetch finished first
            stale = root / f".old-{version}-{os.getpid()}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    done = cached_cli(version, root)
    if done is None:
        raise CliFetchError(f"{version} was unpacked but is not usable from {root / version}")
    return done, False


def _unpack(tgz: Path, dest: Path) -> None:
    """Unpack an npm tarball (everything under ``package/``), refusing links and paths that leave ``dest``."""
    with tarfile.open(tgz, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            if not member.name.startswith("package/") or ".." in Path(member.name).parts:
                raise CliFetchError(f"{tgz.name}: unexpected path {member.name!r} in the tarball")
            if not (member.isfile() or member.isdir()):
                raise CliFetchError(f"{tgz.name}: {member.name!r} is not a plain file")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the safe extraction filter as well
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - the checks above already refuse links and escaping paths
            tar.extractall(dest, members=members)


def _launcher(node: str, script: Path) -> str:
    """A POSIX sh launcher for a cli.js version: the Node found at fetch time, else ``node`` on PATH."""
    quoted = node.replace("'", "'\\''")
    return (
        "#!/bin/sh\n"
        "# Written by `turnstile cli fetch`: runs this version's cli.js with Node.js.\n"
        'here=$(dirname "$0")\n'
        f"if [ -x '{quoted}' ]; then exec '{quoted}' \"$here/{script}\" \"$@\"; fi\n"
        f'exec node "$here/{script}" "$@"\n'
    )


def _check_version(exe: Path, version: str) -> str:
    """Run ``exe --version`` (auto-updater off) and check it names ``version``; returns its first line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env["DISABLE_AUTOUPDATER"] = "1"
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    try:
        proc = subprocess.run(
            [str(exe), "--version"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=_VERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CliFetchError(f"the fetched CLI does not run (`{exe.name} --version`: {exc})") from exc
    first = (proc.stdout.decode(errors="replace").strip().splitlines() or [""])[0]
    if proc.returncode != 0 or not first.startswith(version):
        err = proc.stderr.decode(errors="replace").strip()[-300:]
        raise CliFetchError(
            f"the fetched CLI answered `--version` with {first or '(nothing)'!r} (exit {proc.returncode}), "
            f"expected {version}{f'; stderr: {err}' if err else ''}"
        )
    return first
