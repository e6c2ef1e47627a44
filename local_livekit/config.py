"""The local livekit-server's configuration: loopback only, our keys, our webhook.

Why each setting (LiveKit's `config-sample.yaml` documents them):
- `bind_addresses: [127.0.0.1]`: signalling and the room API answer on loopback only.
- `rtc.node_ip: 127.0.0.1`, `use_external_ip: false`: the server announces only a loopback
  address and never asks a STUN server for its public one (a node_ip also stops it from
  adding Google's STUN servers for itself).
- `rtc.ips.includes: [127.0.0.0/8]` and `enable_loopback_candidate`: ICE candidates are
  gathered on 127.0.0.0/8 and nowhere else.
- `rtc.tcp_port: 0`: no ICE over TCP; LiveKit binds that listener on every address.
- `rtc.stun_servers`: without any, LiveKit hands browsers Google's public STUN servers;
  a loopback port where nothing answers keeps their ICE gathering on this machine.
- `webhook`: LiveKit signs its events with one of its keys; the token server verifies
  them with the same key and secret (`/livekit/webhook`).
- `room.enabled_codecs`: audio codecs only. The visitor's grant allows the `microphone`
  source only, but LiveKit checks the source a client claims, not the track's kind: a video
  track announced as "microphone" is accepted. With no video codec, it never gets media
  (docs/livekit-enforcement.md; tests/e2e/test_livekit_rules.py).
- `redis`: LiveKit's multi-node mode. Nodes sharing a Redis (LiveKit's own, never ours:
  it holds LiveKit's routing, not our records) route rooms and agent jobs between them; a
  client may join through any node. On one machine each node needs its own ports
  (`port`, the UDP range, the STUN port).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import yaml

LOOPBACK = "127.0.0.1"
LOOPBACK_NET = "127.0.0.0/8"
# The demo is voice only: every room negotiates these and nothing else.
AUDIO_CODECS = ("audio/opus", "audio/red")


def dev_keys() -> tuple[str, str]:
    """A fresh API key and secret (LiveKit wants secrets of 32 characters or more)."""
    return f"ocf-dev-{secrets.token_hex(4)}", secrets.token_urlsafe(36)


@dataclass(frozen=True)
class LiveKitConfig:
    api_key: str
    api_secret: str
    port: int = 7880
    # UDP ports for media (one per peer connection, bound to 127.0.0.1 only).
    udp_port_start: int = 50000
    udp_port_end: int = 50199
    # A loopback port where no STUN server answers (see the module's docstring).
    stun_port: int = 3478
    webhook_urls: tuple[str, ...] = ()
    # host:port of LiveKit's own Redis: set, the node joins the nodes sharing it.
    redis_address: str | None = None
    development: bool = True
    log_level: str = "info"
    # LiveKit's own defaults for rooms the token does not configure (ours always does).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def as_dict(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "port": self.port,
            "bind_addresses": [LOOPBACK],
            "development": self.development,
            "rtc": {
                "tcp_port": 0,
                "port_range_start": self.udp_port_start,
                "port_range_end": self.udp_port_end,
                "use_external_ip": False,
                "node_ip": LOOPBACK,
                "enable_loopback_candidate": True,
                "ips": {"includes": [LOOPBACK_NET]},
                "stun_servers": [f"{LOOPBACK}:{self.stun_port}"],
            },
            "room": {"enabled_codecs": [{"mime": mime} for mime in AUDIO_CODECS]},
            "keys": {self.api_key: self.api_secret},
            "logging": {"level": self.log_level, "json": True},
        }
        if self.redis_address is not None:
            conf["redis"] = {"address": self.redis_address}
        if self.webhook_urls:
            conf["webhook"] = {"api_key": self.api_key, "urls": list(self.webhook_urls)}
        conf.update(self.extra)
        return conf

    def to_yaml(self) -> str:
        header = "# Written by local_livekit (make run / tests): loopback only. Do not edit.\n"
        return header + yaml.safe_dump(self.as_dict(), sort_keys=False)
