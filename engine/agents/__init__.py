"""Agent-specific helpers (how to find, start and talk to each supported agent CLI)."""
