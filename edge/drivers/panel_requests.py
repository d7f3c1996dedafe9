"""What the centre asks of a UITD: state reads, clock syncs, check-posts, and their commands.

The panel driver (:mod:`.panel`) sends one request and waits for its answer (``request``); the
answers to reads become records there, like uploads. This module decides what to ask and what
the outcome means:

* a **state read** (§8.3.2: 61, 62, 81, planned by :mod:`.panel_reads`) at connect and while it
  went unanswered, after a panel reset (复位) and on the ``read_panel_state`` command;
* a **probe** (81) when a quiet line may be dead: unanswered, the driver's watchdog decides;
* the **UITD clock** (90, 图45), set on connect, on a schedule and on ``sync_clock``;
* a **check-post** (91, 图46) on ``check_post``; the UITD answers later with a type 24 upload.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo

from edge.config.panel import PanelConfig
from edge.drivers.base import CommandError, CommandHandler, Counters
from edge.drivers.panel_reads import read_requests, read_targets
from protocols.gb26875 import (
    ApplicationData,
    CheckPost,
    ClockSync,
    Command,
    Frame,
    Profile,
    Reserved,
    TimeLabel,
)
from protocols.panel_records import PanelMapper
from protocols.wire import Command as WireCommand
from protocols.wire import CommandName as Cmd
from protocols.wire import JsonValue

__all__ = ["PanelRequests", "Reply", "Request", "RequestFailed"]


class RequestFailed(Exception):
    """A read or control the UITD did not confirm or answer (denied, timed out, link lost)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The UITD's confirm or answer to one request."""

    frame: Frame
    objects: int  # information objects in the answer
    records: int  # records emitted for it


Request = Callable[[int, ApplicationData], Awaitable[Reply]]
"""Send a packet (command, ADU) and wait for its answer; :class:`RequestFailed` without one."""


