"""The ``firegate`` console script: ``agent run`` goes straight to :mod:`edge.launch`, every
other command to the typer application (:mod:`edge.cli.main`)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    argv = sys.argv[1:]
    if argv[:2] == ["agent", "run"] and not {"--help", "-h"} & set(argv[2:]):
        from edge.launch import main as launch

        sys.exit(launch(argv[2:], prog="firegate agent run"))
    from edge.cli.main import main as cli

    cli()
