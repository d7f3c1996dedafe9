"""Golden payloads: exact bytes for every message type, both directions.

If one of these changes, the contract changed: firmware and deployed collectors read these bytes.
"""

from __future__ import annotations

import pytest

from protocols.wire import (
    Batch,
    Bus,
    Command,
    CommandAck,
    CommandName,
    Event,
    EventType,
    GatewayState,
    Health,
    LinkState,
    Measurement,
    Priority,
    Quantity,
    Source,
    Status,
    decode_ack,
    decode_batch,
    decode_command,
    decode_health,
    decode_status,
    encode_ack,
    encode_batch,
    encode_command,
    encode_health,
    encode_status,
    last_will,
)

PANEL = Source(
    "panel/1-1/258-0x00000102",
    Bus.GB26875,
    system_type=1,
    system_address=1,
    component_type=21,
    component_address=0x102,
    description="三层东走廊感烟探测器",
)
PRESSURE = Source("modbus/bus1/3/pressure", Bus.MODBUS)
TEMP = Source("ble/A4:C1:38:00:00:01", Bus.BLE)

BATCH = Batch(
    "gw-0001",
    "sh-pd-017",
    1718000001000,
    (
        Event(
            seq=1041,
            receive_ms=1718000000123,
            source_ms=1718000000000,
            source=PANEL,
            type=EventType.FIRE_ALARM,
            state=2,
        ),
        Measurement(
            seq=1042,
            receive_ms=1718000000200,
            source=PRESSURE,
            quantity=Quantity.PRESSURE,
            value=0.32,
            unit="MPa",
        ),
        Event(
            seq=1043,
            receive_ms=1718000000300,
            source=Source("rule/hydrant-low", Bus.RULE, description="消火栓压力低"),
            type=EventType.THRESHOLD_LOW,
            value=0.12,
            limit=0.15,
            detail="低于下限 0.15 MPa，持续 30 s",
        ),
        Measurement(
            seq=1044,
            receive_ms=1718000000400,
            source=TEMP,
            quantity=Quantity.TEMPERATURE,
            value=21.5,
        ),
        Event(
            seq=1045,
            receive_ms=1718000000500,
            source=Source("panel/1-1/system", Bus.GB26875, system_type=1, system_address=1),
            type=EventType.OPERATION,
            operations=("reset", "silence"),
            operator=1,
        ),
        Event(
            seq=1046,
            receive_ms=1718000000600,
            source=PANEL,
            type=EventType.FAULT,
            active=False,
            priority=Priority.ALARM,
        ),
        Measurement(
            seq=1047,
            receive_ms=1718000000700,
            source=TEMP,
            quantity=Quantity.BATTERY,
            value=87,
            priority=Priority.EVENT,
            source_ms=1718000000650,
        ),
    ),
)

BATCH_BYTES = (
    '{"v":1,"gw":"gw-0001","site":"sh-pd-017","ts":1718000001000,"recs":['
    '{"seq":1041,"k":"e","rt":1718000000123,"st":1718000000000,"pr":0,'
    '"src":{"id":"panel/1-1/258-0x00000102","bus":"gb26875","sys":1,"sa":1,"ct":21,"ca":258,'
    '"desc":"三层东走廊感烟探测器"},"ev":"fire_alarm","on":true,"sw":2},'
    '{"seq":1042,"k":"m","rt":1718000000200,"src":{"id":"modbus/bus1/3/pressure","bus":"modbus"},'
    '"q":"pressure","v":0.32,"u":"MPa"},'
    '{"seq":1043,"k":"e","rt":1718000000300,"pr":1,'
    '"src":{"id":"rule/hydrant-low","bus":"rule","desc":"消火栓压力低"},'
    '"ev":"threshold_low","on":true,"v":0.12,"lim":0.15,"det":"低于下限 0.15 MPa，持续 30 s"},'
    '{"seq":1044,"k":"m","rt":1718000000400,"src":{"id":"ble/A4:C1:38:00:00:01","bus":"ble"},'
    '"q":"temperature","v":21.5,"u":"°C"},'
    '{"seq":1045,"k":"e","rt":1718000000500,"pr":2,'
    '"src":{"id":"panel/1-1/system","bus":"gb26875","sys":1,"sa":1},'
    '"ev":"operation","on":true,"ops":["reset","silence"],"opr":1},'
    '{"seq":1046,"k":"e","rt":1718000000600,"pr":1,'
    '"src":{"id":"panel/1-1/258-0x00000102","bus":"gb26875","sys":1,"sa":1,"ct":21,"ca":258,'
    '"desc":"三层东走廊感烟探测器"},"ev":"fault","on":false},'
    '{"seq":1047,"k":"m","rt":1718000000700,"st":1718000000650,"pr":2,'
    '"src":{"id":"ble/A4:C1:38:00:00:01","bus":"ble"},"q":"battery","v":87.0,"u":"%"}'
    "]}"
).encode()

