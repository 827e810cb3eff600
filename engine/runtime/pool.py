"""The hot pool: agent processes spawned ahead of time, handed to new sessions with the same spawn config.

The pool keeps ``pool_size`` warm processes for each spawn configuration it serves
(:meth:`AgentConfig.pool_key`: agent, binary, cwd, model, tools, args, env): the runtime's default agent
from the start, and any other configuration once sessions asked for it twice (at most ``pool_max_keys``,
least recently used first out).

Guarantees:

* **Nothing waits on warm-up.** Warming runs in the pool's own task. :meth:`Pool.checkout` is synchronous
  and never blocks: it hands out a ready process or returns None, and the session spawns a cold one at once.
  "Ready" means *primed* — the process answered the SDK's start-up handshake (:mod:`engine.runtime.priming`;
  ``pool_prime``, on by default) — and alive for ``pool_ready_after_s`` (per agent by default).
* **No respawn storm.** A failed spawn or a crash of an idle warm process is retried with exponential
  backoff (``pool_backoff_base_s`` doubling to ``pool_backoff_max_s``). More than ``pool_restart_budget``
  failures within ``pool_restart_window_s`` — or a missing binary, at once — make the pool ``degraded``
  with the reason; it then retries only every ``pool_backoff_max_s``. Turns keep getting cold processes.
* **Bounded life.** Warm processes older than ``pool_max_age_s`` are recycled. (Processes in use are
  recycled by their session after ``pool_max_turns`` turns, with jitter, or the same age.)
* **Nothing orphaned.** Every warm process belongs to the pool's nursery until a session checks it out
  (ownership moves in one synchronous step); on exit or cancellation the pool closes them all (stdin EOF,
  SIGTERM, SIGKILL), shielded and bounded.

The pool writes its own log (``pool.*`` entries, in memory, the last few thousand kept) and its state —
``warming``, ``ready``, ``degraded`` (with the reason), ``draining``, ``stopped`` — is a fold over it.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import msgspec
import trio

from turnstile.engine.errors import AgentBinaryNotFound, SpawnError
from turnstile.engine.fold import PoolFold
from turnstile.engine.log import (
    Entry,
    PoolCheckout,
    PoolDegraded,
    PoolDrainRequested,
    PoolProcessLost,
    PoolProcessReady,
    PoolSpawnFailed,
    PoolSpawnStarted,
    PoolStarted,
    PoolStopped,
    Record,
)
from turnstile.engine.protocol import Message
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.runtime.priming import PrimedProcess, PrimingFailed, prime, priming_requests
from turnstile.engine.runtime.process import AgentProcess, Launcher, retire
from turnstile.engine.stores.memory import check_continues

__all__ = ["Pool", "PoolStatus"]

_POOL_LOG_KEEP = 4096


class PoolStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What readiness and metrics say about the pool."""

    state: str
    reason: str | None
    target: int
    ready: int
    warming: int
    keys: int


class _RingStore:
    """An in-memory log store that keeps only the last ``keep`` records (the pool's diagnostic log)."""

    def __init__(self, keep: int) -> None:
        self._records: deque[Record] = deque(maxlen=keep)
        self._last = 0

    @property
    def last_seq(self) -> int:
        return self._last

    def append(self, records: Sequence[Record]) -> None:
        check_continues(self._last, records)
        self._records.extend(records)
        if records:
            self._last = records[-1].entry.seq

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Record]:
        out = [r for r in self._records if r.entry.seq > after]
        return iter(out if limit is None else out[:limit])

    def sync(self) -> None:
        """Nothing to make durable: the pool's log lives in memory."""

    def close(self) -> None:
        return None


class _PoolFolder:
    def __init__(self, fold: PoolFold) -> None:
        self.fold = fold

    def apply(self, entry: Entry, view: Message | None) -> bool:
        self.fold.apply(entry)
        return False

    def settle(self) -> list[Entry]:
        return []


