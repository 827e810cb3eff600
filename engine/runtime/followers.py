"""Sessions another node runs, as this node serves them: read-only, folded from the shared log.

With a shared repository (Redis, :mod:`engine.stores.redis`) every node serves SSE and WebSocket for every
session. A session this node does not run is a :class:`Follower`: its log is read from Redis once
(``XRANGE``) and folded with the same :class:`engine.fold.SessionFold` the owner uses, so its state, turns
and timings are the owner's; then it follows the stream. One task per node, the *tailer*
(:meth:`Followers.run`), reads every followed stream with one ``XREAD BLOCK`` on one connection (from the
id of the last entry each follower folded — never ``$``, which would lose what was written in between)
and hands new entries to the followers, whose subscribers get them as they would a local session's:
through a :class:`engine.runtime.subscription.Subscription` on the follower's journal, which catches up
with ``XRANGE`` from the subscriber's own seq. A thousand subscribers on this node cost one blocking read.

Read-your-writes across nodes: a caller that just started a turn on node A and asks node B for it may be
faster than B's tailer, so :meth:`Followers.get` reads what follows the follower's last entry before it
answers (one ``XRANGE``, usually empty). A follower without subscribers is dropped after ``idle_s``.

Followers never append: turns, interrupts and stops go to the owner (:class:`SessionOwnedElsewhere`
until phase 2 forwards them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import msgspec
import trio

from turnstile.engine.errors import LogError, SessionNotFound, StorageUnavailable
from turnstile.engine.fold import SessionFold
from turnstile.engine.log import Entry, Record, SessionCreated, UnknownEntry, decode_entry
from turnstile.engine.protocol import Message
from turnstile.engine.runtime.config import AgentConfig
from turnstile.engine.runtime.info import SessionInfo, TurnInfo
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.stores.redis import RedisLogStore, RedisRepository

__all__ = ["Follower", "FollowerJournal", "Followers"]

logger = logging.getLogger("turnstile.followers")

_BLOCK_MS: Final = 2000
_REFRESH_CHUNK: Final = 4096


class _ReadOnlyFolder:
    """Folds; never decides an entry (the owner appends what the fold settles)."""

    def __init__(self, fold: SessionFold) -> None:
        self.fold = fold

    def apply(self, entry: Entry, view: Message | None) -> object:
        return self.fold.apply(entry, view)

    def settle(self) -> list[Entry]:
        return []


class FollowerJournal(Journal):
    """A journal that never writes: it folds and sends what another node wrote (:meth:`follow`)."""

    def follow(self, records: Sequence[Record]) -> None:
        """Fold, index and send ``records`` (read from the shared log), skipping what it already has."""
        fresh = [r for r in records if r.entry.seq > self._written]
        if not fresh:
            return
        if fresh[0].entry.seq != self._written + 1:
            logger.warning(
                "session %s: the shared log continues at seq %d after %d (entries trimmed away)",
                self.name,
                fresh[0].entry.seq,
                self._written,
            )
        folder = self.folder
        for rec in fresh:
            entry = rec.entry
            if isinstance(entry, UnknownEntry):
                continue
            self._index(entry)
            if folder is not None:
                folder.apply(entry, None)
        self._next = fresh[-1].entry.seq + 1
        self._fan_out(fresh)


class Follower:
    """A session another node runs: the same read-only surface as a local session (``id``, ``journal``,
    ``fold``, :attr:`state`, :meth:`info`)."""

    def __init__(
        self, session_id: str, owner: str | None, journal: FollowerJournal, fold: SessionFold
    ) -> None:
        self.id = session_id
        self.owner = owner
        self.journal = journal
        self.fold = fold
        self.agent = AgentConfig()
        self.created_at = 0.0
        self.last_used = trio.current_time()

    @property
    def store(self) -> RedisLogStore:
        """The session's stream."""
        store = self.journal.store
        assert isinstance(store, RedisLogStore)
        return store

    @property
    def state(self) -> str:
        """The session machine's state, folded from the shared log."""
        return str(self.fold.session_state)

    def info(self) -> SessionInfo:
        """The session as the API shows it (``pid`` is the owner's business: None here)."""
        turns = [
            TurnInfo(
                id=v.id,
                state=v.state,
                outcome=v.outcome,
                reason=v.reason,
                ended=v.ended,
                timing=v.timing,
                exit_status=v.exit_status,
            )
            for v in self.fold.streams.values()
        ]
        open_streams = self.fold.open_streams
        return SessionInfo(
            id=self.id,
            state=self.state,
            agent=self.agent.public(),
            pool_key=self.agent.pool_key(),
            pid=None,
            cli_session_id=self.fold.cli_session_id,
            created_at=self.created_at,
            last_seq=self.journal.last_seq,
            active_stream=open_streams[0] if open_streams else None,
            queued=max(len(open_streams) - 1, 0),
            turns=turns,
            node=self.owner,
        )


