"""``python -m edge --config FILE``: the edge agent alone (see :mod:`edge.launch`)."""

import sys

from edge.launch import main

sys.exit(main())
