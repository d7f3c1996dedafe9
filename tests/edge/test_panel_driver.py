"""The panel driver against the real panel simulator (``firegate sim panel`` as a subprocess).

The simulator runs on a pty it creates (reached through a ``--link`` symlink, which it removes
when it stops: the port vanishes like an unplugged USB adapter) or over TCP; its JSON-lines
ledger says what it uploaded, what was confirmed, which faults it injected and what it answered.
Records leave the driver through a real ``DriverContext.emit`` that appends to a list (and can
be told to fail like a full outbox). Every wait has a generous deadline; nothing asserts timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge.config.panel import ComponentKey, PanelConfig
from edge.drivers.base import CommandError, DriverContext, EmitRefused
from edge.drivers.panel import PanelDriver
from edge.drivers.panel_link import LinkClosed, TcpServerLink
from protocols.gb26875 import (
    ApplicationData,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    FacilityOperation,
    FacilityOperationRecord,
    Frame,
    Reserved,
    Session,
    StreamDecoder,
    TimeLabel,
    UitdState,
    UitdStatus,
    address_from_int,
    decode_frame,
    encode_frame,
)
from protocols.gb26875 import Command as GbCommand
from protocols.wire import Command, CommandName, Event, EventType, Measurement, Priority, Record
from tests.infra.ports import free_port
from tests.infra.simproc import simulator

WAIT = 20.0
SMOKE = "panel/1-1/42-0x00000bb9"  # the simulator's smoke-3F-east (42, address 3001)
MODULE = "panel/1-1/87-0x00000065"  # module-pump-room (87, address 101)
CALLPOINT = "panel/1-1/23-0x00000bc2"  # callpoint-3F-stairs (23, address 3010)
LINK = "panel/com1/link"
FIRE_AT_MS = 1_714_521_601_000  # 2024-05-01 08:00:01 Asia/Shanghai: start_time + 1 s
LABEL = TimeLabel(0, 0, 8, 1, 5, 24)  # 2024-05-01 08:00:00


class Outbox:
    """``DriverContext.emit``: stores records, or raises like a full outbox while told to."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.failing = False
        self.refused = 0

    async def emit(self, records: Sequence[Record]) -> None:
        if self.failing:
            self.refused += 1
            raise EmitRefused("full", "outbox full")  # what the pipeline raises
        self.records.extend(records)

    def events(self, source: str | None = None, kind: EventType | None = None) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)
                and (source is None or r.source.id == source) and (kind is None or r.type is kind)]


