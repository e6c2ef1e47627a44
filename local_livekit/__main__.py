"""What `scripts/run` asks of the local LiveKit:

- `python -m local_livekit keys FILE` prints `<key> <secret>`: the development keys kept
  in FILE, generated there (0600) on the first run.
- `python -m local_livekit serve --port P --webhook URL [--log FILE]` becomes
  livekit-server (exec: the process scripts/run started *is* the server, so its signals
  reach it) with our loopback-only config, keys from LIVEKIT_API_KEY/LIVEKIT_API_SECRET.
- `python -m local_livekit end-calls --port P` deletes every room of the local server, so
  browsers and the worker see each call end at once (livekit-server alone would wait for
  them to leave before it exits), and the worker records them as ended.

The config is handed over in LIVEKIT_CONFIG (livekit-server's `--config-body`): no file
holding the secret is written, and unlike an argument it is not visible to other users.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from local_livekit.config import LOOPBACK, LiveKitConfig
from local_livekit.keys import KEY_VAR, SECRET_VAR, KeysFileError, load_or_create
from local_livekit.process import LiveKitNotFound, find_binary

# livekit-server also reads REDIS_HOST, NODE_IP, UDP_PORT, LIVEKIT_KEYS... from its
# environment, any of which would widen or change our config: it gets these and no other.
PASSED_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "TZ")


def _keys(args: argparse.Namespace) -> int:
    try:
        key, secret = load_or_create(args.file)
    except (OSError, KeysFileError) as exc:
        print(f"local_livekit: {exc}", file=sys.stderr)
        return 1
    print(key, secret)
    return 0


def _serve(args: argparse.Namespace) -> int:
    key, secret = os.environ.get(KEY_VAR, ""), os.environ.get(SECRET_VAR, "")
    if not key or not secret:
        print(f"local_livekit: {KEY_VAR} and {SECRET_VAR} must both be set", file=sys.stderr)
        return 2
    try:
        binary = find_binary()
    except LiveKitNotFound as exc:
        print(f"local_livekit: {exc}", file=sys.stderr)
        return 2
    config = LiveKitConfig(key, secret, port=args.port, webhook_urls=tuple(args.webhook))
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env["LIVEKIT_CONFIG"] = config.to_yaml()
    if args.log is not None:
        log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    os.execve(binary, [str(binary)], env)  # noqa: S606 - our binary, no arguments


def _end_calls(args: argparse.Namespace) -> int:
    from livekit import api  # only this command needs it (and its import takes a while)

    key, secret = os.environ.get(KEY_VAR, ""), os.environ.get(SECRET_VAR, "")

    async def end_all() -> int:
        async with api.LiveKitAPI(f"http://{LOOPBACK}:{args.port}", key, secret) as lk:
            rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
            for room in rooms:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room.name))
        return len(rooms)

    try:
        ended = asyncio.run(asyncio.wait_for(end_all(), args.timeout))
    except Exception as exc:  # stopping goes on regardless: say why
        print(f"local_livekit: could not end the calls: {exc!r}", file=sys.stderr)
        return 1
    if ended:
        print(f"local_livekit: ended {ended} call(s) in progress", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_livekit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="print the development keys kept in FILE")
    keys.add_argument("file", type=Path)
    keys.set_defaults(run=_keys)
    serve = commands.add_parser("serve", help="run livekit-server on loopback")
    serve.add_argument("--port", type=int, default=7880)
    serve.add_argument("--webhook", action="append", default=[], help="URL (repeatable)")
    serve.add_argument("--log", type=Path, help="its output goes here (truncated)")
    serve.set_defaults(run=_serve)
    end = commands.add_parser("end-calls", help="delete every room of the local server")
    end.add_argument("--port", type=int, default=7880)
    end.add_argument("--timeout", type=float, default=10.0)
    end.set_defaults(run=_end_calls)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
