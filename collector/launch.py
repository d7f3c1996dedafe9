"""Run the collector process: ``python -m collector --config FILE`` (and ``firegate collector
run``, which calls :func:`run`). Exit status: 0 after SIGTERM/Ctrl-C, 1 when the state
directory is in use or the store cannot open, 2 for a config error (with the key that is
wrong)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LOG_LEVELS", "main", "run"]

LOG_LEVELS = ("debug", "info", "warning", "error")


def run(config: Path, log_level: str = "info") -> int:
    """Load and validate ``config``, then run the collector until stopped; the exit status."""
    from collector.app import Collector, CollectorError
    from collector.app import run as run_collector
    from collector.config import ConfigError, load_config
    from collector.sinks.base import SinkError

    try:
        cfg = load_config(config)
    except ConfigError as e:
        print(f"error: {config}: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = "off" if cfg.metrics_listen is None else \
        f"http://{cfg.metrics_listen[0]}:{cfg.metrics_listen[1]}/metrics"
    print(f"collector {cfg.collector_id}: broker {cfg.mqtt.url} as {cfg.mqtt.client_id}, "
          f"sink {cfg.sink.describe()}, metrics {metrics}", flush=True)

    def ready(c: Collector) -> None:
        share = cfg.mqtt.share_group or "none"
        print(f"ready: subscribed (share group {share}), state {cfg.state_dir}", flush=True)

    # The pipeline makes millions of short-lived objects (records, points): a higher
    # generation-0 threshold and frozen start-up objects cut the collector's GC work
    # (docs/wire-protocol.md, "Implementation notes").
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    # The writer thread gives up the GIL around every SQLite step and fsync, and needs it
    # back to confirm. With CPython's default 5 ms switch interval each of those waits could
    # last 5 ms while the event loop (thousands of UITD links) computed: a group's write took
    # 50-150 ms instead of 5 (docs/benchmarks.md, issue 16). A shorter interval bounds it.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        asyncio.run(run_collector(cfg, on_ready=ready))
    except (CollectorError, SinkError) as e:  # state directory in use, store cannot open
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("stopped", flush=True)
    return 0


SWITCH_INTERVAL_S = 0.0005
"""``sys.setswitchinterval`` of the collector process (CPython's default is 0.005 s)."""


def main(argv: Sequence[str] | None = None, prog: str = "python -m collector") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Run the firegate collector "
                                     "until SIGTERM or Ctrl-C.")
    parser.add_argument("--config", "-c", type=Path, required=True,
                        help="The collector's TOML config file.")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, default="info",
                        help="debug, info, warning, error (default info).")
    args = parser.parse_args(argv)
    return run(args.config, args.log_level)
