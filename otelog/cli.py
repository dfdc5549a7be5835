"""`otelog serve`: flags and OTELOG_* variables -> Config -> Server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from otelog import __version__
from otelog.config import add_arguments, from_sources
from otelog.errors import OtelogError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="otelog", description="OpenTelemetry log and trace backend"
    )
    parser.add_argument("--version", action="version", version=f"otelog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run an embedded single node")
    add_arguments(serve)
    args = parser.parse_args(argv)
    config = from_sources(args)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from otelog.server import Server  # heavy imports after argument errors are reported

    try:
        asyncio.run(Server(config).run())
    except OtelogError as e:
        print(f"otelog: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
