"""Escalation: which policy takes an alarm, when its next step is due, what a step sends, and
the thread that fires due steps on time (docs/alarms.md, "Escalation").

A step is due ``after_s`` after the alarm was raised (the collector's time, never the gateway's
clock: a gateway clock an hour fast must not hold a fire alarm back an hour). The steps stop
when the alarm is acknowledged (or resolved, which acknowledges it); a policy with ``until =
"ack_or_clear"`` also stops them when the alarm clears, except for a fire alarm, which keeps
escalating until a person has acknowledged it.

Each step is one notification per webhook of the step, queued in the durable webhook queue
(:mod:`collector.notify`) under the key ``alarm:<id>:step:<n>``: a step fired again after a
crash (queued, but the book had not yet written that it was) is sent once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence

from collector.alarms.config import EscalationPolicy, matches_site
from collector.alarms.model import CLEARED, Alarm
from collector.api.config import HttpConfig
from collector.notify import FIRE_KINDS, Notification

__all__ = ["ESCALATION_KIND", "EscalationLoop", "ack_url", "ack_url_base", "alarm_url", "due_ms",
           "policy_for", "step_notification"]

log = logging.getLogger("firegate.collector.alarms")

ESCALATION_KIND = "alarm_escalation"
"""The notifications' kind (``X-Firegate-Event``)."""
MAX_WAIT_S = 1.0
"""The loop looks at the timers at least this often (and is woken when an earlier one is set)."""
PRUNE_EVERY_S = 3600.0


def policy_for(policies: Sequence[EscalationPolicy], kind: str, site: str
               ) -> EscalationPolicy | None:
    """The first policy, in file order, that takes alarms of ``kind`` at ``site``."""
    for p in policies:
        if kind in p.events and matches_site(p, site):
            return p
    return None


def due_ms(alarm: Alarm, policy: EscalationPolicy | None) -> int | None:
    """When the alarm's next step is due; None: no further step."""
    if policy is None or alarm.acknowledged or alarm.resolution is not None:
        return None
    if (policy.until == "ack_or_clear" and alarm.state == CLEARED
            and alarm.type not in FIRE_KINDS):
        return None
    step = alarm.escalation_step + 1
    if step >= len(policy.steps):
        return None
    return alarm.raised_ms + round(policy.steps[step].after_s * 1000)


def ack_url_base(http: HttpConfig | None) -> str | None:
    """Where the API is reached, for the links in notifications: ``[http] public_url``, else
    built from ``listen`` (a wildcard address gives a link only that host can follow: set
    ``public_url``); None without ``[http]``."""
    if http is None:
        return None
    if http.public_url is not None:
        return http.public_url
    host = f"[{http.host}]" if ":" in http.host else http.host
    return f"{'https' if http.cert_file is not None else 'http'}://{host}:{http.port}"


def ack_url(base: str | None, alarm_id: str) -> str | None:
    """The API's route that acknowledges the alarm (``POST`` with a token: for integrators'
    programs, not a link a person can follow); None without an API."""
    return None if base is None else f"{base.rstrip('/')}/api/v1/alarms/{alarm_id}/ack"


def alarm_url(base: str | None, alarm_id: str) -> str | None:
    """The console's page of the alarm (its detail, with the acknowledge button, after
    sign-in): the link for people; None without an API. The id is URL-safe (``a`` + hex)."""
    return None if base is None else f"{base.rstrip('/')}/#alarm={alarm_id}"


def step_notification(alarm: Alarm, policy: EscalationPolicy, step: int, now_ms: int,
                       base_url: str | None) -> Notification:
    """The notification of step ``step`` of ``alarm``: addressed to the step's webhooks,
    whatever their ``events``; fire alarms on the fire lane; ordered with the notifications
    of the alarm's source (a step never overtakes the event that raised it)."""
    webhooks = policy.steps[step].webhooks
    key = f"alarm:{alarm.id}:step:{step}"
    body = {"v": 1, "kind": ESCALATION_KIND, "key": key, "alarm_id": alarm.id, "step": step,
            "policy": policy.name, "webhooks": list(webhooks), "time_ms": now_ms,
            "url": alarm_url(base_url, alarm.id), "ack_url": ack_url(base_url, alarm.id),
            "alarm": alarm.to_json()}
    return Notification(ESCALATION_KIND,
                        key, json.dumps(body, ensure_ascii=False,
                                        separators=(",", ":")).encode(),
                        gateway=alarm.gateway, source=alarm.source or None,
                        webhooks=webhooks, fire=alarm.type in FIRE_KINDS)


class EscalationLoop:
    """The ``alarm-escalation`` thread: fires due steps when they are due (woken early when a
    sooner timer is set) and prunes closed alarms past their retention hourly."""

    def __init__(self, fire_due: Callable[[int], int | None], prune: Callable[[int], int],
                 wake: threading.Event, *, clock: Callable[[], int]) -> None:
        self._fire_due = fire_due
        self._prune = prune
        self._wake = wake
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alarm-escalation", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        pruned = float("-inf")
        while not self._stop.is_set():
            self._wake.clear()  # timers are read after this: no wake is lost
            wait = MAX_WAIT_S
            try:
                now = self._clock()
                next_ms = self._fire_due(now)
                if next_ms is not None:
                    wait = min(wait, max(0.0, (next_ms - self._clock()) / 1000))
                if time.monotonic() - pruned >= PRUNE_EVERY_S:
                    pruned = time.monotonic()
                    self._prune(now)
            except Exception as e:  # the loop outlives any fault: counted, retried shortly
                self.errors += 1
                if repr(e) != self.last_error:  # a disk that stays full is logged once
                    self.last_error = repr(e)
                    log.exception("alarm escalation: unexpected error (retried every %g s; "
                                  "repeats are not logged)", MAX_WAIT_S)
                wait = MAX_WAIT_S
            else:
                self.last_error = None
            if wait > 0:
                self._wake.wait(wait)