class Followers:
    """This node's followers and its one tailer. Run :meth:`run` in the runtime's nursery."""

    def __init__(self, repo: RedisRepository, *, idle_s: float = 60.0, retry_max_s: float = 5.0) -> None:
        self.repo = repo
        self.idle_s = idle_s
        self.retry_max_s = retry_max_s
        self._followers: dict[str, Follower] = {}
        self._loading: dict[str, trio.Event] = {}
        self._changed = trio.Event()
        self._reading: trio.CancelScope | None = None
        #: Why the tailer's last read failed (it retries with backoff), else None.
        self.trouble: str | None = None

    def all(self) -> list[Follower]:
        """The sessions followed now."""
        return list(self._followers.values())

    async def get(self, session_id: str) -> Follower:
        """The follower of ``session_id``, loaded on first use and brought up to date now.

        Raises :class:`SessionNotFound` (no such session in the shared log) and
        :class:`StorageUnavailable` (Redis cannot be read).
        """
        while True:
            follower = self._followers.get(session_id)
            if follower is not None:
                follower.last_used = trio.current_time()
                await self.refresh(follower)
                return follower
            loading = self._loading.get(session_id)
            if loading is None:
                break
            await loading.wait()
            if session_id not in self._followers:
                break  # that load failed: try ourselves (and raise its error)
        done = self._loading[session_id] = trio.Event()
        try:
            follower = await self._load(session_id)
        except LogError as exc:
            raise StorageUnavailable(
                f"cannot read session {session_id} from {self.repo.description}: {exc}; retry when Redis "
                "answers again (see /readyz)"
            ) from exc
        finally:
            del self._loading[session_id]
            done.set()
        self._followers[session_id] = follower
        self._wake_tailer()
        return follower

    async def refresh(self, follower: Follower) -> None:
        """Fold what follows the follower's last entry now (one read; the tailer may not have got there)."""
        try:
            while True:
                records = await follower.journal.read_async(follower.journal.last_seq, _REFRESH_CHUNK)
                follower.journal.follow(records)
                if len(records) < _REFRESH_CHUNK:
                    return
        except LogError as exc:
            raise StorageUnavailable(
                f"cannot read session {follower.id} from {self.repo.description}: {exc}; retry when Redis "
                "answers again (see /readyz)"
            ) from exc

    async def _load(self, session_id: str) -> Follower:
        repo = self.repo
        owner = await repo.owner(session_id)
        store = await repo.open(session_id)
        if owner is None and store.last_seq == 0:
            raise SessionNotFound(f"no session {session_id!r}; list sessions to find it, or create it first")
        fold = SessionFold(session_id)
        journal = FollowerJournal(session_id, store, _ReadOnlyFolder(fold))
        created: list[SessionCreated] = []

        def observe(entry: Entry) -> None:
            if isinstance(entry, SessionCreated) and not created:
                created.append(entry)

        await journal.replay(observe=observe)
        if not created:
            raw = await repo.created_entry(session_id)
            entry = decode_entry(raw) if raw else None
            if isinstance(entry, SessionCreated):
                created.append(entry)
        if journal.last_seq == 0 and not created:
            raise SessionNotFound(
                f"session {session_id!r} is being created on node {owner}; retry in a moment"
            )
        follower = Follower(session_id, owner, journal, fold)
        if created:
            try:
                follower.agent = msgspec.convert(created[0].config, AgentConfig)
            except msgspec.ValidationError:
                logger.warning("session %s: unreadable agent config in its log; showing defaults", session_id)
            follower.created_at = created[0].ts or 0.0
        return follower

    def forget(self, session_id: str) -> None:
        """Stop following ``session_id`` (this node runs it now, or it is gone)."""
        follower = self._followers.pop(session_id, None)
        if follower is not None:
            follower.journal.close()

    def _wake_tailer(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        if self._reading is not None:
            self._reading.cancel()  # read again, with the new set of streams

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The tailer: one blocking read over every followed stream, forever (cancel to stop)."""
        task_status.started()
        backoff = 0.05
        while True:
            self._evict_idle()
            followers = list(self._followers.values())
            if not followers:
                await self._changed.wait()
                continue
            wanted = [(f.store, f.journal.last_seq) for f in followers]
            news: dict[str, list[Record]] = {}
            with trio.CancelScope() as scope:
                self._reading = scope
                try:
                    news = await self.repo.read_new(wanted, block_ms=_BLOCK_MS)
                except LogError as exc:
                    if self.trouble is None:
                        logger.warning("tailer: cannot read the shared log: %s; retrying", exc)
                    self.trouble = str(exc)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
                    continue
                finally:
                    self._reading = None
            if scope.cancelled_caught:
                continue  # the set of followed sessions changed
            if self.trouble is not None:
                logger.warning("tailer: reading the shared log again")
            self.trouble = None
            backoff = 0.05
            for sid, records in news.items():
                follower = self._followers.get(sid)
                if follower is not None:
                    follower.journal.follow(records)

    def _evict_idle(self) -> None:
        now = trio.current_time()
        for sid, follower in list(self._followers.items()):
            if not follower.journal.subscriptions and now - follower.last_used > self.idle_s:
                self.forget(sid)

    def subscribers(self) -> int:
        """Subscriptions to followed sessions on this node."""
        return sum(len(f.journal.subscriptions) for f in self._followers.values())

    def lagged(self) -> int:
        """Followed sessions' subscribers that fell behind (so far)."""
        return sum(f.journal.lagged_total for f in self._followers.values())