STATUS_ONLINE = Status(
    "gw-0001", GatewayState.ONLINE, 1718000000000, version="0.1.0", site="sh-pd-017"
)
STATUS_ONLINE_BYTES = (
    b'{"v":1,"gw":"gw-0001","state":"online","ts":1718000000000,"ver":"0.1.0","site":"sh-pd-017"}'
)
STATUS_LWT = last_will("gw-0001", 1718000000000, version="0.1.0")
STATUS_LWT_BYTES = (
    b'{"v":1,"gw":"gw-0001","state":"offline","ts":1718000000000,"ver":"0.1.0","reason":"lwt"}'
)

HEALTH = Health(
    gateway_id="gw-0001",
    ts_ms=1718000060000,
    uptime_s=86400.5,
    version="0.1.0",
    outbox_depth=12,
    outbox_oldest_s=1.5,
    evicted={"measurement": 0},
    counters={"gb26875/com1": {"bad_checksum": 3}, "modbus/总线1": {"exception": 2}},
    links={"uplink": LinkState.UP, "modbus/总线1": LinkState.DOWN},
    cpu_percent=3.5,
    mem_rss_bytes=48234496,
    disk_free_bytes=5368709120,
    last_seq=1047,
)
HEALTH_BYTES = (
    '{"v":1,"gw":"gw-0001","ts":1718000060000,"uptime_s":86400.5,"ver":"0.1.0","ob_depth":12,'
    '"ob_oldest_s":1.5,"evicted":{"measurement":0},'
    '"counters":{"gb26875/com1":{"bad_checksum":3},"modbus/总线1":{"exception":2}},'
    '"links":{"uplink":"up","modbus/总线1":"down"},'
    '"cpu_pct":3.5,"rss_bytes":48234496,"disk_free_bytes":5368709120,"last_seq":1047}'
).encode()
# What the ESP32 firmware can report: no CPU or RSS figures.
HEALTH_FIRMWARE = Health(
    gateway_id="esp32-node-3", ts_ms=1000, uptime_s=60, version="fw-0.1", outbox_depth=0
)
HEALTH_FIRMWARE_BYTES = (
    b'{"v":1,"gw":"esp32-node-3","ts":1000,"uptime_s":60.0,"ver":"fw-0.1","ob_depth":0,'
    b'"evicted":{},"counters":{},"links":{},"last_seq":0}'
)

COMMAND = Command(
    "c-0001",
    CommandName.CHECK_POST,
    1718000000000,
    args={"timeout_s": 600, "message": "请值班人员应答", "loud": True, "ratio": 0.5},
    ttl_s=300,
)
COMMAND_BYTES = (
    '{"v":1,"id":"c-0001","cmd":"check_post","ts":1718000000000,'
    '"args":{"timeout_s":600,"message":"请值班人员应答","loud":true,"ratio":0.5},"ttl":300}'
).encode()
PING = Command("p-1", CommandName.PING, 5)
PING_BYTES = b'{"v":1,"id":"p-1","cmd":"ping","ts":5}'

ACK_OK = CommandAck(
    "c-0001", True, 1718000004000, result={"answered": True, "operator": 1, "by": "张三"}
)
ACK_OK_BYTES = (
    '{"v":1,"id":"c-0001","ok":true,"ts":1718000004000,'
    '"result":{"answered":true,"operator":1,"by":"张三"}}'
).encode()
ACK_FAIL = CommandAck("c-0002", False, 1718000004000, error="unknown command 'reboot'")
ACK_FAIL_BYTES = (
    b'{"v":1,"id":"c-0002","ok":false,"ts":1718000004000,"error":"unknown command \'reboot\'"}'
)

