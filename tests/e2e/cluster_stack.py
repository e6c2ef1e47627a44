"""Two of everything on loopback: livekit-server nodes in LiveKit's multi-node mode sharing
a Redis of their own (LiveKit's routing, never our records), token-server processes and
workers, all over one Redis of ours and one vendor-fakes process.

Node i, token server i and worker i form a column: the token server hands out node i's URL
(as a load balancer or a region would), node i delivers its webhooks to token server i
(one delivery per event, as behind one URL), worker i registers with node i. LiveKit
itself routes each room to a node and each job to a worker on any node.

Must run inside scripts/offline, as tests/e2e/livekit_stack.py does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_livekit import LiveKitConfig, LiveKitServer
from tests.e2e.livekit_stack import (
    API_KEY,
    API_SECRET,
    FakesProcess,
    Stack,
    WorkerProcess,
    fresh_log_dir,
    require_offline,
    stack_env,
)
from tests.support import RedisServer, ServerProcess, free_port

# Each node's UDP media ports: a range of its own (all bound to 127.0.0.1).
UDP_BASE = 50000
UDP_PER_NODE = 200


@dataclass
class Cluster:
    redis_url: str
    livekit_redis: RedisServer
    nodes: list[LiveKitServer]
    token_servers: list[ServerProcess]
    fakes: FakesProcess
    workers: list[WorkerProcess]
    workdir: Path

    def column(self, index: int) -> Stack:
        """Node, token server and worker `index` as a Stack (tests.e2e.support's helpers
        take one): its room API is node `index`'s, which answers for every room."""
        return Stack(
            self.redis_url,
            self.nodes[index],
            self.token_servers[index],
            self.fakes,
            self.workers[index] if index < len(self.workers) else None,
            self.workdir,
        )

    @property
    def columns(self) -> list[Stack]:
        return [self.column(i) for i in range(len(self.token_servers))]

    def logs(self) -> dict[str, str]:
        return {
            path.name: path.read_text(errors="replace")
            for path in sorted(self.workdir.glob("*.log"))
        }


def node_config(index: int, webhook_urls: Sequence[str], redis_address: str) -> LiveKitConfig:
    start = UDP_BASE + index * UDP_PER_NODE
    return LiveKitConfig(
        API_KEY,
        API_SECRET,
        port=free_port(),
        udp_port_start=start,
        udp_port_end=start + UDP_PER_NODE - 1,
        stun_port=free_port(),
        webhook_urls=tuple(webhook_urls),
        redis_address=redis_address,
    )


@contextlib.contextmanager
def running_cluster(
    redis_url: str,
    *,
    size: int = 2,
    workers: int | None = None,
    fakes_config: dict[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
    name: str = "cluster",
    webhook_urls: Sequence[str] = (),
) -> Iterator[Cluster]:
    """`size` nodes, token servers and (unless `workers` says fewer) workers; everything
    stopped whatever happens. Logs in test-output/e2e/<name>/."""
    require_offline()
    workdir = fresh_log_dir(name)
    livekit_redis = RedisServer()
    ports = [free_port() for _ in range(size)]
    stops: list[Any] = []
    try:
        livekit_redis.start()
        stops.append(livekit_redis.stop)
        address = f"127.0.0.1:{livekit_redis.port}"
        nodes = [
            LiveKitServer(
                node_config(i, [f"http://127.0.0.1:{ports[i]}/livekit/webhook", *webhook_urls],
                            address),
                workdir / f"livekit-server-{i}.log",
            )
            for i in range(size)
        ]  # fmt: skip
        for node in nodes:
            node.start()
            stops.append(node.stop)
        token_servers = [
            ServerProcess(
                env={**stack_env(redis_url, nodes[i].config.url, **(env or {})),
                     "LOG_LEVEL": "INFO"},
                port=ports[i],
                log_path=workdir / f"token-server-{i}.log",
            )
            for i in range(size)
        ]  # fmt: skip
        for server in token_servers:
            server.start()
            stops.append(server.stop)
        fakes = FakesProcess(fakes_config or {}).start()
        stops.append(fakes.stop)
        started: list[WorkerProcess] = []
        for i in range(size if workers is None else workers):
            worker = WorkerProcess(
                {
                    **stack_env(redis_url, nodes[i].config.url, **(env or {})),
                    **fakes.env(),
                    "AGENT_NUM_IDLE_PROCESSES": "1",
                    # Full by call count, not by the shared machine's CPU (livekit_stack).
                    "AGENT_MAX_CALLS": "4",
                    **(worker_env or {}),
                },
                workdir / f"worker-{i}.log",
            )
            stops.append(worker.stop)
            started.append(worker.start())
        yield Cluster(redis_url, livekit_redis, nodes, token_servers, fakes, started, workdir)
    finally:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()
