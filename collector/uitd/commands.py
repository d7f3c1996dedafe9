"""Downstream commands from the centre to a UITD: clock sync (90), check-post (91, 查岗) and
reads of its states (61 systems, 62 components, 81 the UITD itself), §8.3.2.

Each runs on the centre's loop (:func:`run_command` hops there from any other loop or thread,
e.g. the HTTP API's) and waits for the UITD's confirm or answer, with the session's resends
(§6.5.4, §6.5.5: 10 s, 3 times). An answer to a read is mapped as what holds now and stored
like an upload (records, registry, risk) before the command returns. A check-post is
confirmed at once by the UITD; the operator's answer comes later as an upload (type 24 with
bit 5, 图14) and is stored as a ``check_post`` event.

A UITD that never answers costs its own link: the command fails (``command_failed``), nothing
else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from collector.uitd.centre import Centre, CentreError
from collector.uitd.device import Device
from protocols.gb26875 import (
    ApplicationData,
    CheckPost,
    ClockSync,
    Command,
    Completed,
    ComponentAddress,
    ComponentRef,
    Failed,
    Reserved,
    SessionEvent,
    SystemRef,
)
from protocols.gb26875.adu import Adu
from protocols.gb26875.render import adu_to_data

__all__ = ["CHECK_POST_MAX_MINUTES", "READS", "check_post", "clock_sync", "read", "run_command"]

log = logging.getLogger("firegate.collector.uitd")
READS = ("uitd", "systems", "components")
CHECK_POST_MAX_MINUTES = 255
"""图46: the reply timeout is one byte of minutes."""
MAX_OPEN_COMMANDS = 4
"""Downstream commands open at once on one link."""


async def run_command(centre: Centre, make: Callable[[], Awaitable[dict[str, Any]]]
                      ) -> dict[str, Any]:
    """Run ``make()`` on the centre's loop, from whatever loop or thread calls."""
    loop = centre.loop
    if loop is None:
        raise CentreError("the GB/T 26875.3 centre is not running", 503)
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if here is loop:
        return await make()

    async def hop() -> dict[str, Any]:
        return await make()

    future = asyncio.run_coroutine_threadsafe(hop(), loop)
    return await asyncio.wrap_future(future)


async def _command(centre: Centre, device: Device, kind: str, command: int,
                   adu: ApplicationData, by: str | None = None) -> dict[str, Any]:
    link = device.link
    if link is None or link.closed or link.session is None:
        raise CentreError(f"UITD {device.gateway} is not connected")
    if len(link.answers) >= MAX_OPEN_COMMANDS:
        raise CentreError(f"UITD {device.gateway} has {MAX_OPEN_COMMANDS} commands open")
    loop = asyncio.get_running_loop()
    result: asyncio.Future[dict[str, Any]] = loop.create_future()
    started = time.monotonic()

    def settle(outcome: dict[str, Any] | Exception) -> None:
        if result.done():
            return
        if isinstance(outcome, Exception):
            result.set_exception(outcome)
        else:
            result.set_result(outcome)

    def answered(adu: Adu | None, records: int) -> None:
        settle({"answer": adu_to_data(adu, device.entry.profile) if adu is not None else None,
                "records": records})

    def want(event: SessionEvent) -> None:
        if isinstance(event, Failed):
            centre.counters["command_failed"] += 1
            settle(CentreError(f"{kind}: {event.reason}"))
        elif isinstance(event, Completed):
            if event.reply.command == Command.RESPONSE:
                centre.answer(device, event.reply, answered)
            elif event.reply.command == Command.CONFIRM:
                settle({"confirmed": True})

    try:
        link.send(command, adu, want)
    except ValueError as exc:  # EncodeError: a field out of its range (a read's target)
        raise CentreError(f"{kind}: {exc}", 400) from None
    centre.counters[f"command_{kind}"] += 1
    budget = centre.config.command_timeout_s * (centre.config.command_retries + 1) + 10.0
    entry: dict[str, object] = {"kind": kind, "at_ms": time.time_ns() // 1_000_000, "by": by}
    log.info("%s to UITD %s (by %s)", kind, device.gateway, by or "the collector")
    try:
        outcome = await asyncio.wait_for(result, budget)
    except (CentreError, TimeoutError) as exc:
        entry.update(ok=False, error=str(exc) or "no answer")
        device.commands.append(entry)
        raise CentreError(str(exc) or f"{kind}: no answer", 504) from None
    outcome["seconds"] = round(time.monotonic() - started, 3)
    entry.update(ok=True, seconds=outcome["seconds"])
    if "records" in outcome:
        entry["records"] = outcome["records"]
    device.commands.append(entry)
    return {"gateway": device.gateway, "command": kind, **outcome}


async def clock_sync(centre: Centre, name: str, *, by: str | None = None) -> dict[str, Any]:
    """Set the UITD's clock to ours (type 90 in command 1, 图44)."""
    device = centre.device(name)
    label = device.label()
    out = await _command(centre, device, "clock_sync", Command.CONTROL,
                         ApplicationData(90, (ClockSync(label),)), by)
    out["clock"] = str(label.to_datetime() or label)
    return out


async def check_post(centre: Centre, name: str, minutes: int = 10, *,
                     by: str | None = None) -> dict[str, Any]:
    """查岗 (type 91, 图46): the UITD asks its operator to answer within ``minutes``."""
    if not 1 <= minutes <= CHECK_POST_MAX_MINUTES:
        raise CentreError(f"minutes must be 1..{CHECK_POST_MAX_MINUTES}, got {minutes}", 400)
    device = centre.device(name)
    return await _command(centre, device, "check_post", device.entry.profile.control_command,
                          ApplicationData(91, (CheckPost(minutes),)), by)


async def read(centre: Centre, name: str, what: str = "uitd",
               targets: Sequence[tuple[int, ...]] = (), *, by: str | None = None
               ) -> dict[str, Any]:
    """Read states (§8.3.2): ``uitd`` (81), ``systems`` (61, targets (type, address)) or
    ``components`` (62, targets (system type, system address, component address))."""
    device = centre.device(name)
    try:
        adu = _read_adu(what, targets)
    except ValueError as exc:  # a target out of its field's range
        raise CentreError(f"{what}: {exc}", 400) from None
    return await _command(centre, device, f"read_{what}", Command.REQUEST, adu, by)


def _read_adu(what: str, targets: Sequence[tuple[int, ...]]) -> ApplicationData:
    if what == "uitd":
        adu = ApplicationData(81, (Reserved(),))
    elif what == "systems":
        if not 1 <= len(targets) <= 102 or any(len(t) != 2 for t in targets):
            raise CentreError("systems: give 1-102 targets of (system type, system address)",
                              400)
        adu = ApplicationData(61, tuple(SystemRef(t[0], t[1]) for t in targets))
    elif what == "components":
        if not 1 <= len(targets) <= 22 or any(len(t) != 3 for t in targets):
            raise CentreError("components: give 1-22 targets of (system type, system "
                              "address, component address)", 400)
        adu = ApplicationData(62, tuple(ComponentRef(t[0], t[1], ComponentAddress.from_int(t[2]))
                                        for t in targets))
    else:
        raise CentreError(f"read what? one of {', '.join(READS)}, got {what[:32]!r}", 400)
    return adu
