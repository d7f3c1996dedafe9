"""Credentials and ACLs: refused connections and refused publishes are errors, never silent
successes (MQTT 5), retried with back-off, and the records stay in the outbox.

Under MQTT 3.1.1 a denied publish is invisible to the publisher; a test pins that limit down.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge.config.uplink import DeleteOn, MqttProtocol
from edge.uplink import ConnectFailed, MqttSession
from protocols.wire import Priority
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .helpers import measurement
from .test_uplink_infra import GW, Observer, running, until, uplink_config

MEAS = Priority.MEASUREMENT

# The gateway may write its own status, health and acks and read its commands - not records.
ACL_NO_RECORDS = f"""user admin
topic read #

user {GW}
topic readwrite firegate/v1/{GW}/status
topic write firegate/v1/{GW}/health
topic write firegate/v1/{GW}/cmd/ack
topic read firegate/v1/{GW}/cmd
"""
USERS = {GW: "right", "admin": "admin-pw"}


@pytest.mark.parametrize("protocol", [MqttProtocol.V5, MqttProtocol.V311])
async def test_a_bad_password_is_a_clear_error(tmp_path: Path, protocol: MqttProtocol) -> None:
    with Mosquitto(tmp_path / "broker", users=USERS) as broker:
        cfg = uplink_config(broker.port, username=GW, password="wrong", protocol=protocol)
        session = MqttSession(cfg, GW)
        with pytest.raises(ConnectFailed) as err:
            await session.connect()
        assert str(err.value) == \
            f"mqtt://127.0.0.1:{broker.port} refused the connection: Not authorized (0x87)"
        assert err.value.reason_code == 0x87


async def test_a_refused_connection_is_retried_with_back_off(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", users=USERS) as broker:
        cfg = uplink_config(broker.port, username=GW, password="wrong",
                            reconnect_min_s=0.2, reconnect_max_s=1.0)
        async with running(tmp_path, cfg, wait_up=False) as rig:
            await until(lambda: rig.counters.get("connect_failed") >= 1, "a first attempt")
            loop = asyncio.get_running_loop()
            first = loop.time()
            await until(lambda: rig.counters.get("connect_failed") >= 5, "four more attempts")
            spent = loop.time() - first
            attempts = rig.counters.get("connect_failed")
            info = rig.links.get("uplink")
            assert info is not None and not rig.up
            assert info.detail is not None and "Not authorized (0x87)" in info.detail
        # 0.2, 0.2-0.4, 0.4-0.8, then 0.5-1.0 s apart: four more attempts take at least 1.3 s;
        # a tight loop makes them in milliseconds. A lower bound: a busy machine only adds.
        assert spent >= 0.9 * (0.2 + 0.2 + 0.4 + 0.5), spent
        log = broker.log.read_text()
        assert log.count("not authorised") + log.count("not authorized") >= attempts - 1


async def test_a_denied_publish_is_refused_0x87_and_the_records_stay(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", users=USERS, acl=ACL_NO_RECORDS) as broker:
        obs = Observer(broker.port, username="admin", password="admin-pw")
        cfg = uplink_config(broker.port, username=GW, password="right",
                            reconnect_min_s=0.3, reconnect_max_s=1.0)
        try:
            async with running(tmp_path, cfg) as rig:
                await rig.outbox.append([measurement(i) for i in range(5)])
                await until(lambda: rig.counters.get("publish_refused") >= 2,
                            "the refusal, twice (after a back-off)")
                info = rig.links.get("uplink")
                assert info is not None and info.detail == (
                    f"broker refused the publish to firegate/v1/{GW}/records: "
                    "Not authorized (0x87)")
                assert rig.outbox.depth(MEAS) == 5  # nothing deleted
                assert rig.forwarder.acked_records == 0
                assert obs.seen("records") == []
                assert rig.uplink.connects <= 4  # one connection per back-off, not a storm
        finally:
            obs.close()


async def test_under_3_1_1_a_denied_publish_cannot_be_seen(tmp_path: Path) -> None:
    """The documented limit: MQTT 3.1.1's PUBACK has no reason code, so Mosquitto
    acknowledges the denied publish like a delivered one (and then drops the connection).
    With ``delete_on = "puback"`` the uplink deletes the records; nobody received them. Use
    MQTT 5, or the default "stored" (next test)."""
    with Mosquitto(tmp_path / "broker", users=USERS, acl=ACL_NO_RECORDS) as broker:
        obs = Observer(broker.port, username="admin", password="admin-pw")
        cfg = uplink_config(broker.port, username=GW, password="right",
                            protocol=MqttProtocol.V311, delete_on=DeleteOn.PUBACK)
        try:
            async with running(tmp_path, cfg) as rig:
                await rig.outbox.append([measurement(i) for i in range(5)])
                await until(lambda: rig.forwarder.acked_records == 5, "the (false) PUBACK")
                assert rig.outbox.depth(MEAS) == 0
                assert rig.counters.get("publish_refused") == 0
                await until(lambda: rig.counters.get("connection_lost") >= 1,
                            "the broker dropping the connection")
                assert obs.seen("records") == []
        finally:
            obs.close()


async def test_under_3_1_1_with_delete_on_stored_a_denied_publish_is_kept(
        tmp_path: Path) -> None:
    """The same false PUBACK under the default: no collector confirms what it never got,
    so the records stay in the outbox (marked sent, then sent again after the timeout)."""
    with Mosquitto(tmp_path / "broker", users=USERS, acl=ACL_NO_RECORDS) as broker:
        obs = Observer(broker.port, username="admin", password="admin-pw")
        cfg = uplink_config(broker.port, username=GW, password="right",
                            protocol=MqttProtocol.V311, confirm_timeout_s=1.0)
        try:
            async with running(tmp_path, cfg) as rig:
                await rig.outbox.append([measurement(i) for i in range(5)])
                await until(lambda: rig.forwarder.acked_records >= 5, "the (false) PUBACK")
                await until(lambda: rig.counters.get("unconfirmed_resent") >= 5,
                            "the records sent again")
                assert rig.outbox.depth(MEAS) == 5  # nothing lost
                assert obs.seen("records") == []
        finally:
            obs.close()


async def test_nothing_listening_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(ConnectFailed) as err:
        await MqttSession(uplink_config(port), GW).connect()
    assert str(err.value) == f"mqtt://127.0.0.1:{port}: Connection refused"