class PanelRequests:
    """The centre's questions and orders to one UITD (``name``, the driver's link name)."""

    def __init__(self, name: str, config: PanelConfig, profile: Profile, mapper: PanelMapper,
                 counters: Counters, request: Request, down: Callable[[], str | None], *,
                 tz: tzinfo | None = None) -> None:
        """``down`` says why the link is down, None while it is up; ``tz`` is the panel's."""
        self.name, self.config, self.profile, self.mapper = name, config, profile, mapper
        self.counters, self.request, self.down, self.tz = counters, request, down, tz

    def commands(self) -> Mapping[Cmd, CommandHandler]:
        return {Cmd.READ_PANEL_STATE: self._cmd_read_state, Cmd.CHECK_POST: self._cmd_check_post,
                Cmd.SYNC_CLOCK: self._cmd_sync_clock}

    def matches(self, prefix: str) -> bool:
        """Whether a ``read_panel_state`` ``panel`` argument names anything of this panel."""
        return bool(read_targets(self.mapper, self.config, prefix))

    # -- tasks the driver starts ---------------------------------------------------------------

    async def initial_read(self) -> bool:
        """The state read at connect; True when it need not be tried again."""
        try:
            result = await self.read_state(None)
        except (RequestFailed, CommandError):
            self.counters.inc("state_read_failed")
            return False
        failed = result.get("failed")
        # A denied read was answered (the panel lacks that system); any other failure (no
        # answer, link lost, answer not stored) is read again while frames flow.
        return not isinstance(failed, list) or all(
            isinstance(f, str) and ": denied" in f for f in failed)

    async def read_after_reset(self) -> None:
        """A reset (复位, 图9 bit 0) clears latched alarms on the panel, but many panels send no
        new state for each component: read back those held in alarm."""
        try:
            await self.read_state(None)
        except (RequestFailed, CommandError):
            self.counters.inc("state_read_failed")

    async def probe(self) -> None:
        with contextlib.suppress(RequestFailed):  # unanswered: the watchdog decides
            await self.request(Command.REQUEST, ApplicationData(81, (Reserved(),)))

    async def scheduled_sync(self) -> None:
        try:
            await self.sync_clock(datetime.now(self.tz))
        except RequestFailed:
            self.counters.inc("clock_sync_failed")
        else:
            self.counters.inc("clock_synced")

    # -- requests --------------------------------------------------------------------------------

    async def read_state(self, prefix: str | None) -> dict[str, JsonValue]:
        """Read 61 / 62 / 81 (§8.3.2, 图31, 图32, 图39); the answers become records."""
        targets = read_targets(self.mapper, self.config, prefix)
        if not targets:
            raise CommandError(f"{self.name}: nothing matches {prefix!r}")
        reads = read_requests(targets)
        counts: dict[str, int] = {"systems": 0, "components": 0, "uitd": 0, "records": 0}
        failed: list[JsonValue] = []
        for what, adu in reads:
            try:
                reply = await self.request(Command.REQUEST, adu)
            except RequestFailed as exc:
                failed.append(f"{adu.type_mark}: {exc}")
                continue
            counts[what] += reply.objects
            counts["records"] += reply.records
        if len(failed) == len(reads):
            raise CommandError(f"{self.name}: no read answered: {'; '.join(map(str, failed))}")
        result: dict[str, JsonValue] = {"panel": self.name, **counts}
        if failed:
            result["failed"] = failed
        return result

    async def sync_clock(self, when: datetime) -> Reply:
        label = TimeLabel.from_datetime(when)  # 图45: the centre's time, six bytes
        return await self.request(Command.CONTROL, ApplicationData(90, (ClockSync(label),)))

    # -- command handlers (protocols.wire CommandName) -------------------------------------------

    @staticmethod
    def _args(cmd: WireCommand, allowed: set[str]) -> None:
        unknown = sorted(set(cmd.args) - allowed)
        if unknown:
            raise CommandError(f"unknown argument {unknown[0]!r} for {cmd.cmd.value}")

    def _require_link(self) -> None:
        why = self.down()
        if why is not None:
            raise CommandError(f"{self.name}: link down: {why}")

    async def _cmd_read_state(self, cmd: WireCommand) -> Mapping[str, JsonValue]:
        self._args(cmd, {"panel"})
        prefix = cmd.args.get("panel")
        if prefix is not None and not isinstance(prefix, str):
            raise CommandError("argument 'panel' must be a string (a source id prefix)")
        self._require_link()
        return await self.read_state(prefix)

    async def _cmd_check_post(self, cmd: WireCommand) -> Mapping[str, JsonValue]:
        self._args(cmd, {"timeout_s"})
        timeout = cmd.args.get("timeout_s", 600)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not (
                1 <= timeout <= 255 * 60):
            raise CommandError("argument 'timeout_s' must be an integer 1-15300 (图46 carries "
                               "1-255 minutes)")
        minutes = math.ceil(timeout / 60)  # 图46: the answer timeout is in minutes
        self._require_link()
        try:
            reply = await self.request(self.profile.control_command,
                                       ApplicationData(91, (CheckPost(minutes),)))
        except RequestFailed as exc:
            raise CommandError(f"{self.name}: check-post not confirmed: {exc}") from None
        return {"panel": self.name, "sent": True, "timeout_minutes": minutes,
                "serial": reply.frame.serial}

    async def _cmd_sync_clock(self, cmd: WireCommand) -> Mapping[str, JsonValue]:
        self._args(cmd, set())
        self._require_link()
        try:
            # docs/wire-protocol.md: sync_clock sets the clock from the command's ts.
            when = datetime.fromtimestamp(cmd.ts_ms / 1000, self.tz)
            await self.sync_clock(when)
        except (RequestFailed, ValueError, OverflowError, OSError) as exc:
            raise CommandError(f"{self.name}: clock not set: {exc}") from None
        return {"panel": self.name, "time": when.replace(microsecond=0).isoformat()}
