"""Runtime configuration: what an agent process is started with, and how the runtime supervises it.

Two frozen msgspec Structs. :class:`AgentConfig` is everything fixed when a process is spawned; its
:meth:`AgentConfig.pool_key` decides which warm processes a session may take. :class:`RuntimeConfig` holds
every limit and timeout with a documented default; :meth:`RuntimeConfig.from_env` reads ``TURNSTILE_*``
environment variables (the command-line flags of the server map onto the same fields).
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from turnstile.engine.conductor import Limits
from turnstile.engine.errors import ConfigError
from turnstile.engine.framing import DEFAULT_MAX_LINE

if TYPE_CHECKING:
    from turnstile.engine.stores.redis import RedisSettings

__all__ = ["ENV_PREFIX", "AgentConfig", "AgentKind", "FsyncPolicy", "RuntimeConfig"]

ENV_PREFIX = "TURNSTILE_"

AgentKind = Literal["sim", "claude"]
FsyncPolicy = Literal["always", "lifecycle", "never"]


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything fixed when an agent process is spawned.

    ``agent`` is ``sim`` (the built-in simulated agent, ``turnstile sim``) or ``claude``
    (the Claude Code CLI: ``binary``, else ``$TURNSTILE_CLAUDE_BIN``, else ``claude`` on PATH, else the
    binary bundled in ``claude-agent-sdk``). Both get the same stream-json argv: ``-p --input-format
    stream-json --output-format stream-json --verbose``, ``--include-partial-messages`` when
    ``partial_messages``, ``--model``, ``--allowedTools``, then ``extra_args`` verbatim (for the sim e.g.
    ``("--speed", "0")``).

    ``env`` is layered over the server's environment (or replaces it when ``inherit_env`` is false). It
    is written to the session's log so the session can respawn after a restart; :class:`SessionInfo`
    shows only its keys.
    """

    agent: AgentKind = "sim"
    binary: str | None = None
    cwd: str | None = None
    model: str | None = None
    allowed_tools: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    partial_messages: bool = True
    env: dict[str, str] = {}
    inherit_env: bool = True

    def pool_key(self) -> str:
        """A stable hash of every field: a warm process serves only sessions with the same key."""
        canonical = msgspec.json.encode(msgspec.to_builtins(self, order="sorted"), order="sorted")
        return f"{self.agent}-{hashlib.sha256(canonical).hexdigest()[:16]}"

    def public(self) -> dict[str, Any]:
        """The config as plain data for APIs, with ``env`` values hidden (they may hold secrets)."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        data["env"] = dict.fromkeys(sorted(self.env), "***")
        return data


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Limits, timeouts and pool policy of a runtime. Every default is what the server runs with.

    Storage
        ``data_dir``: where session logs (``sessions/<id>.ndjson``) and the process ledger live; ``None``
        keeps logs in memory (nothing survives a restart). ``fsync``: ``lifecycle`` (default) syncs an
        append that carries a turn request, stream end, spawn or exit; ``always``; ``never``.
        When a log cannot be written (disk full): ``storage_retry_s`` (1 s) between retries of the entries
        waiting in memory (readiness recovers by itself once they are written); ``storage_backlog_bytes``
        (16 MiB) of agent output kept in memory per log meanwhile — past it, output lines are counted in a
        ``log.dropped`` entry instead of kept (lifecycle entries are always kept).
    Shared log (several servers; ``docs/scaling.md``)
        ``redis_url`` (``TURNSTILE_REDIS_URL``; None): keep every log in Redis Streams at
        ``redis://HOST:PORT/DB`` instead of the data directory (which then holds only the process ledger);
        needs ``pip install 'turnstile[redis]'``. ``node_id`` (``TURNSTILE_NODE_ID``; default the host
        name): this server's name, unique among the servers sharing the database and the same across its
        restarts — it runs the sessions it created and serves every other one read-only.
        ``redis_prefix`` (``turnstile``): of every key. ``redis_trim`` (``maxlen:100000``): per session
        stream, ``maxlen:N`` keeps about N entries, ``age:SECONDS`` drops older ones (and a stopped
        session's keys after that long), ``none`` keeps everything. ``storage_grace_s`` (10 s): how long a
        running turn's entries may wait in memory for Redis to answer before the turn ends ``failed`` (also
        past ``storage_backlog_bytes`` of them).
    Turns
        ``max_queued_turns`` (8): turns waiting behind the running one; more are refused (``QueueFull``).
    Interrupt
        ``interrupt_grace_s`` (3 s) after the interrupt request, SIGTERM to the process group; SIGKILL
        ``kill_after_s`` (2 s) later. ``close_grace_s`` (2 s): how long a process closed by stdin EOF (stop,
        recycle, one-shot turn done) may take to exit before SIGTERM.
    Timeouts (each ends the stream ``timed_out`` and replaces the process; ``None`` disables one)
        ``spawn_timeout_s`` (30 s): getting a process. ``first_event_timeout_s`` (60 s): prompt written
        to first stdout line. ``idle_timeout_s`` (600 s): longest silence between stdout lines (tools may
        run silently for minutes). ``stall_timeout_s`` (180 s): longest time the model API makes no
        progress while a turn waits on it — keep-alive pings are not progress, content is (tokens,
        messages, tool results, retry notices); not counted while a tool runs. ``stall_notice_s`` (30 s):
        after that long without progress a ``stream.stalled`` entry tells subscribers. ``turn_timeout_s``
        (3600 s): the whole turn.
    Output
        ``max_line`` (8 MiB): longer stdout lines are logged as ``cli.oversized_line``.
        ``subscriber_buffer`` (1024 records): a live subscriber further behind is ended with ``Lagged``.
        stderr: lines over ``stderr_max_line`` (4096 bytes) are cut; at most ``stderr_lines_per_s`` (20)
        lines per second with bursts of ``stderr_burst`` (200) are logged, the rest counted as dropped;
        the last ``stderr_tail_lines`` (20) go into ``process.exited``.
    Pool
        ``pool_size`` (2; ``TURNSTILE_POOL_SIZE``): warm processes kept per spawn configuration; 0 =
        one-shot mode, a process per turn. ``pool_max_keys`` (4): distinct configurations kept warm.
        ``pool_prime`` (on): a warm process is handed out only once it has answered the SDK's start-up
        handshake — ``initialize`` and ``get_context_usage`` control requests, which also make the CLI
        build its system prompt before the first turn needs it (see :mod:`engine.runtime.priming`); one
        that does not answer within ``pool_prime_timeout_s`` (30 s) counts as a failed spawn and is
        replaced. ``pool_ready_after_s`` (None = by agent: 1 s for ``claude``, 0.2 s for ``sim``): and
        only once it has lived this long (the real CLI answers a first prompt fast only after about a
        second of idle: measured 0.18x of a cold start after 1 s, 0.22x after 0.3 s, unprimed).
        ``pool_max_turns`` (50, +/- ``pool_max_turns_jitter`` 20 %) and ``pool_max_age_s`` (3600 s):
        recycle a process after that many turns or that long. ``pool_restart_budget`` (5) crashes or
        failed spawns per ``pool_restart_window_s`` (60 s) are retried with exponential backoff from
        ``pool_backoff_base_s`` (0.5 s) to ``pool_backoff_max_s`` (30 s); past the budget the pool is
        ``degraded`` and retries only every ``pool_backoff_max_s``.
    Shutdown
        ``shutdown_timeout_s`` (10 s): bound on closing every session when the runtime exits.
    """

    data_dir: str | None = None
    fsync: FsyncPolicy = "lifecycle"
    default_agent: AgentConfig = AgentConfig()
    storage_retry_s: float = 1.0
    storage_backlog_bytes: int = 16 << 20
    redis_url: str | None = None
    node_id: str | None = None
    redis_prefix: str = "turnstile"
    redis_trim: str = "maxlen:100000"
    storage_grace_s: float = 10.0

    max_queued_turns: int = 8

    interrupt_grace_s: float = 3.0
    kill_after_s: float = 2.0
    close_grace_s: float = 2.0

    spawn_timeout_s: float | None = 30.0
    first_event_timeout_s: float | None = 60.0
    idle_timeout_s: float | None = 600.0
    stall_notice_s: float | None = 30.0
    stall_timeout_s: float | None = 180.0
    turn_timeout_s: float | None = 3600.0

    max_line: int = DEFAULT_MAX_LINE
    subscriber_buffer: int = 1024
    stderr_max_line: int = 4096
    stderr_lines_per_s: float = 20.0
    stderr_burst: int = 200
    stderr_tail_lines: int = 20

    pool_size: int = 2
    pool_max_keys: int = 4
    pool_ready_after_s: float | None = None
    pool_prime: bool = True
    pool_prime_timeout_s: float | None = 30.0
    pool_max_turns: int = 50
    pool_max_turns_jitter: float = 0.2
    pool_max_age_s: float | None = 3600.0
    pool_restart_budget: int = 5
    pool_restart_window_s: float = 60.0
    pool_backoff_base_s: float = 0.5
    pool_backoff_max_s: float = 30.0

    shutdown_timeout_s: float = 10.0

    def limits(self) -> Limits:
        """The timeouts and policies the session conductor applies (:mod:`engine.conductor`)."""
        return Limits(
            interrupt_grace_s=self.interrupt_grace_s,
            spawn_timeout_s=self.spawn_timeout_s,
            first_event_timeout_s=self.first_event_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
            stall_notice_s=self.stall_notice_s,
            stall_timeout_s=self.stall_timeout_s,
            turn_timeout_s=self.turn_timeout_s,
            max_queued_turns=self.max_queued_turns,
            one_shot=self.pool_size == 0,
            warm=self.pool_size > 0,
            max_turns=self.pool_max_turns,
            max_turns_jitter=self.pool_max_turns_jitter,
            max_age_s=self.pool_max_age_s,
        )

    def ready_after(self, agent: AgentConfig) -> float:
        """How long a pool process of ``agent`` must live before it is handed out."""
        if self.pool_ready_after_s is not None:
            return self.pool_ready_after_s
        return 1.0 if agent.agent == "claude" else 0.2

    def __post_init__(self) -> None:
        for name in ("max_queued_turns", "pool_size", "pool_max_keys", "stderr_tail_lines"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not self.storage_retry_s > 0:
            raise ConfigError(f"storage_retry_s must be positive seconds, got {self.storage_retry_s}")
        if not self.storage_grace_s > 0:
            raise ConfigError(f"storage_grace_s must be positive seconds, got {self.storage_grace_s}")
        if self.redis_url is not None:
            self.redis_settings()  # raises ConfigError naming the bad value
        for name in (
            "max_line",
            "subscriber_buffer",
            "stderr_max_line",
            "stderr_burst",
            "pool_max_turns",
            "storage_backlog_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "spawn_timeout_s",
            "first_event_timeout_s",
            "idle_timeout_s",
            "stall_notice_s",
            "stall_timeout_s",
            "turn_timeout_s",
            "pool_max_age_s",
            "pool_prime_timeout_s",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive seconds or unset (no limit), got {value}")
        if not 0 <= self.pool_max_turns_jitter < 1:
            raise ConfigError(f"pool_max_turns_jitter must be in [0, 1), got {self.pool_max_turns_jitter}")

    def redis_settings(self) -> RedisSettings:
        """Where the shared log is (``redis_url`` must be set); raises :class:`ConfigError`."""
        from turnstile.engine.stores.redis import RedisSettings, parse_trim

        if self.redis_url is None:
            raise ConfigError("redis_url is not set")
        return RedisSettings(
            url=self.redis_url,
            node=self.node_id or "",
            prefix=self.redis_prefix,
            trim=parse_trim(self.redis_trim),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RuntimeConfig:
        """Build a config from ``TURNSTILE_<FIELD>`` variables (e.g. ``TURNSTILE_POOL_SIZE=0``).

        Timeouts accept ``none`` for "no limit". The default agent comes from ``TURNSTILE_AGENT``,
        ``TURNSTILE_MODEL``, ``TURNSTILE_CWD``, ``TURNSTILE_ALLOWED_TOOLS`` (comma-separated) and
        ``TURNSTILE_AGENT_ARGS`` (shell words). Keyword ``overrides`` (from flags) win over the
        environment. Raises :class:`ConfigError` naming the variable on a bad value.
        """
        env = os.environ if environ is None else environ
        fields: dict[str, Any] = {}
        for name in cls.__struct_fields__:
            if name == "default_agent":
                continue
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            fields[name] = None if raw.strip().lower() in ("none", "") else raw
        agent: dict[str, Any] = {}
        for var, field in (("AGENT", "agent"), ("MODEL", "model"), ("CWD", "cwd")):
            if env.get(ENV_PREFIX + var):
                agent[field] = env[ENV_PREFIX + var]
        if env.get(ENV_PREFIX + "ALLOWED_TOOLS"):
            agent["allowed_tools"] = [t for t in env[ENV_PREFIX + "ALLOWED_TOOLS"].split(",") if t]
        if env.get(ENV_PREFIX + "AGENT_ARGS"):
            agent["extra_args"] = shlex.split(env[ENV_PREFIX + "AGENT_ARGS"])
        if agent:
            fields["default_agent"] = agent
        fields.update(overrides)
        try:
            return msgspec.convert(fields, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid Turnstile setting: {exc} (from {ENV_PREFIX}* variables)") from exc
