"""The compatibility matrix: the real Claude Code CLI, version by version, under Turnstile (docs/compatibility.md)."""