async def until(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def entries(path: Path) -> dict[int, str]:
    """Upload id -> its last status in the ledger."""
    status: dict[int, str] = {}
    for rec in ledger(path):
        if "entry" in rec:
            status[rec["entry"]] = rec["event"]
    return status


def scenario(tmp: Path, events: str, **panel: object) -> str:
    lines = ["[panel]", "start_time = 2024-05-01T08:00:00"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in panel.items()]
    path = tmp / "scenario.toml"
    path.write_text("\n".join(lines) + "\n" + textwrap.dedent(events), encoding="utf-8")
    return str(path)


def config(port: Path | None = None, **kw: Any) -> PanelConfig:
    base: dict[str, Any] = dict(name="com1", silence_timeout_s=60, probe_after_s=0,
                                request_timeout_s=1.0, clock_sync_interval_s=0,
                                reopen_min_s=0.1, reopen_max_s=0.5, timezone="Asia/Shanghai")
    if port is not None:
        base["port"] = str(port)
    base.update(kw)
    return PanelConfig(**base)


@contextlib.asynccontextmanager
async def running(cfg: PanelConfig, previous: frozenset[tuple[str, str]] = frozenset()
                  ) -> AsyncIterator[tuple[PanelDriver, Outbox, DriverContext]]:
    outbox = Outbox()
    ctx = DriverContext("gw-test", outbox.emit, previous=previous)
    driver = PanelDriver(cfg, ctx)
    task = asyncio.create_task(driver.run())
    try:
        yield driver, outbox, ctx
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drained(driver: PanelDriver) -> int:
    """The positive control that ends a quiet period: a read of the UITD's state (81, §8.3.2)
    on the same line. Its answer is handled after every frame the UITD sent before answering
    (one ordered queue for uploads and answers: ``PanelDriver._process``), so once it is back
    anything sent before it is in the outbox; and the UITD resends no upload it saw
    confirmed. Returns the records the read itself added (the UITD's own state)."""
    reply = await asyncio.wait_for(
        driver.requests.request(GbCommand.REQUEST, ApplicationData(81, (Reserved(),))), WAIT)
    return reply.records


def sim(tmp: Path, *args: str, name: str = "uitd") -> contextlib.AbstractAsyncContextManager[
        tuple[asyncio.subprocess.Process, str]]:
    """The simulator on a new pty behind the symlink ``tmp/name`` (gone when it stops)."""
    return simulator("panel", "--link", str(tmp / name), "--ledger", str(tmp / "ledger.jsonl"),
                     *args, first_line=("listening ", "dialing "))


@contextlib.asynccontextmanager
async def null_modem(tmp: Path) -> AsyncIterator[tuple[Path, Path]]:
    """Two ptys joined by socat, like a null-modem cable: the driver opens one end before the
    simulator opens the other, so no byte of the simulator's timeline is missed."""
    ends = tmp / "centre", tmp / "panel"
    proc = await asyncio.create_subprocess_exec(
        "socat", f"pty,raw,echo=0,link={ends[0]}", f"pty,raw,echo=0,link={ends[1]}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await until(lambda: ends[0].exists() and ends[1].exists(), "socat's ptys")
        yield ends
    finally:
        proc.terminate()  # by PID: the socat we started
        await proc.wait()


# -- uploads --------------------------------------------------------------------------------------

async def test_a_fire_alarm_becomes_a_fire_event_confirmed_after_it_is_stored(
        tmp_path: Path) -> None:
    script = scenario(tmp_path, """
        [[panel.events]]
        at = 1.0
        action = "fire_alarm"
        component = "smoke-3F-east"
        """, confirm_timeout=2.0)
    async with sim(tmp_path, "--scenario", script), running(config(tmp_path / "uitd")) as (
            driver, outbox, ctx):
        await until(lambda: outbox.events(SMOKE, EventType.FIRE_ALARM), "the fire alarm")
        await until(lambda: entries(tmp_path / "ledger.jsonl").get(1) == "confirmed",
                    "the simulator to see the confirm")
        (fire,) = outbox.events(SMOKE, EventType.FIRE_ALARM)
        assert fire.active and fire.priority is Priority.FIRE
        assert fire.source.description == "3F 东侧走廊"
        assert (fire.source.component_type, fire.source.component_address) == (42, 3001)
        assert fire.source_ms == FIRE_AT_MS  # the panel's own time label
        assert fire.receive_ms > FIRE_AT_MS  # the gateway clock (this machine's is later)
        assert driver.up and ctx.links.snapshot()["panel/com1"].state.value == "up"
        assert ctx.counters.get("confirm_sent") == 1 and ctx.counters.get("uploads") == 1


async def test_every_upload_is_emitted_exactly_once_through_line_faults(tmp_path: Path) -> None:
    script = scenario(tmp_path, """
        [[panel.events]]
        at = 0.0
        action = "withhold_confirm"      # our first read gets no answer: we resend it
        [[panel.events]]
        at = 0.0
        action = "duplicate_confirm"     # ... and its answer then comes twice
        [[panel.events]]
        at = 1.0
        action = "duplicate_frame"       # the fire alarm is written twice, same serial
        [[panel.events]]
        at = 1.0
        action = "fire_alarm"
        component = "smoke-3F-east"
        [[panel.events]]
        at = 1.5
        action = "garbage"               # noise on the line before the next two frames
        count = 2
        bytes = 24
        [[panel.events]]
        at = 1.5
        action = "fault"
        component = "module-pump-room"
        [[panel.events]]
        at = 2.0
        action = "bad_checksum"          # a check error: we deny it, it comes again
        [[panel.events]]
        at = 2.0
        action = "supervisory"
        component = "callpoint-3F-stairs"
        [[panel.events]]
        at = 2.5
        action = "split"                 # a frame in pieces with idle gaps
        parts = 4
        [[panel.events]]
        at = 2.5
        action = "analog"
        component = "pressure-roof"
        value = 180.0
        [[panel.events]]
        at = 3.0
        action = "silence"
        operator = 2
        [[panel.events]]
        at = 3.5
        action = "restore"
        component = "module-pump-room"
        """, confirm_timeout=1.0, retries=5)
    book = tmp_path / "ledger.jsonl"
    async with null_modem(tmp_path) as (centre, panel), running(config(centre)) as (
            driver, outbox, ctx), simulator("panel", "--port", str(panel), "--ledger", str(book),
                                            "--scenario", script):
        await until(lambda: len(entries(book)) == 6 and set(entries(book).values()) == {
            "confirmed"}, "all six uploads confirmed")
        # a late retransmission would now show up as a second record
        assert await drained(driver) == 0  # and the read found the UITD's state as reported
        components = Counter((e.source.id, e.type, e.active) for e in outbox.events()
                             if e.source.component_type is not None)
        assert components == Counter({(SMOKE, EventType.FIRE_ALARM, True): 1,
                                      (MODULE, EventType.FAULT, True): 1,
                                      (CALLPOINT, EventType.SUPERVISORY, True): 1,
                                      (MODULE, EventType.FAULT, False): 1})
        (silence,) = outbox.events(kind=EventType.OPERATION)
        assert silence.operations == ("silence",) and silence.operator == 2
        pressure = [(m.value, m.unit) for m in outbox.records if isinstance(m, Measurement)]
        assert pressure == [(180.0, "kPa")]
        # System-level events can only come from the first system read; never twice.
        system = Counter((e.type, e.active) for e in outbox.events("panel/1-1/system"))
        assert all(n == 1 for n in system.values())
        counts = ctx.counters.snapshot()
        assert counts["uploads"] == 6 and counts["duplicate"] >= 1
        assert counts["garbage"] >= 1 and counts["bad_checksum"] >= 1
        assert counts["deny_sent"] >= 1 and counts["resend"] >= 1 and counts["unmatched"] >= 1
    log = ledger(book)
    injected = {r["fault"] for r in log if r["event"] == "injected"}
    assert injected >= {"withhold_confirm", "duplicate_confirm", "duplicate_frame", "garbage",
                        "bad_checksum", "split"}
    supervisory = next(r["entry"] for r in log if r.get("action") == "supervisory")
    assert any(r["event"] == "resent" and r.get("why") == "denied" and r["entry"] == supervisory
               for r in log), "the damaged upload was denied and sent again"


async def test_emit_failure_withholds_the_confirm_and_nothing_is_lost(tmp_path: Path) -> None:
    book = tmp_path / "ledger.jsonl"
    async with sim(tmp_path, "--fire-alarm-at", "1", "--confirm-timeout", "0.5",
                   "--retries", "20"), running(config(tmp_path / "uitd")) as (driver, outbox,
                                                                              ctx):
        outbox.failing = True  # the state read at start finds nothing to record
        await until(lambda: outbox.refused >= 3, "the panel to resend while emit fails")
        assert entries(book).get(1) in ("sent", "resent")  # not confirmed
        assert ctx.counters.get("confirm_sent") == 0
        assert ctx.counters.get("emit_failed") == outbox.refused
        outbox.failing = False
        await until(lambda: entries(book).get(1) == "confirmed", "the confirm once stored")
        await drained(driver)  # (its state: not recorded at the start, while emit failed)
        assert len(outbox.events(SMOKE, EventType.FIRE_ALARM)) == 1
        assert ctx.counters.get("confirm_sent") == 1
    resent = [r for r in ledger(book) if r["event"] == "resent" and r.get("entry") == 1]
    assert len(resent) >= 3 and all(r["why"] == "no confirm" for r in resent)


async def upload(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, session: Session,
                 data: ApplicationData) -> None:
    """A scripted UITD: send one upload and wait for the driver's confirm of it."""
    serial = decode_frame(raw := session.send(GbCommand.SEND_DATA, data, 0)).serial
    writer.write(raw)
    decoder = StreamDecoder()
    async with asyncio.timeout(WAIT):
        while True:
            chunk = await reader.read(4096)
            assert chunk, "the driver closed the connection"
            if any(isinstance(f, Frame) and f.command == GbCommand.CONFIRM
                   and f.serial == serial for f in decoder.feed(chunk)):
                return


async def test_what_was_stored_before_a_reconnect_is_confirmed_not_reported_again() -> None:
    """Our confirm of an operation record is lost, then the line: the UITD dials in again,
    numbers anew (表1) and resends it under another serial. The session's memory of what was
    taken outlives the link: the copy is confirmed and counted, not reported a second time."""
    cfg = config(None, listen=("127.0.0.1", free_port()), read_state_on_connect=False)
    silence = ApplicationData(4, (FacilityOperationRecord(1, 1, FacilityOperation.SILENCE, 2,
                                                          LABEL),))
    state = ApplicationData(21, (UitdStatus(UitdState.NORMAL, LABEL),))
    uitd, centre = address_from_int(889), address_from_int(cfg.centre_address)

    async with running(cfg) as (driver, outbox, ctx):
        link = driver.link
        assert isinstance(link, TcpServerLink)
        await until(lambda: link.address is not None, "the driver to listen")
        host, port = link.address or ("", 0)
        reader, writer = await asyncio.open_connection(host, port)
        await upload(writer, reader, Session(uitd, centre, clock=lambda: LABEL), silence)
        writer.close()  # the confirm "never arrived", and the line is gone
        await until(lambda: outbox.events(LINK), "the link fault")
        reader, writer = await asyncio.open_connection(host, port)
        again = Session(uitd, centre, clock=lambda: LABEL)  # serials restart at 0
        await upload(writer, reader, again, state)
        await upload(writer, reader, again, silence)  # serial 1 now
        writer.close()
        (operation,) = outbox.events(kind=EventType.OPERATION)
        assert operation.operations == ("silence",)
        assert ctx.counters.get("duplicate") == 1 and ctx.counters.get("uploads") == 2


async def test_a_copy_that_came_while_the_first_was_refused_is_stored() -> None:
    """The UITD resends while the outbox still holds the first copy, which it then refuses: the
    copy, queued behind it, must be stored, not waved through as a duplicate. The session is
    asked about an upload when its turn comes, not when it arrived."""
    cfg = config(None, listen=("127.0.0.1", free_port()), read_state_on_connect=False)
    silence = ApplicationData(4, (FacilityOperationRecord(1, 1, FacilityOperation.SILENCE, 2,
                                                          LABEL),))
    stored: list[Record] = []
    busy, release = asyncio.Event(), asyncio.Event()
    refusals = [EmitRefused("full", "outbox full")]  # for the first copy

    async def emit(records: Sequence[Record]) -> None:
        busy.set()
        await release.wait()
        if refusals:
            raise refusals.pop()
        stored.extend(records)

    ctx = DriverContext("gw-test", emit)
    driver = PanelDriver(cfg, ctx)
    task = asyncio.create_task(driver.run())
    try:
        link = driver.link
        assert isinstance(link, TcpServerLink)
        await until(lambda: link.address is not None, "the driver to listen")
        host, port = link.address or ("", 0)
        reader, writer = await asyncio.open_connection(host, port)
        uitd, centre = address_from_int(889), address_from_int(cfg.centre_address)
        raw = Session(uitd, centre, clock=lambda: LABEL).send(GbCommand.SEND_DATA, silence, 0)
        writer.write(raw)
        await until(busy.is_set, "the first copy in the outbox")
        writer.write(raw)  # the resend, then a packet the driver counts once it has read it
        writer.write(encode_frame(Frame(1, 0x40, b"", uitd, centre, LABEL)))
        await until(lambda: ctx.counters.get("unknown_command") == 1, "the resend read")
        release.set()
        decoder, confirms = StreamDecoder(), 0
        async with asyncio.timeout(WAIT):
            while not confirms:
                confirms += sum(isinstance(f, Frame) and f.command == GbCommand.CONFIRM
                                for f in decoder.feed(await reader.read(4096)))
        assert [r.type for r in stored if isinstance(r, Event)] == [EventType.OPERATION]
        assert ctx.counters.get("emit_failed") == 1 and ctx.counters.get("uploads") == 1
        assert ctx.counters.get("duplicate") == 0
        writer.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- backlogs out of order (issue 18) --------------------------------------------------------------

async def test_a_fire_alarm_that_overtook_the_reset_in_the_backlog_is_a_record(
        tmp_path: Path) -> None:
    """The UITD cannot send while the smoke detector alarms (08:00:01), the panel is reset
    (08:00:02), the detector alarms again (08:00:03) and the panel is reset again (08:00:04).
    Then it sends its backlog fire alarms first (GB 26875.1 4.1.2.3): fire, fire, reset,
    reset. Each fire alarm is a record with its own panel time, then the restore that the read
    after the reset finds."""
    script = scenario(tmp_path, """
        [[panel.events]]
        at = 0.5
        action = "link_loss"
        duration = 4.0
        [[panel.events]]
        at = 1.0
        action = "fire_alarm"
        component = "smoke-3F-east"
        [[panel.events]]
        at = 2.0
        action = "reset"
        [[panel.events]]
        at = 3.0
        action = "fire_alarm"
        component = "smoke-3F-east"
        [[panel.events]]
        at = 4.0
        action = "reset"
        """, confirm_timeout=2.0, retries=20)
    book = tmp_path / "ledger.jsonl"
    async with null_modem(tmp_path) as (centre, panel), running(config(
            centre, read_state_on_connect=False)) as (_, outbox, _ctx), simulator(
            "panel", "--port", str(panel), "--ledger", str(book), "--scenario", script):
        await until(lambda: len(entries(book)) == 6 and set(entries(book).values()) == {
            "confirmed"} and any(not e.active for e in outbox.events(SMOKE)),
                    "the backlog confirmed and the detector read back after the reset")
        # Each read after a reset ends with the UITD's state (81), asked once the components'
        # answers are stored: nothing of the two reads is left to come.
        await until(lambda: sum(r["event"] == "answered" and r["type_mark"] == 81
                                for r in ledger(book)) >= 2, "the reads after both resets")
    sent = [r["action"] for r in ledger(book) if r["event"] == "sent"]
    assert sent == ["fire_alarm", "fire_alarm", "reset", "reset", "reset", "reset"]  # reordered
    fires = [(e.active, e.source_ms) for e in outbox.events(SMOKE, EventType.FIRE_ALARM)]
    assert fires == [(True, FIRE_AT_MS), (True, FIRE_AT_MS + 2000), (False, FIRE_AT_MS + 3000)]
    assert all(e.priority is Priority.FIRE for e in outbox.events(SMOKE, EventType.FIRE_ALARM))


async def test_a_restore_resent_behind_a_fire_alarm_after_a_reconnect_is_folded() -> None:
    """The UITD's restore of the smoke detector (08:00:02) is stored, but our confirm never
    reaches it and the line drops. The detector alarms again (08:00:03). The UITD dials in,
    numbers anew (表1), sends the fire alarm first and then the restore again, under a serial
    the session has not seen: the same report, folded (the detector is in alarm), until the
    reset clears it (08:00:04)."""
    cfg = config(None, listen=("127.0.0.1", free_port()), read_state_on_connect=False)
    uitd, centre = address_from_int(889), address_from_int(cfg.centre_address)

    def smoke(state: ComponentState, second: int) -> ApplicationData:
        return ApplicationData(2, (ComponentStatus(
            1, 1, 42, ComponentAddress.from_int(3001), ComponentState.NORMAL | state,
            "3F 东侧走廊", TimeLabel(second, 0, 8, 1, 5, 24)),))

    fire, clear = ComponentState.FIRE_ALARM, ComponentState(0)
    async with running(cfg) as (driver, outbox, ctx):
        link = driver.link
        assert isinstance(link, TcpServerLink)
        await until(lambda: link.address is not None, "the driver to listen")
        host, port = link.address or ("", 0)
        reader, writer = await asyncio.open_connection(host, port)
        first = Session(uitd, centre, clock=lambda: LABEL)
        await upload(writer, reader, first, ApplicationData(21, (UitdStatus(UitdState.NORMAL,
                                                                             LABEL),)))
        await upload(writer, reader, first, smoke(fire, 1))
        await upload(writer, reader, first, smoke(clear, 2))  # serial 2
        writer.close()  # the confirm "never arrived", and the line is gone
        await until(lambda: outbox.events(LINK), "the link fault")
        reader, writer = await asyncio.open_connection(host, port)
        again = Session(uitd, centre, clock=lambda: LABEL)  # serials restart at 0
        await upload(writer, reader, again, smoke(fire, 3))
        await upload(writer, reader, again, smoke(clear, 2))  # serial 1: new to the session
        await upload(writer, reader, again, smoke(clear, 4))
        writer.close()
    fires = [(e.active, e.source_ms) for e in outbox.events(SMOKE, EventType.FIRE_ALARM)]
    assert fires == [(True, FIRE_AT_MS), (False, FIRE_AT_MS + 1000), (True, FIRE_AT_MS + 2000),
                     (False, FIRE_AT_MS + 3000)]
    assert ctx.counters.get("duplicate") == 0 and ctx.counters.get("uploads") == 6


def driver_up(ctx: DriverContext) -> bool:
    link = ctx.links.get("panel/com1")
    return link is not None and link.state.value == "up"


# -- state reads, clock, check-post, commands -----------------------------------------------------

async def test_state_read_at_start_clock_sync_check_post_and_commands(tmp_path: Path) -> None:
    book = tmp_path / "ledger.jsonl"
    cfg = config(tmp_path / "uitd", clock_sync_interval_s=3600, systems=((1, 1), (99, 9)),
                 components=(ComponentKey(1, 1, 3001),), timezone=None)
    async with sim(tmp_path, "--check-post-answer", "1"), running(cfg) as (driver, outbox, _):
        def answered(mark: int) -> bool:
            return any(r["event"] == "answered" and r["type_mark"] == mark for r in ledger(book))

        await until(lambda: answered(61) and answered(62) and answered(81),
                    "the state read at start (61, 62, 81)")
        await until(lambda: any(r["event"] == "clock_synced" for r in ledger(book)),
                    "the clock sync on connect")
        handlers = driver.commands()

        result = await handlers[CommandName.READ_PANEL_STATE](
            Command("c1", CommandName.READ_PANEL_STATE, 0, args={"panel": "panel/1-1"}))
        assert result == {"panel": "panel/com1", "systems": 1, "components": 1, "uitd": 0,
                          "records": 0}
        everything = await handlers[CommandName.READ_PANEL_STATE](
            Command("c2", CommandName.READ_PANEL_STATE, 0))
        # 99-9 is asked for with 1-1 in one 61: the panel answers what it knows.
        assert everything == {"panel": "panel/com1", "systems": 1, "components": 1, "uitd": 1,
                              "records": 0}

        with pytest.raises(CommandError, match="denied"):
            await handlers[CommandName.READ_PANEL_STATE](
                Command("c3", CommandName.READ_PANEL_STATE, 0, args={"panel": "panel/99-9"}))
        with pytest.raises(CommandError, match="nothing matches"):
            await handlers[CommandName.READ_PANEL_STATE](
                Command("c4", CommandName.READ_PANEL_STATE, 0, args={"panel": "panel/7-7"}))
        with pytest.raises(CommandError, match="unknown argument 'zone'"):
            await handlers[CommandName.READ_PANEL_STATE](
                Command("c5", CommandName.READ_PANEL_STATE, 0, args={"zone": "x"}))

        when = datetime(2025, 1, 2, 3, 4, 5)  # local time of this gateway (timezone unset)
        synced = await handlers[CommandName.SYNC_CLOCK](
            Command("c6", CommandName.SYNC_CLOCK, int(when.timestamp() * 1000)))
        assert synced == {"panel": "panel/com1", "time": "2025-01-02T03:04:05"}
        assert any(r["event"] == "clock_synced" and r["to"] == "2025-01-02 03:04:05"
                   for r in ledger(book))
        with pytest.raises(CommandError, match="clock not set"):  # no two-digit year for it
            await handlers[CommandName.SYNC_CLOCK](Command(
                "c6b", CommandName.SYNC_CLOCK, int(datetime(2150, 1, 1).timestamp() * 1000)))

        sent = await handlers[CommandName.CHECK_POST](
            Command("c7", CommandName.CHECK_POST, 0, args={"timeout_s": 90}))
        assert sent["sent"] is True and sent["timeout_minutes"] == 2
        await until(lambda: outbox.events(kind=EventType.CHECK_POST), "the check-post answer")
        (answer,) = outbox.events(kind=EventType.CHECK_POST)
        assert answer.source.id == "panel/com1/uitd" and answer.operator == 1
        with pytest.raises(CommandError, match="timeout_s"):
            await handlers[CommandName.CHECK_POST](
                Command("c8", CommandName.CHECK_POST, 0, args={"timeout_s": 0}))
    check = [r for r in ledger(book) if r["event"] == "check_post"]
    assert check and check[0]["timeout_minutes"] == 2


# -- the link watchdog ----------------------------------------------------------------------------

async def test_port_removed_is_one_link_fault_and_restored_clears_it_and_rereads(
        tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first = contextlib.AsyncExitStack()
        await first.enter_async_context(sim(tmp_path, "--fire-alarm-at", "0.3",
                                            "--confirm-timeout", "1"))
        driver, outbox, ctx = await stack.enter_async_context(running(config(tmp_path / "uitd")))
        await until(lambda: outbox.events(SMOKE, EventType.FIRE_ALARM), "the fire alarm")
        assert not outbox.events(LINK)
        await first.aclose()  # the simulator stops: its pty closes, the --link symlink goes
        await until(lambda: outbox.events(LINK), "the link fault")
        await until(lambda: ctx.counters.get("reopen") >= 3, "reopen attempts")
        assert len(outbox.events(LINK)) == 1 and not driver.up and not driver_up(ctx)
        assert "uitd" in (ctx.links.get("panel/com1").detail or "")  # type: ignore[union-attr]
        with pytest.raises(CommandError, match="link down"):
            await driver.commands()[CommandName.CHECK_POST](
                Command("c1", CommandName.CHECK_POST, 0))
        async with sim(tmp_path):  # a new panel behind the same device name
            await until(lambda: len(outbox.events(LINK)) == 2, "the link fault to clear")
            # The state read after the reconnect finds the smoke detector normal again.
            await until(lambda: len(outbox.events(SMOKE, EventType.FIRE_ALARM)) == 2,
                        "the fire alarm restore from the re-read")
            assert driver.up and driver_up(ctx)
            raise_, clear = outbox.events(LINK)
            assert (raise_.active, clear.active) == (True, False)
            assert raise_.priority is Priority.ALARM and raise_.source.bus.value == "gb26875"
            assert not outbox.events(SMOKE, EventType.FIRE_ALARM)[1].active
            assert ctx.counters.get("link_lost") == 1 and ctx.counters.get("open_failed") >= 3


async def test_a_silent_panel_is_one_link_fault_until_it_talks_again(tmp_path: Path) -> None:
    script = scenario(tmp_path, """
        [[panel.events]]
        at = 1.0
        action = "link_loss"           # the UITD neither sends nor answers for 5 s
        duration = 5.0
        [[panel.events]]
        at = 2.0
        action = "fire_alarm"          # queued during the loss, delivered afterwards
        component = "smoke-3F-east"
        """, confirm_timeout=1.0, retries=20)
    cfg = config(tmp_path / "uitd", silence_timeout_s=2.0, probe_after_s=0.5)
    async with sim(tmp_path, "--scenario", script), running(cfg) as (driver, outbox, ctx):
        await until(lambda: outbox.events(LINK), "the link fault")
        (fault,) = outbox.events(LINK)
        assert fault.active and "no valid frame" in (fault.detail or "")
        await until(lambda: len(outbox.events(LINK)) == 2, "the fault to clear")
        await until(lambda: outbox.events(SMOKE, EventType.FIRE_ALARM), "the queued fire alarm")
        assert [e.active for e in outbox.events(LINK)] == [True, False]
        # The probes (81) went unanswered and were dropped with the link; it was reopened.
        assert ctx.counters.get("reopen") >= 1 and ctx.counters.get("link_reset") >= 1
        assert driver.up


# -- after a restart -----------------------------------------------------------------------------

async def test_after_a_restart_what_cleared_is_restored_once_and_reads_raise_nothing(
        tmp_path: Path) -> None:
    """The agent stopped with these raised; meanwhile the smoke detector's fire alarm (and so
    the system's) cleared and the line came back; the pump-room module's fault still holds.
    The reads at start raise nothing that is still raised; the UITD's upload of the module's
    fault is recorded with its own panel time (the time label of the raise before the restart
    is not known: a repeat, never a loss)."""
    system, centre_link = "panel/1-1/system", "panel/com1/uitd/centre_link"
    previous = frozenset({(SMOKE, "fire_alarm"), (MODULE, "fault"), (system, "fire_alarm"),
                          (system, "fault"), (LINK, "link_fault"), (centre_link, "link_fault")})
    script = scenario(tmp_path, """
        [[panel.events]]
        at = 0.0
        action = "fault"
        component = "module-pump-room"
        """, confirm_timeout=1.0, retries=10)
    book = tmp_path / "ledger.jsonl"
    async with running(config(tmp_path / "uitd"), previous) as (driver, outbox, ctx):
        # No port yet: the link fault raised before the restart is not raised a second time.
        await until(lambda: ctx.counters.get("open_failed") >= 2, "failed opens")
        assert outbox.records == [] and not driver.up
        async with sim(tmp_path, "--scenario", script):
            await until(lambda: len([e for e in outbox.events() if not e.active]) >= 4,
                        "the four restores")
            await until(lambda: entries(book).get(1) == "confirmed", "the fault upload stored")
            # a second restore or a late raise would show up now
            assert await drained(driver) == 0
            seen = Counter((e.source.id, e.type, e.active) for e in outbox.events())
            answered = {r["type_mark"]: r["count"] for r in ledger(book)
                        if r["event"] == "answered"}
    assert seen == Counter({(SMOKE, EventType.FIRE_ALARM, False): 1,
                            (system, EventType.FIRE_ALARM, False): 1,
                            (LINK, EventType.LINK_FAULT, False): 1,
                            (centre_link, EventType.LINK_FAULT, False): 1,
                            (MODULE, EventType.FAULT, True): 1})
    (fault,) = outbox.events(MODULE, EventType.FAULT)
    assert fault.source_ms == FIRE_AT_MS - 1000  # the upload's time label (08:00:00)
    # Both components of the previous conditions were read (62), never seen since the start;
    # the system too (61), though no system was configured or uploaded.
    assert answered == {61: 1, 62: 2, 81: 1}
    assert ctx.counters.get("uploads") >= 1


# -- other transports and dialects ----------------------------------------------------------------

async def test_tcp_client_to_a_listening_uitd_with_a_dialect(tmp_path: Path) -> None:
    script = scenario(tmp_path, """
        [[panel.events]]
        at = 0.5
        action = "fault"
        component = "module-pump-room"
        """, keepalive_interval=0.3, profile="dahua")
    async with sim(tmp_path, "--tcp-listen", "127.0.0.1:0", "--scenario", script) as (_, addr):
        host, _, port = addr.rpartition(":")
        cfg = config(None, connect=(host, int(port)), profile="dahua")
        async with running(cfg) as (_, outbox, ctx):
            await until(lambda: outbox.events(MODULE, EventType.FAULT), "the fault over TCP")
            await until(lambda: ctx.counters.get("keepalive") >= 1, "a keep-alive confirmed")
            assert ctx.counters.get("unknown_command") == 0


async def test_tcp_server_the_uitd_dials_in_hikvision_dialect(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(None, listen=("127.0.0.1", port), profile="hikvision")
    async with running(cfg) as (_, outbox, ctx):
        async with sim(tmp_path, "--tcp-connect", f"127.0.0.1:{port}", "--profile", "hikvision",
                       "--fire-alarm-at", "0.5"):
            await until(lambda: outbox.events(SMOKE, EventType.FIRE_ALARM), "the fire alarm")
            await until(lambda: entries(tmp_path / "ledger.jsonl").get(1) == "confirmed",
                        "the confirm over TCP")
            assert driver_up(ctx)
        assert ctx.counters.get("bad_checksum") == 0


async def test_tcp_server_link_the_newest_connection_wins_without_a_fault() -> None:
    link = TcpServerLink("127.0.0.1", 0)
    await link.listen()
    assert link.address is not None
    host, port = link.address
    try:
        _, first = await asyncio.open_connection(host, port)
        async with asyncio.timeout(WAIT):
            await link.open()
        first.write(b"@@")
        assert await link.read() == b"@@"
        second_reader, second = await asyncio.open_connection(host, port)
        with pytest.raises(LinkClosed) as info:  # a UITD that reconnects is no line fault
            async with asyncio.timeout(WAIT):
                await link.read()
        assert info.value.fault is False
        await link.close()
        async with asyncio.timeout(WAIT):
            await link.open()  # the waiting connection, at once
        await link.write(b"##")
        assert await asyncio.wait_for(second_reader.readexactly(2), WAIT) == b"##"
        second.close()
        with pytest.raises(LinkClosed) as info:  # the UITD hung up: that is a fault
            async with asyncio.timeout(WAIT):
                await link.read()
        assert info.value.fault is True
        first.close()
    finally:
        await link.shutdown()


async def test_a_panel_reset_reads_back_the_alarms_it_cleared(tmp_path: Path) -> None:
    """Many panels answer a reset (复位) with the operation record and a system state, not a
    new state per component: the driver reads back what it holds in alarm and restores it."""
    script = scenario(tmp_path, """
        [[panel.events]]
        at = 1.0
        action = "fire_alarm"
        component = "smoke-3F-east"

        [[panel.events]]
        at = 3.0
        action = "reset"
        """, confirm_timeout=2.0)
    async with sim(tmp_path, "--scenario", script), running(config(tmp_path / "uitd")) as (
            _driver, outbox, _ctx):
        await until(lambda: [e.active for e in outbox.events(SMOKE, EventType.FIRE_ALARM)]
                    == [True, False], "the fire alarm raised, then restored by the reset")
        resets = [e for e in outbox.records if isinstance(e, Event)
                  and (e.type is EventType.RESET or "reset" in e.operations)]
        assert resets  # the reset itself is reported too
        reads = [r for r in ledger(tmp_path / "ledger.jsonl")
                 if r.get("event") == "answered" and r.get("type_mark") == 62]
        assert reads  # the component was read back after the reset
