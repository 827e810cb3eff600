"""The write-behind task of a journal whose store does network I/O (Redis Streams).

:mod:`engine.runtime.journal` folds an entry the instant it is appended; for an
:class:`engine.stores.AsyncLogStore` the entry then waits in the journal's list of unwritten entries, and
this task writes that list, in order, in batches (one round trip each: everything appended while the
previous batch was on its way goes in the next one), and tells the journal what was written — the
journal sends it to subscribers then. One task per journal; it ends once the journal is closed and
everything is written (or the journal is abandoned).

When the store fails (Redis down, restarting, too slow) the same batch is sent again with exponential
backoff — the store recognises a batch it already wrote, so nothing is written twice — and the failure is
reported to ``on_trouble`` (readiness). The entries keep waiting in memory, folded but sent to nobody,
for up to ``grace_s``: a Redis restart within that costs a pause, not a turn. Past it (or once more than
``storage_backlog_bytes`` wait, which the journal checks itself) the journal begins a storage failure
episode: subscribers are told (``StorageFailed``), the session ends its turns ``failed`` with the reason,
and the writer goes on trying; the backlog, the turns' terminal entries included, is written first once
the store works again. Nothing is ever dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

from turnstile.engine.errors import LogError
from turnstile.engine.log import Record
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.stores import AsyncLogStore

__all__ = ["write_behind"]

logger = logging.getLogger("turnstile.writer")

BATCH_ENTRIES: Final = 1024
BATCH_BYTES: Final = 1 << 20
_BACKOFF_MIN_S: Final = 0.05


async def write_behind(
    journal: Journal,
    *,
    grace_s: float,
    retry_max_s: float,
    on_trouble: Callable[[str], None] | None = None,
) -> None:
    """Write ``journal``'s waiting entries until it is closed and written (or abandoned).

    ``grace_s``: how long the store may fail before the journal begins a storage failure episode.
    ``retry_max_s``: the longest pause between tries (the backoff doubles from 50 ms up to it).
    """
    store = journal.store
    assert isinstance(store, AsyncLogStore), "only a network store writes behind"
    failing_since: float | None = None
    backoff = _BACKOFF_MIN_S
    batch: list[Record] = []
    while True:
        if not batch:
            await journal.wait_unwritten()
            if journal.released:
                return
            batch = journal.unwritten(BATCH_ENTRIES, BATCH_BYTES)
            if not batch:
                continue
        try:
            await store.append_async(batch)
        except LogError as exc:
            if journal.released:
                return  # abandoned meanwhile: nobody waits for these any more
            now = trio.current_time()
            if failing_since is None:
                failing_since = now
                logger.warning(
                    "log %s: cannot write seqs %d-%d yet: %s; retrying",
                    journal.name,
                    batch[0].entry.seq,
                    batch[-1].entry.seq,
                    exc,
                )
            journal.write_trouble = str(exc)
            if on_trouble is not None:
                on_trouble(str(exc))
            if now - failing_since >= grace_s and not journal.failing:
                journal.storage_failed(
                    f"{exc} (for {now - failing_since:.1f} s; the entries wait in memory and are written "
                    "first when the store works again)"
                )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, retry_max_s)
            continue
        if journal.released:
            return
        # The same batch is resent until it is written, so the journal's oldest entries are this batch.
        journal.written(len(batch))
        batch = []
        if failing_since is not None:
            waited = trio.current_time() - failing_since
            logger.warning("log %s: written again after %.1f s", journal.name, waited)
        failing_since = None
        backoff = _BACKOFF_MIN_S
