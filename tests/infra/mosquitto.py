"""A real Mosquitto broker per test (apt ``mosquitto``), on a free loopback port, stopped by PID.

Pitfalls handled (see shared/reference/test-infrastructure.md): started as root, mosquitto drops
privileges before reading its files, so the config says ``user root``; log lines go to a file
(stdout logging arrives late); persistence is on so a restart keeps sessions and retained
messages (SIGTERM writes ``mosquitto.db``).

With ``fragment`` (the text of a ``conf.d`` file, e.g. the ``mosquitto-firegate.conf`` that
``firegate provision`` writes), the broker runs the way Debian's package does: a main config
with only what this harness needs (``user root``, persistence location, log file) that
includes the fragment, which brings its own listeners and security settings. The password
and ACL files are still written (``passwd_file``, ``acl_file``) for the fragment to name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.infra.ports import free_port, wait_listening
from tests.infra.tls import TestCA

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


@dataclass
class Mosquitto:
    """One broker. ``start()``, ``stop()``, ``restart()``; ``port`` (plain) and ``tls_port``."""

    directory: Path
    users: dict[str, str] = field(default_factory=dict)  # name -> password
    acl: str | None = None  # ACL file text; None = everyone may do everything
    tls: bool = False
    port: int = field(default_factory=free_port)
    tls_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    ca: TestCA | None = None
    fragment: str | None = None  # a conf.d file with its own listener(s) and security

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.tls_port = free_port()
            self.ca = TestCA(self.directory / "pki")
            self.server_cert = self.ca.issue("broker", server=True)

    @property
    def log(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def passwd_file(self) -> Path:
        return self.directory / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.directory / "acl"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _config(self) -> Path:
        lines = ["persistence true", f"persistence_location {self.directory}/",
                 f"log_dest file {self.log}", "log_type all", "connection_messages true"]
        if self.fragment is None:
            lines += ["max_inflight_messages 0", "max_queued_messages 0"]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        auth: list[str] = []
        if self.users or self.fragment is not None:
            pw = self.passwd_file
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True,
                               capture_output=True)
            auth += ["allow_anonymous false", f"password_file {pw}"]
        else:
            auth.append("allow_anonymous true")
        if self.acl is not None:
            acl = self.acl_file
            acl.write_text(self.acl)
            auth.append(f"acl_file {acl}")
        if self.fragment is not None:
            included = self.directory / "conf.d"
            included.mkdir(exist_ok=True)
            (included / "firegate.conf").write_text(self.fragment)
            conf = self.directory / "mosquitto.conf"
            conf.write_text("\n".join([*lines, f"include_dir {included}"]) + "\n")
            return conf
        lines += ["per_listener_settings false", *auth,
                  f"listener {self.port} 127.0.0.1"]
        if self.tls and self.ca is not None:
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {self.ca.cert}",
                      f"certfile {self.server_cert.cert}", f"keyfile {self.server_cert.key}",
                      "require_certificate false"]
        conf = self.directory / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> Mosquitto:
        if self.proc is not None:
            raise RuntimeError("broker already running")
        conf = self._config()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            if self.fragment is None or not self.tls_port:
                wait_listening(self.port)
            if self.tls_port:
                wait_listening(self.tls_port)
        except TimeoutError:
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None and \
                self.proc.stderr else ""
            log = self.log.read_text() if self.log.exists() else ""
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {err}\n{log[-2000:]}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by PID (SIGTERM saves persistence; SIGKILL for a crash)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
