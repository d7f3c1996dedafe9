"""firegate's MQTT payload contract, v1: topics, the record model, messages and codecs.

Shared by the edge agent, the MicroPython firmware and the cloud collector; the reference
is docs/wire-protocol.md. Everything here is pure: bytes and objects in, bytes and objects
out, :class:`WireError` (with a :class:`WireErrorReason` and a path) for anything refused.

Typical use::

    src = Source("modbus/bus1/3/pressure", Bus.MODBUS)
    m = Measurement(source=src, quantity=Quantity.PRESSURE, value=0.32, unit="MPa",
                    receive_ms=now_ms)                       # in a driver, seq unassigned
    payloads = encode_batches("gw-01", None, now_ms, [m.with_seq(1)])   # in the outbox
    batch = decode_batch(payloads[0])                                   # in the collector
"""

from .codec import (
    MAX_PAYLOAD_BYTES,
    PackedBatch,
    PartialBatch,
    RecordFault,
    check_gateway,
    decode_batch,
    decode_batch_partial,
    encode_batch,
    encode_batch_from_encoded,
    encode_batches,
    encode_record,
    pack_batches,
)
from .codes import DEFAULT_PRIORITY, UNITS, Bus, EventType, Priority, Quantity, default_priority
from .control import (
    decode_ack,
    decode_command,
    decode_health,
    decode_status,
    encode_ack,
    encode_command,
    encode_health,
    encode_status,
    peek_command_id,
)
from .errors import WireError, WireErrorReason
from .messages import (
    LWT_REASON,
    MAX_RECORDS_PER_BATCH,
    ArgValue,
    Batch,
    Command,
    CommandAck,
    CommandName,
    GatewayState,
    Health,
    JsonValue,
    LinkState,
    Status,
    last_will,
)
from .records import SEQ_LIMIT, Event, Measurement, Record, Source
from .stored import (
    MAX_STORED_RANGES,
    Stored,
    decode_stored,
    encode_stored,
    seq_ranges,
    split_ranges,
)
from .topics import (
    CHANNELS,
    Channel,
    ChannelSpec,
    Direction,
    Subscription,
    collector_subscriptions,
    gateway_subscriptions,
    parse_topic,
    topic,
)

__all__ = [
    "CHANNELS",
    "DEFAULT_PRIORITY",
    "LWT_REASON",
    "MAX_PAYLOAD_BYTES",
    "MAX_RECORDS_PER_BATCH",
    "MAX_STORED_RANGES",
    "SEQ_LIMIT",
    "UNITS",
    "ArgValue",
    "Batch",
    "Bus",
    "Channel",
    "ChannelSpec",
    "Command",
    "CommandAck",
    "CommandName",
    "Direction",
    "Event",
    "EventType",
    "GatewayState",
    "Health",
    "JsonValue",
    "LinkState",
    "Measurement",
    "PackedBatch",
    "PartialBatch",
    "Priority",
    "Quantity",
    "Record",
    "RecordFault",
    "Source",
    "Status",
    "Stored",
    "Subscription",
    "WireError",
    "WireErrorReason",
    "check_gateway",
    "collector_subscriptions",
    "decode_ack",
    "decode_batch",
    "decode_batch_partial",
    "decode_command",
    "decode_health",
    "decode_status",
    "decode_stored",
    "default_priority",
    "encode_ack",
    "encode_batch",
    "encode_batch_from_encoded",
    "encode_batches",
    "encode_command",
    "encode_health",
    "encode_record",
    "encode_status",
    "encode_stored",
    "gateway_subscriptions",
    "last_will",
    "pack_batches",
    "parse_topic",
    "peek_command_id",
    "seq_ranges",
    "split_ranges",
    "topic",
]
