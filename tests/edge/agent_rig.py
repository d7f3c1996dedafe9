"""Running the real agent (``firegate agent run``) as a subprocess next to real simulators."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from tests.infra.simproc import FIREGATE, REPO, WAIT

from .test_uplink_infra import until

__all__ = ["agent", "agent_config", "firegate_json", "last_seq", "stored_seqs", "until"]


def agent_config(tmp: Path, *, gw: str, broker_port: int | None, panel_port: Path | None = None,
                 modbus: tuple[str, int] | None = None, devices: str = "",
                 extra: str = "", uplink: str = "confirm_timeout_s = 5\n") -> Path:
    """Write a gateway TOML for the simulators at hand; returns its path. ``uplink`` goes
    into ``[uplink]`` (by default a short confirmation timeout: a confirmation published
    while the agent was away is lost, and its records go out again after it)."""
    parts = [f"""
[gateway]
id = "{gw}"
site = "site-e2e"
data_dir = "{tmp / 'data'}"
log_level = "info"

[state]
flush_interval_s = 0.2
snapshot_interval_s = 0.5
"""]
    if broker_port is not None:
        parts.append(f"""
[uplink]
url = "mqtt://127.0.0.1:{broker_port}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
health_interval_s = 2
{uplink}""")
    if panel_port is not None:
        parts.append(f"""
[[panel]]
name = "com1"
port = "{panel_port}"
silence_timeout_s = 20
probe_after_s = 5
""")
    if modbus is not None:
        parts.append(f"""
[[modbus]]
name = "bus1"
host = "{modbus[0]}"
tcp_port = {modbus[1]}
timeout_s = 0.3
gap_ms = 5
{devices}
""")
    parts.append(extra)
    path = tmp / "gateway.toml"
    path.write_text("".join(parts), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def agent(config: Path, *, log: Path | None = None
                ) -> AsyncIterator[asyncio.subprocess.Process]:
    """``firegate agent run --config CONFIG``; stopped with SIGTERM (SIGKILL if it hangs)."""
    out = open(log or config.with_suffix(".log"), "ab")  # noqa: SIM115 - closed below
    proc = await asyncio.create_subprocess_exec(
        FIREGATE, "agent", "run", "--config", str(config), cwd=REPO, stdout=out, stderr=out,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), WAIT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        out.close()


def firegate_json(*args: str) -> Any:
    """Run a read command with ``--json`` and parse its output: one document for ``status``
    and ``outbox``, a list for the JSON-lines commands (``events``, ``sensors``)."""
    res = subprocess.run([FIREGATE, *args, "--json"], capture_output=True, text=True,
                         timeout=60, cwd=REPO, check=False)
    assert res.returncode == 0, res.stderr
    text = res.stdout.strip()
    if args[0] in ("status", "outbox"):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line]


def scenario_toml(panel: str = "", modbus: str = "") -> str:
    return f"[panel]\n{panel}\n[modbus]\n{modbus}\n"


async def wait_for_file(path: Path, what: str) -> None:
    await until(path.exists, what)


def env_with(extra: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def _outbox(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{tmp / 'data' / 'outbox.db'}?mode=ro", uri=True)


def stored_seqs(tmp: Path) -> list[int]:
    """Seqs still waiting in the agent's outbox (read-only, the agent may be running)."""
    db = _outbox(tmp)
    try:
        return [s for (s,) in db.execute("SELECT seq FROM outbox")]
    finally:
        db.close()


def last_seq(tmp: Path) -> int:
    """The highest seq the agent's outbox ever assigned."""
    db = _outbox(tmp)
    try:
        (next_seq,) = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        return int(next_seq) - 1
    finally:
        db.close()
