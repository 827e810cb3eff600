"""Turn timing: where a turn's time went, derived from time spent in each stream state (sans-IO).

:class:`TurnTiming` is the record the fold attaches to every ended stream (and that ``stream.ended``
carries). Durations are milliseconds; a duration is ``None`` when the log has no timestamps to derive
it from (a raw transcript without the recorder's ``_t``) — timing is reported as unknown, never invented.
"""

from __future__ import annotations

import msgspec

__all__ = ["TurnTiming"]


class TurnTiming(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """Per-turn timing, like the seed console's "Done, 388.4 s total, 37 tools"."""

    total_ms: float | None = None
    ttfe_ms: float | None = None
    thinking_ms: float | None = None
    responding_ms: float | None = None
    tool_ms: float | None = None
    tool_calls: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None

    def pct(self, part_ms: float | None) -> float | None:
        """``part_ms`` as a percentage of ``total_ms`` (None when either is unknown or total is 0)."""
        if part_ms is None or not self.total_ms:
            return None
        return round(100.0 * part_ms / self.total_ms, 1)

    @property
    def thinking_pct(self) -> float | None:
        """Share of the turn spent thinking."""
        return self.pct(self.thinking_ms)

    @property
    def tool_pct(self) -> float | None:
        """Share of the turn spent running tools."""
        return self.pct(self.tool_ms)

    @property
    def responding_pct(self) -> float | None:
        """Share of the turn spent writing the answer."""
        return self.pct(self.responding_ms)
