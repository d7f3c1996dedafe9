"""``firegate demo``: the README's main job.

Until the edge agent and the collector land, the demo shows what exists: a simulated UITD and a
monitoring centre, both built on the codec, hold a GB/T 26875.3 conversation over an in-memory
byte stream with line noise, and the centre decodes, confirms and reports every frame.
"""

from __future__ import annotations

import typer


def demo() -> None:
    """Run the main job on simulators with embedded defaults (no server needed)."""
    from edge.cli.demo_codec import run

    raise typer.Exit(run())
