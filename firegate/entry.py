"""The ``firegate`` console script.

Every command goes to the typer application (:mod:`firegate.cli.main`) except one: ``firegate
agent run`` is handed to the agent's own process entry, :mod:`edge.launch` (the same as
``python -m edge``), before typer, click and rich are imported. That is the one entry point
besides the command line, and it is kept on purpose: on a gateway the agent runs for months,
and the command line's libraries would stay resident for nothing (about 15 MB of the agent's
50 MB budget, docs/benchmarks.md). ``firegate agent run --help`` still goes to typer, whose
``agent run`` command calls the same :func:`edge.launch.run`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    argv = sys.argv[1:]
    if argv[:2] == ["agent", "run"] and not {"--help", "-h"} & set(argv[2:]):
        from edge.launch import main as launch

        sys.exit(launch(argv[2:], prog="firegate agent run"))
    from firegate.cli.main import main as cli

    cli()
