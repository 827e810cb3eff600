"""Reliability: the fault matrix, bad input, load and soak (issue 7). See ``docs/reliability.md``."""
