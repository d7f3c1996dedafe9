"""edge/drivers/panel.py's confirm path at unit level, for the mutation run (issue 19): records
first, then the confirm (GB/T 26875.3 图3); a check error or unreadable data is denied; a resend
is stored once and confirmed again; the answers to the driver's own reads are stored before the
read returns.

Every part is real. The line is a pty (the panel simulator's ``PtyTransport``, in this
process): the driver opens its slave through pyserial like a USB adapter, the test plays the
UITD on the master side with the real codec (``protocols.gb26875``: ``Session`` builds the
UITD's packets, ``StreamDecoder`` reads the driver's). Records go through the agent's
``Pipeline`` into an ``Outbox`` on a temporary directory, and are read back from the file by a
second SQLite connection. A failed store is made the SQLite way, by another connection as
another process would: a trigger that aborts every insert into the outbox (``refusing``), or
the write lock held (``holding``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.config.panel import PanelConfig
from edge.drivers.base import DriverContext
from edge.drivers.panel import PanelDriver, RequestFailed
from edge.drivers.panel_requests import Reply
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.rules import RuleEngine
from edge.state import StateWriter
from protocols.gb26875 import (
    ApplicationData,
    Command,
    ComponentAddress,
    ComponentRef,
    ComponentState,
    ComponentStatus,
    DecodeError,
    FacilityOperation,
    FacilityOperationRecord,
    Frame,
    RawApplicationData,
    Reserved,
    Session,
    StreamDecoder,
    SystemState,
    SystemStatus,
    TimeLabel,
    UitdState,
    UitdStatus,
    address_from_int,
    decode_frame,
    encode_frame,
    get_profile,
)
from protocols.wire import (
    Event,
    EventType,
    Record,
    decode_batch,
    encode_batch_from_encoded,
)
from simulators.panel.link import Connection, PtyTransport

from .helpers import config as outbox_config
from .helpers import measurement

WAIT = 10.0  # a bound on a hang, never a speed assertion (the group's timeout is 15 s)
UITD_AT, CENTRE_AT = 889, 7
UITD, CENTRE = address_from_int(UITD_AT), address_from_int(CENTRE_AT)
LABEL = TimeLabel(0, 0, 8, 1, 5, 24)  # 2024-05-01 08:00:00, the frames' time label
LABEL_MS = 1_714_521_600_000  # ... in Asia/Shanghai
NOW_MS = 1_800_000_000_000  # the gateway's clock (DriverContext.now_ms): every receive_ms
NO_TIME = TimeLabel(0, 0, 0, 0, 0, 0)  # an object time label that is no date: the frame's counts
SMOKE = "panel/1-1/42-0x00000bb9"
MAX_SAFE_INT = 2**53 - 1  # the largest time a wire record carries (protocols.wire check_ms)
UITD_ID = "panel/com1/uitd"


def smoke(state: ComponentState, label: TimeLabel = LABEL) -> ApplicationData:
    return ApplicationData(2, (ComponentStatus(1, 1, 42, ComponentAddress.from_int(3001),
                                               ComponentState.NORMAL | state, "3F 东侧走廊",
                                               label),))


def uitd_state(state: UitdState, label: TimeLabel = LABEL) -> ApplicationData:
    return ApplicationData(21, (UitdStatus(UitdState.NORMAL | state, label),))


def operation(flags: FacilityOperation) -> ApplicationData:
    return ApplicationData(4, (FacilityOperationRecord(1, 1, flags, 2, LABEL),))


UNREADABLE = bytes([2, 1, 1, 2, 3, 4, 5])  # type 2, one object, 5 bytes of its 46
UNREADABLE_DETAIL = "1 objects of 46 bytes need 48 bytes, ADU has 7"


class Uitd:
    """The UITD's end of the pty: writes its packets, reads the driver's frames in order."""

    def __init__(self, conn: Connection, profile: str = "standard") -> None:
        self.conn = conn
        self.session = Session(UITD, CENTRE, get_profile(profile), clock=lambda: LABEL)
        self._decoder = StreamDecoder()
        self._heard: list[Frame | DecodeError] = []
        self._marker = 0x7000  # serials apart from the session's
        self._raw = 0x6000

    async def write(self, raw: bytes) -> None:
        await self.conn.write(raw)

    def packet(self, adu: bytes | ApplicationData) -> bytes:
        """An upload (command 2) under the next serial, not yet written."""
        if isinstance(adu, bytes):  # an intact frame around bytes the codec would not make
            self._raw += 1
            return encode_frame(Frame(self._raw, Command.SEND_DATA, adu, UITD, CENTRE, LABEL))
        return self.session.send(Command.SEND_DATA, adu, 0)

    async def upload(self, adu: bytes | ApplicationData) -> bytes:
        raw = self.packet(adu)
        await self.write(raw)
        return raw

    async def frame(self) -> Frame:
        """The driver's next frame."""
        async with asyncio.timeout(WAIT):
            while not self._heard:
                data = await self.conn.read()
                assert data, "the line closed"
                self._heard.extend(self._decoder.feed(data))
        item = self._heard.pop(0)
        assert isinstance(item, Frame), item
        return item

    async def reply(self, command: int, serial: int) -> Frame:
        """The driver's next frame, which must be ``command`` to packet ``serial``."""
        f = await self.frame()
        assert (f.command, f.serial) == (command, serial)
        assert (f.source, f.destination) == (CENTRE, UITD)
        return f

    async def marker(self) -> list[Frame]:
        """The positive control that ends a quiet period: a packet of no known command (0x40),
        which the driver denies as soon as it reads it, whatever is being stored. Returns the
        frames the driver wrote before that deny."""
        self._marker += 1
        await self.write(encode_frame(Frame(self._marker, 0x40, b"", UITD, CENTRE, LABEL)))
        before: list[Frame] = []
        while (f := await self.frame()).serial != self._marker or f.command != Command.DENY:
            before.append(f)
        return before

    async def answer(self, adu: ApplicationData | RawApplicationData, mark: int = 81) -> Frame:
        """Answer the driver's next frame, a read (command 4) of ``mark``."""
        f = await self.frame()
        assert (f.command, f.adu[:1]) == (Command.REQUEST, bytes([mark]))
        await self.write(self.session.respond(f, adu))
        return f

    async def answer_raw(self, adu: bytes, mark: int = 81) -> None:
        f = await self.frame()
        assert (f.command, f.adu[:1]) == (Command.REQUEST, bytes([mark]))
        await self.write(encode_frame(Frame(f.serial, Command.RESPONSE, adu, UITD, CENTRE,
                                            LABEL)))


