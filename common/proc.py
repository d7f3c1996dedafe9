"""Whether a process id is alive: the one check the status readers and the demo share.

``kill(pid, 0)`` sends no signal; it only asks the kernel whether ``pid`` exists. A process of
another user (a collector run as the service user, read by an operator) answers
``PermissionError``: it exists, so it is alive. A pid read from a file is untrusted: anything
but a positive ``int`` is "not alive", never ``kill(0, ...)`` (the caller's process group) or
``kill(-1, ...)`` (every process it may signal).

A pid can be reused after its process ended; callers that read a pid from a file also check the
file is fresh (``collector.status``: a snapshot younger than a minute).
"""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: object) -> bool:
    """True if a process ``pid`` exists (ours or another user's); False for anything that is
    not a positive int (``bool`` included), and for a pid that no process has."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # larger than a pid_t: no such process
        return False
    return True
