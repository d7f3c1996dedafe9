"""Whether the broker still held the collector's session: a lost session is an alarm.

The collector's persistent MQTT session is where the broker keeps what was sent to the
collector while it was away or busy. A CONNACK saying ``session_present = 0`` (MQTT 5.0
§3.2.2.1.1) when the collector expected its session means the broker no longer had it: the
broker restarted without its ``mosquitto.db`` (or crashed before saving it), the collector was
away longer than ``session_expiry_s``, or another client connected with the collector's client
id and a clean start (a broker without ``use_username_as_clientid``, docs/collector.md "The
broker"). Whatever was queued in it is gone, and while no session existed the broker answered
the gateways' publishes with PUBACK 0x10 "no matching subscribers" - which an agent that
deletes on any successful PUBACK took as delivered. So messages may have been lost: the
collector counts it (``firegate_collector_session_lost_total``), logs an error, shows it in
``collector status``, and the gap ledger then shows which records are missing.

**When is a session expected** (the choice, documented in docs/collector.md "Status"): when
this process has been connected before (a reconnect), or when the state directory's marker
``mqtt-session.json`` says a session was made at this broker URL under this client id (a
restart). The marker is written at the first CONNACK of each process; a changed URL or client
id is a new session, not a loss. The very first start, with no marker, expects nothing.

Not seen from here: a client that takes the client id with a clean start **and** a session
expiry leaves a new, empty session behind, and the collector then gets ``session_present = 1``
(measured with Mosquitto 2.0.11). Binding client ids to users at the broker is what prevents
it; this check catches the other causes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from collector.metrics import Metrics

__all__ = ["MARKER_NAME", "SessionWatch"]

log = logging.getLogger("firegate.collector.ingest")
MARKER_NAME = "mqtt-session.json"


class SessionWatch:
    """Fed every successful CONNACK (paho's thread); says when an expected session is gone."""

    def __init__(self, url: str, client_id: str, marker: Path | None, metrics: Metrics) -> None:
        self.url = url
        self.client_id = client_id
        self.marker = marker
        self.metrics = metrics
        self._connected_before = False
        self.count = 0
        """Sessions found lost in this process."""
        self.last_ms: int | None = None
        """Wall clock (ms) of the last one."""

    def expected(self) -> str | None:
        """Why a session is expected now, or None."""
        if self._connected_before:
            return "it was connected before in this process"
        if self.marker is None:
            return None
        try:
            seen = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(seen, dict) or (seen.get("url"), seen.get("client_id")) != \
                (self.url, self.client_id):
            return None  # another broker or client id: a new session, nothing was lost
        since = seen.get("since_ms")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since / 1000)) \
            if isinstance(since, int) else "an earlier run"
        return f"its state directory shows a session made there at {when}"

    def connack(self, session_present: bool, now_ms: int) -> bool:
        """Record one successful CONNACK; True when an expected session was not there (then
        counted and logged)."""
        why = None if session_present else self.expected()
        if not self._connected_before:
            self._connected_before = True
            self._write_marker(now_ms)
        if why is None:
            return False
        self.count += 1
        self.last_ms = now_ms
        self.metrics.session_lost.inc()
        log.error("MQTT session lost: the broker %s had no session for client id %s, though %s. "
                  "Messages queued for the collector are gone, and gateways publishing while "
                  "it was missing were answered 'no matching subscribers' (0x10): messages may "
                  "have been lost; the gap ledger (collector status) shows which records are "
                  "missing", self.url, self.client_id, why)
        return True

    def _write_marker(self, now_ms: int) -> None:
        if self.marker is None:
            return
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(self.marker.read_text(encoding="utf-8"))
            if isinstance(old, dict) and (old.get("url"), old.get("client_id")) == \
                    (self.url, self.client_id):
                return  # keep the first time it was made
        tmp = self.marker.with_name(self.marker.name + ".new")
        try:
            # 0600 before anything is written (the state directory's rule, common.files);
            # a symlink planted in its place is refused, not followed.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps({"url": self.url, "client_id": self.client_id,
                                    "since_ms": now_ms}))
            os.replace(tmp, self.marker)
        except OSError as exc:  # the check then only covers reconnects of this process
            log.warning("cannot write %s: %s", self.marker, exc.strerror)
