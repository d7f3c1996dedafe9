"""Start the edge agent without the rest of the command line: ``firegate agent run``.

The ``firegate`` command hands ``agent run`` here before typer, rich and the other commands
are imported (``firegate.entry``): on a gateway the agent runs for months, and those imports
would stay resident for nothing (~15 MB of the 50 MB budget, docs/benchmarks.md). Also
``python -m edge --config FILE``. Exit status: the agent's (0 after SIGTERM/Ctrl-C), 2 for
a config error (with the key that is wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "run"]

LOG_LEVELS = ("debug", "info", "warning", "error")


def run(config: Path, log_level: str | None = None) -> int:
    """Load and validate ``config``, then run the agent until stopped; the exit status."""
    from edge.app import run_agent
    from edge.config import ConfigError
    from edge.config.load import load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(f"{config}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=(log_level or cfg.gateway.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(run_agent(cfg))


def main(argv: Sequence[str] | None = None, prog: str = "python -m edge") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Run the firegate edge agent "
                                     "until SIGTERM or Ctrl-C.")
    parser.add_argument("--config", "-c", type=Path, required=True,
                        help="The agent's TOML config file.")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower,
                        help="Overrides [gateway] log_level.")
    args = parser.parse_args(argv)
    return run(args.config, args.log_level)
