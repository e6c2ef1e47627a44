"""`python -m agent dev|start|download-files` (livekit-agents' own CLI) and
`python -m agent chat <persona>` (the text preview for sales)."""

from __future__ import annotations

import sys
import warnings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "chat":
        from agent.chat import main as chat_main

        return chat_main(args[1:])

    from livekit.agents import cli

    from agent.worker import build_server
    from server.settings import ConfigError, get_settings

    try:
        settings = get_settings()
        # Only running a worker needs the provider keys: download-files runs at image build
        # time, before any key exists, and --help must work anywhere.
        runs_worker = bool(args) and args[0] in ("dev", "start", "console", "connect")
        server = build_server(settings, check_keys=runs_worker)
    except (ConfigError, ValueError) as exc:
        print(f"agent: refusing to start: {exc}", file=sys.stderr)
        return 2
    # The Python CLI of livekit-agents 1.8 is the pinned, documented entry point here; its
    # deprecation notice points to the `lk` tool, which this image does not ship.
    warnings.filterwarnings("ignore", message="the built-in Python CLI is deprecated")
    sys.argv = [sys.argv[0], *args]
    cli.run_app(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