GOLDEN = [
    pytest.param(BATCH, BATCH_BYTES, encode_batch, decode_batch, id="batch"),
    pytest.param(STATUS_ONLINE, STATUS_ONLINE_BYTES, encode_status, decode_status, id="online"),
    pytest.param(STATUS_LWT, STATUS_LWT_BYTES, encode_status, decode_status, id="lwt"),
    pytest.param(HEALTH, HEALTH_BYTES, encode_health, decode_health, id="health"),
    pytest.param(
        HEALTH_FIRMWARE, HEALTH_FIRMWARE_BYTES, encode_health, decode_health, id="health-fw"
    ),
    pytest.param(COMMAND, COMMAND_BYTES, encode_command, decode_command, id="command"),
    pytest.param(PING, PING_BYTES, encode_command, decode_command, id="ping"),
    pytest.param(ACK_OK, ACK_OK_BYTES, encode_ack, decode_ack, id="ack-ok"),
    pytest.param(ACK_FAIL, ACK_FAIL_BYTES, encode_ack, decode_ack, id="ack-fail"),
]


@pytest.mark.parametrize(("obj", "payload", "encode", "decode"), GOLDEN)
def test_encode_gives_the_golden_bytes(obj, payload, encode, decode):
    assert encode(obj) == payload


@pytest.mark.parametrize(("obj", "payload", "encode", "decode"), GOLDEN)
def test_decode_gives_the_object(obj, payload, encode, decode):
    assert decode(payload) == obj


@pytest.mark.parametrize(("obj", "payload", "encode", "decode"), GOLDEN)
def test_canonical_bytes_survive_a_round_trip(obj, payload, encode, decode):
    assert encode(decode(payload)) == payload
    assert decode(encode(obj)) == obj


def test_chinese_is_real_utf8_not_escaped():
    assert "三层东走廊感烟探测器".encode() in BATCH_BYTES
    assert b"\\u" not in BATCH_BYTES
    assert "°C".encode() == b"\xc2\xb0C"
    assert b'"u":"\xc2\xb0C"' in BATCH_BYTES


def test_decoded_values_have_their_model_types():
    batch = decode_batch(BATCH_BYTES)
    fire, pressure, *_ = batch.records
    assert isinstance(fire, Event)
    assert fire.type is EventType.FIRE_ALARM
    assert fire.priority is Priority.FIRE
    assert fire.source.bus is Bus.GB26875
    assert isinstance(pressure, Measurement)
    assert pressure.quantity is Quantity.PRESSURE
    battery = batch.records[-1]
    assert isinstance(battery, Measurement)
    assert type(battery.value) is float  # 87 from the wire is stored as 87.0
    assert decode_status(STATUS_LWT_BYTES).state is GatewayState.OFFLINE
    assert decode_health(HEALTH_BYTES).links["uplink"] is LinkState.UP
    assert decode_command(COMMAND_BYTES).cmd is CommandName.CHECK_POST


def test_any_whitespace_and_key_order_decode_to_the_same_batch():
    # As MicroPython's json.dumps writes it: ", " and ": ", keys in its own order.
    loose = (
        b'{"recs": [{"u": "MPa", "v": 0.32, "q": "pressure", "src": {"bus": "modbus", '
        b'"id": "modbus/bus1/3/pressure"}, "rt": 1718000000200, "k": "m", "seq": 1042}], '
        b'"ts": 1718000001000, "site": "sh-pd-017", "gw": "gw-0001", "v": 1}\n'
    )
    batch = decode_batch(loose)
    assert batch.records == (BATCH.records[1],)
    assert encode_batch(batch) == (
        b'{"v":1,"gw":"gw-0001","site":"sh-pd-017","ts":1718000001000,"recs":['
        b'{"seq":1042,"k":"m","rt":1718000000200,"src":{"id":"modbus/bus1/3/pressure",'
        b'"bus":"modbus"},"q":"pressure","v":0.32,"u":"MPa"}]}'
    )
