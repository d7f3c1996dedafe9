"""Commands down, acks and health up, through a real broker: every command gets one ack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.drivers.base import CommandError, CommandHandler
from edge.uplink import ControlChannel
from protocols.wire import (
    Command,
    CommandAck,
    CommandName,
    Health,
    JsonValue,
    decode_ack,
    decode_health,
    encode_command,
)
from tests.infra.mosquitto import Mosquitto

from .test_uplink_infra import GW, Observer, running, until, uplink_config

CMD_TOPIC = f"firegate/v1/{GW}/cmd"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Cloud:
    """The centre's side: sends commands, reads acks (through the observer)."""

    def __init__(self, port: int, obs: Observer) -> None:
        self.obs = obs
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="cloud",
                                  protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, payload: bytes) -> None:
        self.client.publish(CMD_TOPIC, payload, qos=1).wait_for_publish(5)

    def command(self, cid: str, cmd: CommandName, **kw: object) -> None:
        ts = kw.pop("ts_ms", now_ms())
        self.send(encode_command(Command(cid, cmd, ts, **kw)))  # type: ignore[arg-type]

    def acks(self) -> dict[str, CommandAck]:
        return {a.id: a for a in (decode_ack(m.payload) for m in self.obs.seen("cmd/ack"))}

    async def ack(self, cid: str) -> CommandAck:
        await until(lambda: cid in self.acks(), f"the ack of {cid}")
        return self.acks()[cid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_commands_are_answered(tmp_path: Path, mosquitto: Mosquitto) -> None:
    calls: list[Command] = []

    async def check_post(command: Command) -> Mapping[str, JsonValue]:
        calls.append(command)
        if command.args.get("timeout_s") == 0:
            raise CommandError("timeout_s must be positive")
        return {"answered": True, "operator": 1}

    async def read_panel_state(command: Command) -> Mapping[str, JsonValue]:
        raise RuntimeError("panel driver bug")

    async def sync_clock(command: Command) -> Mapping[str, JsonValue]:
        await asyncio.sleep(30)  # slow: must not hold up the others
        return {}

    handlers: dict[CommandName, CommandHandler] = {
        CommandName.CHECK_POST: check_post, CommandName.READ_PANEL_STATE: read_panel_state,
        CommandName.SYNC_CLOCK: sync_clock}
    obs = Observer(mosquitto.port)
    cloud = Cloud(mosquitto.port, obs)
    try:
        cfg = uplink_config(mosquitto.port, health_interval_s=3600)
        async with running(tmp_path, cfg, handlers=handlers) as rig:
            await until(lambda: len(obs.seen("health")) == 1, "the health report on connect")
            cloud.command("slow-1", CommandName.SYNC_CLOCK)
            before = now_ms()
            cloud.command("ping-1", CommandName.PING)
            ping = await cloud.ack("ping-1")
            assert ping.ok and ping.error is None
            assert ping.result is not None
            assert before <= ping.result["now_ms"] <= now_ms()  # type: ignore[operator]

            cloud.command("health-1", CommandName.REPORT_HEALTH)
            ack = await cloud.ack("health-1")
            assert (ack.ok, ack.result) == (True, {"published": True})
            assert len(obs.seen("health")) == 2
            assert decode_health(obs.seen("health")[1].payload).gateway_id == GW

            cloud.command("post-1", CommandName.CHECK_POST, args={"timeout_s": 5}, ttl_s=60)
            ack = await cloud.ack("post-1")
            assert (ack.ok, ack.result) == (True, {"answered": True, "operator": 1})
            cloud.command("post-2", CommandName.CHECK_POST, args={"timeout_s": 0})
            ack = await cloud.ack("post-2")
            assert (ack.ok, ack.error) == (False, "timeout_s must be positive")

            cloud.command("stale-1", CommandName.CHECK_POST, ts_ms=now_ms() - 120_000, ttl_s=60)
            ack = await cloud.ack("stale-1")
            assert not ack.ok and ack.error == "stale: sent 120 s ago, ttl 60 s; not run"
            assert [c.id for c in calls] == ["post-1", "post-2"]  # the stale one never ran

            cloud.command("crash-1", CommandName.READ_PANEL_STATE)
            ack = await cloud.ack("crash-1")
            assert (ack.ok, ack.error) == \
                (False, "internal error: RuntimeError('panel driver bug')")

            cloud.send(b'{"v":1,"id":"new-1","cmd":"reboot","ts":1718000000000}')
            ack = await cloud.ack("new-1")
            assert not ack.ok and ack.error is not None
            assert ack.error.startswith("invalid command: ")
            assert "'reboot' is not one of" in ack.error

            cloud.send(b'{"v":1,"cmd":"ping"}')  # no id: nobody to answer
            cloud.send(b"\xff not json")
            await until(lambda: rig.counters.get("command_undecodable") == 2, "two refusals")
            assert "slow-1" not in cloud.acks()  # still running, and nothing waited for it
            assert rig.counters.snapshot() == {
                "command_undecodable": 2, "command_invalid": 1, "command_stale": 1,
                "command_failed": 1, "command_crashed": 1}
    finally:
        cloud.close()
        obs.close()


async def test_a_command_no_driver_handles_is_refused(tmp_path: Path,
                                                      mosquitto: Mosquitto) -> None:
    obs = Observer(mosquitto.port)
    cloud = Cloud(mosquitto.port, obs)
    try:
        async with running(tmp_path, uplink_config(mosquitto.port)) as rig:
            await until(lambda: bool(obs.seen("health")), "the uplink ready")
            cloud.command("rps-1", CommandName.READ_PANEL_STATE)
            ack = await cloud.ack("rps-1")
            assert (ack.ok, ack.error) == (
                False, "read_panel_state is not supported by this gateway")
            assert rig.counters.snapshot() == {"command_unsupported": 1}
    finally:
        cloud.close()
        obs.close()


async def test_health_is_published_periodically_and_a_failing_report_is_counted(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    reports = 0

    async def health() -> Health:
        nonlocal reports
        reports += 1
        if reports == 2:
            raise OSError("psutil could not read /proc")
        return Health(gateway_id=GW, ts_ms=now_ms(), uptime_s=float(reports), version="1",
                      outbox_depth=0)

    obs = Observer(mosquitto.port)
    try:
        cfg = uplink_config(mosquitto.port, health_interval_s=0.3)
        async with running(tmp_path, cfg, health=health) as rig:
            await until(lambda: len(obs.seen("health")) >= 3, "three health reports")
            assert rig.counters.get("health_failed") == 1
            uptimes = [decode_health(m.payload).uptime_s for m in obs.seen("health")]
            assert uptimes[:3] == [1.0, 3.0, 4.0]  # the second report failed, the loop went on
    finally:
        obs.close()


async def test_an_ack_nobody_subscribes_to_is_counted(tmp_path: Path,
                                                      mosquitto: Mosquitto) -> None:
    """PUBACK 0x10 for the ack (the sender is not listening): counted, not an error."""
    obs = Observer(mosquitto.port, topic=f"firegate/v1/{GW}/health")  # not cmd/ack
    cloud = Cloud(mosquitto.port, obs)
    try:
        async with running(tmp_path, uplink_config(mosquitto.port)) as rig:
            await until(lambda: bool(obs.seen("health")), "the uplink ready")
            cloud.command("p-1", CommandName.PING)
            await until(lambda: rig.counters.get("ack_unheard") == 1, "the unheard ack")
            assert rig.control.answered == 0
            assert rig.counters.get("ack_unsent") == 0 and rig.up
    finally:
        cloud.close()
        obs.close()


def test_built_in_commands_cannot_be_replaced() -> None:
    async def mine(command: Command) -> Mapping[str, JsonValue]:
        return {}

    async def health() -> Health:
        raise AssertionError

    with pytest.raises(ValueError, match="built-in commands cannot be replaced"):
        ControlChannel(gateway_id=GW, handlers={CommandName.PING: mine}, health=health)
    with pytest.raises(ValueError, match="built-in commands cannot be replaced"):
        ControlChannel(gateway_id=GW, handlers={CommandName.RESEND: mine}, health=health)
