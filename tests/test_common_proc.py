"""``common.proc.pid_alive``, the one pid check of ``collector status`` and the demo, on real
processes: a running child, the same child once reaped, another user's process, and the
untrusted values a snapshot file may hold."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from common.proc import pid_alive


def test_a_running_child_is_alive_and_a_reaped_one_is_not() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert pid_alive(child.pid)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    # Reaped: the kernel has no such process any more (a zombie would still answer).
    assert not pid_alive(child.pid)


@pytest.mark.parametrize("pid", [None, 0, -1, -12345, True, False, "1", 1.0, 2**40, [1]])
def test_what_is_not_a_positive_pid_is_not_alive(pid: object) -> None:
    # 0 and -1 would ask about the process group and every process: never sent.
    assert pid_alive(pid) is False


def test_another_users_process_is_alive() -> None:
    # As "nobody", kill(pid, 0) on root's process answers EPERM: it exists. (The test
    # machines run the suite as root, with util-linux's setpriv: no skip.)
    assert os.geteuid() == 0 and shutil.which("setpriv"), "run as root with setpriv"
    me = os.getpid()
    code = (f"from common.proc import pid_alive; import sys; "
            f"sys.exit(0 if pid_alive({me}) else 3)")
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", code],
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