@dataclass(eq=False)
class _Warm:
    key: str
    proc: AgentProcess
    spawned_at: float
    primed: bool = False
    ready: bool = False
    checked_out: bool = False
    retiring: str | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(eq=False)
class _Key:
    agent: AgentConfig
    warm: list[_Warm] = field(default_factory=list)
    spawning: int = 0
    failures: deque[float] = field(default_factory=deque)
    streak: int = 0
    retry_at: float = -math.inf
    degraded: str | None = None


class Pool:
    """Warm agent processes by spawn configuration. Run :meth:`run` in a nursery; stop with :meth:`drain`."""

    def __init__(self, config: RuntimeConfig, launcher: Launcher) -> None:
        self._config = config
        self._launcher = launcher
        self.fold = PoolFold()
        self.journal = Journal("pool", _RingStore(_POOL_LOG_KEEP), _PoolFolder(self.fold))
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        # Every process the pool owns (also those of evicted keys, until they are reaped).
        self._owned: set[_Warm] = set()
        self._misses: dict[str, int] = {}
        self._wake = trio.Event()
        self._draining = False
        self._nursery: trio.Nursery | None = None
        self._done = trio.Event()
        self.spawns = 0

    @property
    def target(self) -> int:
        """Warm processes kept per key (``pool_size``)."""
        return self._config.pool_size

    def status(self) -> PoolStatus:
        """State (from the pool's fold), reason, and counts. Never blocks."""
        ready = sum(1 for k in self._keys.values() for w in k.warm if w.ready)
        warming = sum(k.spawning + sum(1 for w in k.warm if not w.ready) for k in self._keys.values())
        reason = self.fold.reason
        return PoolStatus(
            state=str(self.fold.state),
            reason=str(reason) if reason else None,
            target=self.target,
            ready=ready,
            warming=warming,
            keys=len(self._keys),
        )

    # --- used by sessions -------------------------------------------------------------------------------

    def want(self, agent: AgentConfig) -> None:
        """Keep processes warm for ``agent``'s configuration (most recently wanted kept first)."""
        if self.target == 0 or self._draining:
            return
        key = agent.pool_key()
        if key in self._keys:
            self._keys.move_to_end(key)
            return
        self._keys[key] = _Key(agent)
        while len(self._keys) > max(self._config.pool_max_keys, 1):
            _old, evicted = self._keys.popitem(last=False)
            for w in evicted.warm:
                self._retire_soon(w, "its configuration is no longer kept warm")
        self._poke()

    def checkout(self, agent: AgentConfig, session: str) -> AgentProcess | None:
        """A ready warm process for ``agent``'s configuration, now, or None. Never blocks.

        The process (and the duty to reap it) belongs to the caller from here on.
        """
        if self.target == 0 or self._draining:
            return None
        key = agent.pool_key()
        k = self._keys.get(key)
        if k is None:
            # Warm a configuration once it is asked for again: a one-off (say, a session with its own
            # working directory) must not make the pool spawn processes nobody will take.
            self._misses[key] = self._misses.get(key, 0) + 1
            if self._misses[key] >= 2:
                self.want(agent)
            return None
        self._keys.move_to_end(key)
        for w in k.warm:
            if w.ready and w.proc.returncode is None:
                k.warm.remove(w)
                self._owned.discard(w)
                w.checked_out = True
                w.scope.cancel()  # the pool's watcher lets go of it
                k.streak = 0
                self.journal.append(PoolCheckout(seq=0, ts=None, key=key, pid=w.proc.pid, session=session))
                self._poke()
                return w.proc
        return None

    # --- the pool task ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Warm, watch, recycle and replace processes until :meth:`drain` or cancellation.

        On the way out (either way) every warm process is closed and reaped, shielded, within
        ``close_grace_s + 2 * kill_after_s`` and a second.
        """
        self.journal.append(PoolStarted(seq=0, ts=None, target=self.target))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._maintain()
                nursery.cancel_scope.cancel()
        finally:
            cfg = self._config
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(cfg.close_grace_s + 2 * cfg.kill_after_s + 1),
            ):
                await self._close_all()
            self._done.set()

    async def drain(self, reason: str = "shutting down") -> None:
        """Stop warming and close every warm process; returns when the pool is stopped."""
        if not self._draining:
            self._draining = True
            self.journal.append(PoolDrainRequested(seq=0, ts=None, reason=reason))
            self._poke()
        await self._done.wait()

    def _poke(self) -> None:
        self._wake.set()

    async def _maintain(self) -> None:
        cfg = self._config
        while not self._draining:
            now = trio.current_time()
            next_at = math.inf
            for key, k in list(self._keys.items()):
                for w in list(k.warm):
                    if not w.ready and w.primed:  # (priming pokes the pool when it completes)
                        ready_at = w.spawned_at + cfg.ready_after(k.agent)
                        if now >= ready_at:
                            w.ready = True
                            if k.degraded is not None:
                                k.degraded = None
                            self.journal.append(PoolProcessReady(seq=0, ts=None, key=key, pid=w.proc.pid))
                        else:
                            next_at = min(next_at, ready_at)
                    if cfg.pool_max_age_s is not None and w.retiring is None:
                        old_at = w.spawned_at + cfg.pool_max_age_s
                        if now >= old_at:
                            self._retire_soon(w, f"recycled after {cfg.pool_max_age_s:g} s")
                        else:
                            next_at = min(next_at, old_at)
                live = sum(1 for w in k.warm if w.retiring is None)
                deficit = self.target - live - k.spawning
                if deficit > 0:
                    if now >= k.retry_at:
                        for _ in range(deficit):
                            self._start_spawn(key, k)
                    else:
                        next_at = min(next_at, k.retry_at)
            self._wake = trio.Event()
            with trio.move_on_at(next_at):
                await self._wake.wait()

    def _start_spawn(self, key: str, k: _Key) -> None:
        assert self._nursery is not None
        k.spawning += 1
        self.spawns += 1
        self.journal.append(PoolSpawnStarted(seq=0, ts=None, key=key))
        self._nursery.start_soon(self._spawn, key, k)

    async def _spawn(self, key: str, k: _Key) -> None:
        timeout = self._config.spawn_timeout_s
        proc: AgentProcess | None = None
        try:
            with trio.move_on_after(timeout if timeout is not None else math.inf):
                proc = await self._launcher.spawn(k.agent)
            if proc is None:
                self._failure(key, k, f"the agent process did not start within {timeout:g} s")
                return
        except AgentBinaryNotFound as exc:
            self._failure(key, k, str(exc), fatal=True)
            return
        except SpawnError as exc:
            self._failure(key, k, str(exc))
            return
        finally:
            k.spawning -= 1
            self._poke()
        # Synchronous from the spawn's return: the process is in the pool before anything can cancel us.
        w = _Warm(key, proc, spawned_at=trio.current_time())
        k.warm.append(w)
        self._owned.add(w)
        assert self._nursery is not None
        self._nursery.start_soon(self._watch, key, k, w)
        if self._keys.get(key) is not k:
            self._retire_soon(w, "its configuration is no longer kept warm")
        elif self._config.pool_prime:
            self._nursery.start_soon(self._prime, key, k, w)
        else:
            w.primed = True

    async def _prime(self, key: str, k: _Key, w: _Warm) -> None:
        """Run the priming handshake (see :mod:`engine.runtime.priming`); a silent process is retired."""
        timeout = self._config.pool_prime_timeout_s
        raw = w.proc
        try:
            with trio.fail_after(timeout if timeout is not None else math.inf):
                preamble = await prime(raw, priming_requests())
        except (PrimingFailed, trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the process is exiting or being closed: its watcher logs why
        except trio.TooSlowError:
            if w.retiring is None:
                error = (
                    f"warm process {raw.pid} did not answer the pool's priming requests within {timeout:g} s"
                )
                self._failure(key, k, error)
                self._retire_soon(w, error)
            return
        if w.retiring is None:
            w.proc = PrimedProcess(raw, preamble)
            w.primed = True
            self._poke()

    async def _watch(self, key: str, k: _Key, w: _Warm) -> None:
        """Notice a warm process dying while idle."""
        rc: int | None = None
        with w.scope:
            rc = await w.proc.wait()
        if w.checked_out or rc is None:
            return
        self._owned.discard(w)
        if w in k.warm:
            k.warm.remove(w)
        if w.retiring is not None:
            if w.ready:  # the fold counts ready processes only
                self.journal.append(
                    PoolProcessLost(seq=0, ts=None, key=key, pid=w.proc.pid, reason=w.retiring)
                )
        else:
            detail = await _stderr_tail(w.proc)
            what = f"exited with status {rc}" if rc >= 0 else f"was killed by signal {-rc}"
            error = f"warm process {w.proc.pid} {what}" + (f": {detail}" if detail else "")
            if w.ready:
                self.journal.append(PoolProcessLost(seq=0, ts=None, key=key, pid=w.proc.pid, reason=error))
                self._failure(key, k, error, log=False)
            else:
                self._failure(key, k, error)
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await w.proc.aclose()
        self._poke()

    def _failure(self, key: str, k: _Key, error: str, *, fatal: bool = False, log: bool = True) -> None:
        """Count a failure; schedule the retry with backoff; degrade past the budget (or at once if fatal)."""
        cfg = self._config
        now = trio.current_time()
        k.failures.append(now)
        while k.failures and k.failures[0] < now - cfg.pool_restart_window_s:
            k.failures.popleft()
        k.streak += 1
        delay = min(cfg.pool_backoff_base_s * 2 ** (k.streak - 1), cfg.pool_backoff_max_s)
        over = len(k.failures) > cfg.pool_restart_budget
        if fatal or over:
            delay = cfg.pool_backoff_max_s
            reason = (
                error
                if fatal
                else f"{len(k.failures)} failures within {cfg.pool_restart_window_s:g} s for {k.agent.agent} "
                f"warm processes (last: {error}); retrying every {delay:g} s"
            )
            if k.degraded != reason:
                k.degraded = reason
                self.journal.append(PoolDegraded(seq=0, ts=None, reason=reason))
        k.retry_at = now + delay
        if log:
            self.journal.append(PoolSpawnFailed(seq=0, ts=None, key=key, error=error, retry_in_s=delay))

    def _retire_soon(self, w: _Warm, reason: str) -> None:
        if w.retiring is not None:
            return
        w.retiring = reason
        if self._nursery is not None:
            self._nursery.start_soon(self._retire, w)

    async def _retire(self, w: _Warm) -> None:
        """Close a warm process: stdin EOF, then SIGTERM, then SIGKILL (its watcher logs the loss)."""
        await retire(w.proc, grace=self._config.close_grace_s, kill_after=self._config.kill_after_s)

    async def _close_all(self) -> None:
        """Close every warm process (in parallel) and log the pool stopped."""
        if not self._draining:
            self._draining = True
            self.journal.append(PoolDrainRequested(seq=0, ts=None, reason="shutting down"))
        warm = list(self._owned)
        async with trio.open_nursery() as nursery:
            for w in warm:
                w.retiring = w.retiring or "pool draining"
                nursery.start_soon(self._retire, w)
        for w in warm:
            self._owned.discard(w)
            if w.ready:
                self.journal.append(
                    PoolProcessLost(seq=0, ts=None, key=w.key, pid=w.proc.pid, reason=w.retiring or "")
                )
            await w.proc.aclose()
        for k in self._keys.values():
            k.warm.clear()
        self.journal.append(PoolStopped(seq=0, ts=None))


async def _stderr_tail(proc: AgentProcess, lines: int = 3) -> str:
    """The last lines a dead process left on stderr (the pool does not read stderr while it idles)."""
    data = bytearray()
    with trio.move_on_after(0.5):
        while len(data) < 65536:
            chunk = await proc.receive_stderr()
            if not chunk:
                break
            data += chunk
    text = data.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(t.strip() for t in text[-lines:])