def serial_of(raw: bytes) -> int:
    return decode_frame(raw).serial


@dataclass
class Rig:
    driver: PanelDriver
    ctx: DriverContext
    outbox: Outbox
    db: Path
    transport: PtyTransport
    uitd: Uitd
    clock: list[int] = field(default_factory=lambda: [NOW_MS])

    @property
    def counts(self) -> dict[str, int]:
        return self.ctx.counters.snapshot()

    def stored(self) -> list[Record]:
        """Every record in the outbox file, read by a connection of its own."""
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            rows = [bytes(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY seq")]
        if not rows:
            return []
        return list(decode_batch(encode_batch_from_encoded("gw-test", None, NOW_MS, rows,
                                                           epoch=self.outbox.epoch)).records)

    def events(self) -> list[tuple[str, EventType, bool]]:
        return [(r.source.id, r.type, r.active) for r in self.stored() if isinstance(r, Event)]

    @contextlib.contextmanager
    def refusing(self) -> Iterator[None]:
        """Every insert into the outbox fails while inside (the outbox raises, the pipeline
        turns it into ``EmitRefused``: nothing of that call is stored)."""
        with contextlib.closing(sqlite3.connect(self.db, isolation_level=None)) as db:
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox "
                       "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
            try:
                yield
            finally:
                db.execute("DROP TRIGGER refuse")

    @contextlib.asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """The outbox's write lock held by another connection, with the outbox's committer
        waiting for it in the middle of another source's commit (a reading, submitted as a
        Modbus poll would be): what is appended meanwhile stays queued
        (``Outbox.queued_records``) until the block is left. The outbox's busy timeout is
        longer than any test."""
        with contextlib.closing(sqlite3.connect(self.db, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            blocker = await self.outbox.submit([measurement(1)])
            try:
                await until(lambda: self.outbox.queued_records == 0,
                            "the committer waiting for the lock")
                assert not blocker.done()
                yield
            finally:
                db.execute("ROLLBACK")
        assert [r.seq for r in await asyncio.wait_for(blocker, WAIT)] == [1]

    async def request(self, adu: ApplicationData) -> Reply:
        """A read (command 4) of the driver's own, as its state reads send them."""
        return await asyncio.wait_for(self.driver.requests.request(Command.REQUEST, adu), WAIT)


async def until(predicate: Callable[[], object], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def line(path: Path, profile: str = "standard") -> AsyncIterator[tuple[PtyTransport,
                                                                             Uitd]]:
    """A new pty behind the symlink ``path`` (gone, with the pty, when the block is left)."""
    transport = PtyTransport(path)
    await transport.start()
    connections = transport.connections()
    assert isinstance(connections, AsyncGenerator)
    try:
        yield transport, Uitd(await anext(connections), profile)
    finally:
        await transport.stop()
        await connections.aclose()


@contextlib.asynccontextmanager
async def rig(tmp: Path, profile: str = "standard") -> AsyncIterator[Rig]:
    """The driver on a pty, with the pipeline and outbox behind it; its state read at connect
    (81) answered: the UITD normal, nothing to record. ``profile``: both ends' dialect."""
    state = StateWriter(tmp / "state.db")
    cfg = PanelConfig(name="com1", port=str(tmp / "uitd"), silence_timeout_s=60,
                      probe_after_s=0, request_timeout_s=10.0, clock_sync_interval_s=0,
                      reopen_min_s=0.05, reopen_max_s=0.2, timezone="Asia/Shanghai",
                      centre_address=CENTRE_AT, uitd_address=UITD_AT, systems=(),
                      profile=profile)
    try:
        box = outbox_config(tmp, busy_timeout_ms=60_000, submit_window_s=0.0,
                             reserve_bytes=0)
        async with Outbox(box) as outbox, line(tmp / "uitd", profile) as (transport, uitd):
            pipeline = Pipeline(outbox, RuleEngine([]), state)
            clock = [NOW_MS]
            ctx = DriverContext("gw-test", pipeline.emit, now_ms=lambda: clock[0])
            driver = PanelDriver(cfg, ctx)
            task = asyncio.create_task(driver.run())
            try:
                r = Rig(driver, ctx, outbox, outbox.config.path, transport, uitd, clock)
                await uitd.answer(uitd_state(UitdState(0)))  # the first frame: port open
                yield r
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        state.close()


# -- uploads: records first, then the confirm -----------------------------------------------------

async def test_an_upload_is_confirmed_once_its_records_are_in_the_outbox_file(
        tmp_path: Path) -> None:
    callpoint = ComponentStatus(1, 1, 23, ComponentAddress.from_int(3010),
                                ComponentState.NORMAL | ComponentState.FIRE_ALARM, "", LABEL)
    two = ApplicationData(2, (*smoke(ComponentState.FIRE_ALARM).objects, callpoint))
    async with rig(tmp_path) as r:
        raw = await r.uitd.upload(two)
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        stored = r.stored()  # read when the confirm arrived
        assert [(e.source.id, e.type, e.active) for e in stored if isinstance(e, Event)] == [
            (SMOKE, EventType.FIRE_ALARM, True),
            ("panel/1-1/23-0x00000bc2", EventType.FIRE_ALARM, True)]
        assert [(e.receive_ms, e.source_ms) for e in stored] == [(NOW_MS, LABEL_MS)] * 2
        assert r.counts == {"uploads": 1, "records": 2, "confirm_sent": 1}


async def test_an_object_without_a_valid_time_label_takes_the_frames(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        raw = await r.uitd.upload(smoke(ComponentState.FAULT, NO_TIME))
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        (fault,) = r.stored()
        assert (fault.source.id, fault.source_ms) == (SMOKE, LABEL_MS)


async def test_no_confirm_is_written_while_the_outbox_holds_the_records(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        async with r.holding():
            raw = await r.uitd.upload(smoke(ComponentState.FIRE_ALARM))
            await until(lambda: r.outbox.queued_records == 1, "the records handed to the outbox")
            assert await r.uitd.marker() == []  # the line is live; no confirm before the deny
            assert r.stored() == [] and "confirm_sent" not in r.counts
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        assert r.events() == [(SMOKE, EventType.FIRE_ALARM, True)]
        assert r.counts["confirm_sent"] == 1


async def test_an_upload_with_nothing_to_record_stores_nothing_and_is_confirmed(
        tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        raw = await r.uitd.upload(uitd_state(UitdState(0)))  # as the state read found it
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        assert r.stored() == []
        assert r.counts == {"uploads": 1, "confirm_sent": 1}  # no "records": nothing stored


async def test_no_confirm_when_the_outbox_refuses_and_the_resend_is_stored(
        tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        with r.refusing():
            raw = await r.uitd.upload(smoke(ComponentState.FIRE_ALARM))
            await until(lambda: r.counts.get("emit_failed") == 1, "the refusal")
            assert await r.uitd.marker() == []  # no confirm, no deny: the UITD will resend
            assert r.stored() == []
        await r.uitd.write(raw)  # the UITD's resend (§6.5.4), once its timeout passed
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        assert r.events() == [(SMOKE, EventType.FIRE_ALARM, True)]
        assert r.counts == {"emit_failed": 1, "uploads": 1, "records": 1, "confirm_sent": 1,
                            "unknown_command": 1}


async def test_a_resent_upload_is_stored_once_and_confirmed_again(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        raw = await r.uitd.upload(operation(FacilityOperation.SILENCE))
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        await r.uitd.write(raw)  # our confirm "was lost": the same packet again
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        assert r.events() == [("panel/1-1/system", EventType.OPERATION, True)]
        assert r.counts == {"uploads": 1, "records": 1, "confirm_sent": 2, "duplicate": 1}


async def test_a_confirm_lost_with_the_line_is_counted_and_the_resend_is_stored_once(
        tmp_path: Path) -> None:
    """The port vanishes while the records are being stored: the confirm cannot be written.
    On the new line the UITD resends; it is a copy of what was stored, confirmed, not stored
    again."""
    async with rig(tmp_path) as r:
        async with r.holding():
            raw = await r.uitd.upload(operation(FacilityOperation.SILENCE))
            await until(lambda: r.outbox.queued_records == 1, "the records handed to the outbox")
            await r.transport.stop()  # the pty is gone, and its symlink
            await until(lambda: r.counts.get("link_lost") == 1, "the line lost")
        await until(lambda: r.counts.get("confirm_lost") == 1, "the confirm lost")
        assert "confirm_sent" in r.counts  # it was tried: the records were stored
        assert r.events()[0] == ("panel/1-1/system", EventType.OPERATION, True)
        async with line(tmp_path / "uitd") as (_, uitd):
            uitd.session = r.uitd.session
            # the state read on the new line: the system the operation came from, the UITD
            await uitd.answer(ApplicationData(1, (SystemStatus(1, 1, SystemState.NORMAL,
                                                               LABEL),)), mark=61)
            await uitd.answer(uitd_state(UitdState(0)))
            await uitd.write(raw)
            await uitd.reply(Command.CONFIRM, serial_of(raw))
            ops = [e for e in r.events() if e[1] is EventType.OPERATION]
            assert ops == [("panel/1-1/system", EventType.OPERATION, True)]
            assert r.counts["duplicate"] == 1 and r.counts["uploads"] == 1


async def test_a_reset_is_read_back_and_a_silence_is_not(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        raw = await r.uitd.upload(operation(FacilityOperation.SILENCE))
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        assert await r.uitd.marker() == []  # no read after a silence
        raw = await r.uitd.upload(operation(FacilityOperation.RESET))
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        read = await r.uitd.frame()  # the system the reset came from, read back (61)
        assert (read.command, read.adu[:1]) == (Command.REQUEST, bytes([61]))
        # ... by a task of the driver's that a task dump names (it waits for the answer)
        assert "panel/com1/reset-read" in {t.get_name() for t in asyncio.all_tasks()}


# -- what is denied -------------------------------------------------------------------------------

async def test_a_frame_that_fails_its_check_is_denied_and_its_resend_stored(
        tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        raw = r.uitd.packet(smoke(ComponentState.FIRE_ALARM))
        damaged = raw[:-3] + bytes([raw[-3] ^ 0xFF]) + raw[-2:]  # the checksum byte
        await r.uitd.write(damaged)
        await r.uitd.reply(Command.DENY, serial_of(raw))
        assert r.stored() == []
        await r.uitd.write(raw)  # sent again after the deny (§6.5.3)
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        assert r.events() == [(SMOKE, EventType.FIRE_ALARM, True)]
        assert r.counts == {"bad_checksum": 1, "deny_sent": 1, "uploads": 1, "records": 1,
                            "confirm_sent": 1}


async def test_unreadable_data_is_denied_and_reported_once(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        raw = await r.uitd.upload(UNREADABLE)
        await r.uitd.reply(Command.DENY, serial_of(raw))
        (error,) = r.stored()
        assert isinstance(error, Event)
        assert (error.source.id, error.type, error.active) == (
            UITD_ID, EventType.DEVICE_ERROR, True)
        assert error.source.description == "用户信息传输装置 com1"
        assert error.detail == f"undecodable upload, type 02: {UNREADABLE_DETAIL}"
        assert (error.receive_ms, error.source_ms) == (NOW_MS, None)
        await r.uitd.write(raw)  # the UITD tries again: denied again, not reported again
        await r.uitd.reply(Command.DENY, serial_of(raw))
        assert len(r.stored()) == 1
        assert r.counts == {"object_size_mismatch": 2, "records": 1, "deny_sent": 2}


async def test_unreadable_data_the_outbox_refused_is_reported_with_its_resend(
        tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        with r.refusing():
            raw = await r.uitd.upload(UNREADABLE)
            await r.uitd.reply(Command.DENY, serial_of(raw))
            assert r.stored() == []
        await r.uitd.write(raw)
        await r.uitd.reply(Command.DENY, serial_of(raw))
        assert [(e.source.id, e.type) for e in r.stored() if isinstance(e, Event)] == [
            (UITD_ID, EventType.DEVICE_ERROR)]
        assert r.counts == {"object_size_mismatch": 2, "emit_failed": 1, "records": 1,
                            "deny_sent": 2}


async def test_a_dialects_unreadable_data_is_told_in_its_own_terms(tmp_path: Path) -> None:
    """A UITD that leaves the time labels out (``no-time-labels``): the data it sends is read
    with its dialect, so what fails to fit is reported in the dialect's object sizes (40 bytes
    for a component state, 1 for a UITD state), not the standard's (46, 7)."""
    async with rig(tmp_path, "no-time-labels") as r:
        raw = await r.uitd.upload(UNREADABLE)
        await r.uitd.reply(Command.DENY, serial_of(raw))
        (error,) = r.stored()
        assert isinstance(error, Event) and error.detail == (
            "undecodable upload, type 02: 1 objects of 40 bytes need 42 bytes, ADU has 7")
        read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
        await r.uitd.answer_raw(bytes([21, 2, 1]))
        with pytest.raises(RequestFailed) as info:
            await read
        assert str(info.value) == ("unreadable answer: 2 objects of 1 bytes need 4 bytes, "
                                   "ADU has 3")


async def test_a_value_no_record_can_carry_is_denied_each_time_until_it_can(
        tmp_path: Path) -> None:
    """The gateway's clock reads past what the wire carries (2**53 ms): the records cannot be
    made. Denied and counted, each copy; once the clock is right, the next copy is stored."""
    async with rig(tmp_path) as r:
        r.clock[0] = MAX_SAFE_INT + 1
        raw = await r.uitd.upload(smoke(ComponentState.FIRE_ALARM))
        await r.uitd.reply(Command.DENY, serial_of(raw))
        await r.uitd.write(raw)
        await r.uitd.reply(Command.DENY, serial_of(raw))
        assert r.stored() == []
        assert r.counts == {"unmappable": 2, "deny_sent": 2}
        r.clock[0] = NOW_MS
        await r.uitd.write(raw)
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        assert r.events() == [(SMOKE, EventType.FIRE_ALARM, True)]
        assert r.counts["uploads"] == 1 and "duplicate" not in r.counts


# -- answers to the driver's own reads ------------------------------------------------------------

async def test_an_answer_is_stored_before_the_read_returns(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
        await r.uitd.answer(uitd_state(UitdState.MAINS_POWER_FAULT, NO_TIME))
        reply = await read
        assert (reply.objects, reply.records) == (1, 1)
        assert reply.frame.command == Command.RESPONSE
        (fault,) = r.stored()  # read when the read returned
        assert (fault.source.id, fault.receive_ms, fault.source_ms) == (UITD_ID, NOW_MS,
                                                                         LABEL_MS)
        assert isinstance(fault, Event) and fault.type is EventType.MAINS_POWER_FAULT
        assert r.counts == {"records": 1}


async def test_an_answer_says_what_holds_and_raises_nothing_again(tmp_path: Path) -> None:
    """The smoke detector's fire alarm was uploaded; a read of it finds it still in alarm,
    under a later time label: an answer says what holds, it is no new alarm."""
    later = TimeLabel(30, 0, 8, 1, 5, 24)
    async with rig(tmp_path) as r:
        raw = await r.uitd.upload(smoke(ComponentState.FIRE_ALARM))
        await r.uitd.reply(Command.CONFIRM, serial_of(raw))
        read = asyncio.create_task(r.request(ApplicationData(62, (ComponentRef(
            1, 1, ComponentAddress.from_int(3001)),))))
        await r.uitd.answer(smoke(ComponentState.FIRE_ALARM, later), mark=62)
        assert ((await read).objects, (await read).records) == (1, 0)
        assert r.events() == [(SMOKE, EventType.FIRE_ALARM, True)]


async def test_an_answer_with_nothing_to_record_stores_nothing(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
        await r.uitd.answer(uitd_state(UitdState(0)))
        assert ((await read).objects, (await read).records) == (1, 0)
        assert r.stored() == [] and r.counts == {}  # no "records" counted


async def test_an_answer_of_no_known_type_has_no_objects(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
        await r.uitd.answer(RawApplicationData(200, 1, b"xy"))
        assert ((await read).objects, (await read).records) == (0, 0)
        assert r.stored() == []


async def test_an_unreadable_answer_fails_the_read(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
        await r.uitd.answer_raw(bytes([21, 2, 1]))  # type 21, two objects, one byte
        with pytest.raises(RequestFailed) as info:
            await read
        assert str(info.value) == ("unreadable answer: 2 objects of 7 bytes need 16 bytes, "
                                   "ADU has 3")
        assert r.counts == {"object_size_mismatch": 1} and r.stored() == []


async def test_an_answer_no_record_can_carry_fails_the_read(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.clock[0] = MAX_SAFE_INT + 1
        read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
        await r.uitd.answer(uitd_state(UitdState.MAINS_POWER_FAULT))
        with pytest.raises(RequestFailed, match=r"^answer not recordable: .*rt") as info:
            await read
        assert str(MAX_SAFE_INT + 1) in str(info.value)
        assert r.counts == {"unmappable": 1} and r.stored() == []


async def test_an_answer_the_outbox_refuses_fails_the_read_and_is_recorded_later(
        tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        with r.refusing():
            read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
            await r.uitd.answer(uitd_state(UitdState.MAINS_POWER_FAULT))
            with pytest.raises(RequestFailed) as info:
                await read
            assert str(info.value) == "records could not be stored"
            assert r.counts == {"emit_failed": 1} and r.stored() == []
        # Not taken as known: the next read of the same state records the fault.
        read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
        await r.uitd.answer(uitd_state(UitdState.MAINS_POWER_FAULT))
        assert (await read).records == 1
        assert r.events() == [(UITD_ID, EventType.MAINS_POWER_FAULT, True)]


async def test_an_answer_nobody_waits_for_any_more_is_still_recorded(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        read = asyncio.create_task(r.request(ApplicationData(81, (Reserved(),))))
        request = await r.uitd.frame()
        read.cancel()  # the requester gave up
        with contextlib.suppress(asyncio.CancelledError):
            await read
        await r.uitd.write(r.uitd.session.respond(request, uitd_state(
            UitdState.MAINS_POWER_FAULT)))
        await until(lambda: r.counts.get("records") == 1, "the answer recorded")
        assert r.events() == [(UITD_ID, EventType.MAINS_POWER_FAULT, True)]
