"""``python -m collector --config FILE``: the collector alone (see :mod:`collector.launch`)."""

import sys

from collector.launch import main

sys.exit(main())
