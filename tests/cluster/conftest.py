"""Several ``turnstile serve`` processes on one real Redis (the shared log), and the guard that fails a
test leaving any process of its own behind (servers, their agents, redis-server)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import become_subreaper, descendants, leftovers_after
from tests.redisd import RedisServer, require_redis
from tests.reliability.servers import ServerProcess

become_subreaper()


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    before = set(descendants())
    yield
    left = leftovers_after(before, wait_s=3.0)
    if left:
        pytest.fail(f"the test left processes behind: {left}")


@dataclass
class Cluster:
    """One Redis and the nodes sharing it (started by :meth:`node`, stopped at the end of the test)."""

    root: Path
    redis: RedisServer
    nodes: list[ServerProcess]

    def node(self, name: str, *, speed: float = 1.0, pool_size: int = 1, **env: str) -> ServerProcess:
        """``turnstile serve --redis-url ... --node-id name`` (not started yet)."""
        server = ServerProcess(self.root / name / "data", pool_size=pool_size, speed=speed)
        server.env = {
            "TURNSTILE_REDIS_URL": self.redis.url,
            "TURNSTILE_NODE_ID": name,
            "TURNSTILE_STORAGE_RETRY_S": "0.2",
            **env,
        }
        self.nodes.append(server)
        return server


def make_cluster(tmp_path: Path, *, appendonly: bool = False, start_redis: bool = True) -> Iterator[Cluster]:
    require_redis()
    redis = RedisServer(tmp_path / "redis", appendonly=appendonly)
    cluster = Cluster(tmp_path, redis, [])
    if start_redis:
        redis.start()
    try:
        yield cluster
    finally:
        for node in cluster.nodes:
            node.stop()
        redis.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A Redis with persistence off, for nodes to share."""
    yield from make_cluster(tmp_path)


@pytest.fixture
def durable_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A Redis with AOF on (``appendfsync always``): what it acknowledged survives its restart."""
    yield from make_cluster(tmp_path, appendonly=True)


@pytest.fixture
def cluster_without_redis(tmp_path: Path) -> Iterator[Cluster]:
    """Nodes pointed at a Redis that is not running yet (``cluster.redis.start()`` starts it)."""
    yield from make_cluster(tmp_path, start_redis=False)
