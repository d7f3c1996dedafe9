"""Run a simulator as a real subprocess (``firegate sim NAME ...``), stopped by its PID."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WAIT = 20.0  # generous bound for start-up on a loaded CI machine; never a timing assertion
FIREGATE = shutil.which("firegate") or str(Path(sys.executable).parent / "firegate")


def sim_command(name: str) -> list[str]:
    """The installed console command for one simulator."""
    return [FIREGATE, "sim", name]


@contextlib.asynccontextmanager
async def simulator(name: str, *args: str, first_line: tuple[str, ...] = ("listening ",),
                    ) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start ``firegate sim NAME ARGS``, yield it with the address from its first line (which
    must start with one of ``first_line``), then stop it with SIGTERM (SIGKILL if it hangs)."""
    proc = await asyncio.create_subprocess_exec(
        *sim_command(name), *args, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode()
        assert line.startswith(first_line), line
        yield proc, line.split()[2]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # by PID: the process we started
            try:
                await asyncio.wait_for(proc.wait(), WAIT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
