"""``python -m firegate ...``: the same as the ``firegate`` command."""

from firegate.entry import main

main()
