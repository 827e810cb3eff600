"""Run every benchmark, print their tables, and (with ``--write-docs``) put the run into docs/performance.md.

``make bench`` runs ``python bench/run_all.py --write-docs docs/performance.md``. Each script runs in its
own process, one after another (never two at once: they would share the 2 cores). The scripts' ``target:``
lines become the summary table; their tables follow verbatim. In the docs file only the part between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is replaced.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

import _common
from _common import machine, versions

SCRIPTS = [
    "decode",
    "replay",
    "machines",
    "pipeline",
    "latency",
    "fanout",
    "redis_store",
    "fanout_nodes",
    "coldwarm",
    "footprint",
]
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def supports_quick(script: Path) -> bool:
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
    return "--quick" in out.stdout


def quick_args(script: Path) -> list[str]:
    return ["--quick"] if supports_quick(script) else []


def run_script(name: str, quick: bool, extra: list[str]) -> tuple[int, str, float]:
    script = _common.ROOT / "bench" / f"{name}.py"
    argv = [sys.executable, str(script), *(quick_args(script) if quick else []), *extra]
    print(f"\n## {name}: {' '.join(Path(a).name if a.endswith('.py') else a for a in argv[1:])}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=str(_common.ROOT))
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    rc = proc.wait()
    return rc, "".join(lines), time.monotonic() - t0


def render(outputs: dict[str, tuple[int, str, float]], quick: bool) -> str:
    targets = []
    for name, (rc, out, _) in outputs.items():
        for line in out.splitlines():
            if line.startswith("target: "):
                parts = [p.strip() for p in line[len("target: ") :].split("|")]
                targets.append(f"| {parts[0]} | {parts[1]} | {parts[2]} | {parts[3]} |")
        if rc != 0:
            targets.append(f"| {name} | (exit status {rc}, no figures) | | failed |")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ver = ", ".join(f"{k} {v}" for k, v in versions().items())
    parts = [
        BEGIN,
        "",
        f"Last run: {now}{' (quick mode: smoke figures only)' if quick else ''}.",
        f"Machine: {machine()}. Load average at the end: {_loadavg()}.",
        f"Versions: {ver}.",
        "",
        "| target | measured | goal | verdict |",
        "|---|---|---|---|",
        *targets,
        "",
    ]
    for name, (_rc, out, secs) in outputs.items():
        parts.append(f"#### `bench/{name}.py` ({secs:.0f} s)")
        body = [ln for ln in out.splitlines() if not ln.startswith("target: ")]
        parts.extend(_markdown(body))
        parts.append("")
    parts.append(END)
    return "\n".join(parts)


def _markdown(lines: list[str]) -> list[str]:
    """Script output as Markdown: tables and headings as they are, other lines as a quoted block."""
    out: list[str] = []
    for ln in lines:
        if ln.startswith("### "):
            out.append(f"**{ln[4:]}**")
        elif ln.startswith("note: "):
            out.append(f"- {ln[6:]}")
        elif ln.startswith("|") or not ln.strip():
            out.append(ln)
        else:
            out.append(f"`{ln}`")
            out.append("")
    return out


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def write_docs(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    print(f"\nwrote the figures into {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="every script in its smoke mode")
    ap.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these")
    ap.add_argument("--write-docs", type=Path, help="put the figures into this Markdown file")
    args = ap.parse_args()
    outputs: dict[str, tuple[int, str, float]] = {}
    for name in args.only or SCRIPTS:
        if not (_common.ROOT / "bench" / f"{name}.py").exists():
            print(f"\n## {name}: bench/{name}.py is missing; skipped")
            continue
        outputs[name] = run_script(name, args.quick, [])
    section = render(outputs, args.quick)
    if args.write_docs:
        write_docs(args.write_docs, section)
    failed = [n for n, (rc, _, _) in outputs.items() if rc != 0]
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
