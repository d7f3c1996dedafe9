"""The ``firegate`` command line: one root, subcommands registered per concern."""
