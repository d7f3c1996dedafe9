"""Conversations over TCP: the centre connects to the UITD, or the UITD dials the centre."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from protocols.gb26875 import (
    ComponentAddress,
    ComponentRef,
    ComponentState,
    ComponentStatus,
    Reserved,
    UitdState,
    UitdStatus,
)
from simulators.panel import (
    ManualClock,
    Panel,
    ScaledClock,
    Status,
    TcpConnectTransport,
    TcpListenTransport,
    UitdEngine,
)

from .conftest import panel_config, running
from .helpers import Centre, decoded, stream_centre, tcp_centre

SMOKE = ComponentAddress.from_int(3001)


async def test_centre_connects_gets_alarms_and_reads() -> None:
    async with running(panel_config(), link="tcp") as (panel, centre):
        panel.trigger("fire_alarm", component="smoke-3F-east")
        (obj,) = decoded(await centre.upload()).objects
        assert isinstance(obj, ComponentStatus) and obj.description == "3F 东侧走廊"
        (uitd,) = (await centre.read(81, Reserved())).objects
        assert isinstance(uitd, UitdStatus) and uitd.state & UitdState.FIRE_ALARM
        (comp,) = (await centre.read(62, ComponentRef(1, 1, SMOKE))).objects
        assert isinstance(comp, ComponentStatus) and comp.state & ComponentState.FIRE_ALARM
        ledger = panel.engine.ledger
        await panel.wait_until(lambda: not ledger.undelivered())


async def test_a_dropped_connection_requeues_and_the_next_one_delivers() -> None:
    engine = UitdEngine(panel_config())
    ledger = engine.ledger
    async with Panel(engine, TcpListenTransport("127.0.0.1", 0), ManualClock()) as panel:
        async with tcp_centre(panel.address) as first:
            first.policy = lambda frame, n: "ignore"
            panel.trigger("fire_alarm", component="smoke-3F-east")
            await first.upload()
        await panel.wait_until(lambda: not engine.connected)  # the centre hung up
        assert ledger.entries[0].status is Status.QUEUED  # kept, not failed
        panel.trigger("fault", component="module-pump-room")
        async with tcp_centre(panel.address) as second:
            frames = [await second.upload(1), await second.upload(2)]
            assert [decoded(f).objects[0].component_type for f in frames] == [42, 87]  # type: ignore[attr-defined]
            assert frames[0].serial == 0  # numbering restarted with the new connection
            await panel.wait_until(lambda: not ledger.undelivered())
        assert ledger.entries[0].serials == [0, 0] and ledger.entries[0].attempts == 2


async def test_a_new_connection_replaces_the_old_one() -> None:
    async with running(panel_config(), link="tcp") as (panel, first), \
            tcp_centre(panel.address) as second:
        await panel.wait_until(lambda: panel.connection is not None
                               and panel.connection.name.endswith(second.name))
        panel.trigger("fire_alarm", component="smoke-3F-east")
        await second.upload()
        assert first.uploads == []


@contextlib.asynccontextmanager
async def centre_server() -> AsyncIterator[tuple[str, asyncio.Queue[Centre]]]:
    """A listening centre; each accepted UITD connection gets a Centre, put in the queue."""
    centres: asyncio.Queue[Centre] = asyncio.Queue()
    stack = contextlib.AsyncExitStack()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        centre = await stack.enter_async_context(stream_centre(reader, writer))
        await centres.put(centre)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    async with stack:
        try:
            yield f"{host}:{port}", centres
        finally:
            server.close()


async def test_uitd_dials_the_centre_and_redials_after_a_drop() -> None:
    async with centre_server() as (address, centres):
        host, port = address.rsplit(":", 1)
        engine = UitdEngine(panel_config())
        transport = TcpConnectTransport(host, int(port), first_delay=0.05)
        async with Panel(engine, transport, ManualClock()) as panel:
            centre = await asyncio.wait_for(centres.get(), 10)
            panel.trigger("fire_alarm", component="smoke-3F-east")
            assert decoded(await centre.upload()).type_mark == 2
            await panel.wait_until(lambda: not engine.ledger.undelivered())
            assert panel.connection is not None
            panel.connection.close()  # the link drops: the UITD dials again
            again = await asyncio.wait_for(centres.get(), 10)
            panel.trigger("fault", component="module-pump-room")
            assert decoded(await again.upload()).type_mark == 2
            assert transport.attempts >= 2


async def test_uitd_keeps_dialing_until_the_centre_is_there() -> None:
    # Grab a free port, close it: the first dials are refused.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    engine = UitdEngine(panel_config())
    transport = TcpConnectTransport("127.0.0.1", port, first_delay=0.05, max_delay=0.1)
    async with Panel(engine, transport, ScaledClock(1)) as panel:
        panel.trigger("fire_alarm", component="smoke-3F-east")  # queued while nobody listens
        await panel.wait_until(lambda: transport.attempts >= 2)
        centres: asyncio.Queue[Centre] = asyncio.Queue()
        stack = contextlib.AsyncExitStack()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await centres.put(await stack.enter_async_context(stream_centre(reader, writer)))

        server = await asyncio.start_server(accept, "127.0.0.1", port)
        async with stack:
            centre = await asyncio.wait_for(centres.get(), 10)
            assert decoded(await centre.upload()).type_mark == 2
            await panel.wait_until(lambda: not engine.ledger.undelivered())
            server.close()


async def test_tcp_is_paced_only_when_asked() -> None:
    # Lower bound only: 78 bytes at 9600 baud cannot arrive sooner than ~81 ms after the event.
    async with running(panel_config(), link="tcp", pace=9600) as (panel, centre):
        started = asyncio.get_running_loop().time()
        panel.trigger("fire_alarm", component="smoke-3F-east")
        await centre.upload()
        assert centre.frames[-1][0] - started >= 0.9 * 78 * 10 / 9600
