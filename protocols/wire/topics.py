"""MQTT topics of the contract: ``firegate/v1/<gateway_id>/<channel>``.

The version sits in the topic as well as in every payload: a broker ACL, a bridge or a v2
collector can route by version without parsing payloads, and a breaking change gets new
topics that v1 collectors never subscribe to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType

from ._checks import ID_RULE, check_id
from .errors import WireError, WireErrorReason

__all__ = [
    "CHANNELS",
    "PREFIX",
    "Channel",
    "ChannelSpec",
    "Direction",
    "Subscription",
    "collector_subscriptions",
    "gateway_subscriptions",
    "parse_topic",
    "topic",
]

ROOT = "firegate"
PREFIX = "firegate/v1"


class Direction(Enum):
    UP = "up"  # gateway -> cloud
    DOWN = "down"  # cloud -> gateway


class Channel(StrEnum):
    """The last topic level(s); ``cmd/ack`` is two levels."""

    RECORDS = "records"
    STATUS = "status"
    HEALTH = "health"
    CMD = "cmd"
    CMD_ACK = "cmd/ack"
    STORED = "stored"
    """What a collector stored (docs/wire-protocol.md, "Stored"): the gateway's deletion point."""


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    direction: Direction
    qos: int
    retain: bool


# QoS 1 everywhere: at-least-once plus the collector's (gateway, seq) de-duplication gives
# exactly-once records without QoS 2's extra round trip (umqtt.simple has no QoS 2 at all).
CHANNELS: Mapping[Channel, ChannelSpec] = MappingProxyType(
    {
        Channel.RECORDS: ChannelSpec(Direction.UP, 1, False),
        # Retained so that a collector (re)starting learns every gateway's state at once; the
        # same payload shape is the MQTT last will, published by the broker on a lost link.
        Channel.STATUS: ChannelSpec(Direction.UP, 1, True),
        Channel.HEALTH: ChannelSpec(Direction.UP, 1, False),
        # Not retained: a stale command replayed to a reconnecting gateway is worse than none.
        Channel.CMD: ChannelSpec(Direction.DOWN, 1, False),
        Channel.CMD_ACK: ChannelSpec(Direction.UP, 1, False),
        # Not retained: a confirmation is for the records in hand; QoS 1, and a lost one only
        # means the records are sent again after the gateway's confirm timeout.
        Channel.STORED: ChannelSpec(Direction.DOWN, 1, False),
    }
)

_CHANNEL_OF = {c.value: c for c in Channel}


def topic(gateway_id: str, channel: Channel) -> str:
    """``firegate/v1/<gateway_id>/<channel>``; the id is checked (it must not contain
    ``/``, ``+`` or ``#``)."""
    return f"{PREFIX}/{_topic_id(gateway_id)}/{Channel(channel).value}"


def parse_topic(name: str) -> tuple[str, Channel]:
    """The gateway id and channel of a received topic name, or WireError.

    BAD_TOPIC for anything that is not a v1 firegate topic; UNSUPPORTED_VERSION for
    ``firegate/v2/...`` and later, so a mixed fleet is counted, not silently dropped.
    """
    levels = name.split("/")
    if len(levels) < 4 or levels[0] != ROOT:
        raise WireError(WireErrorReason.BAD_TOPIC, "topic", f"{name[:80]!r} is not firegate/v1/...")
    if levels[1] != "v1":
        if levels[1][:1] == "v" and levels[1][1:].isdigit():
            raise WireError(
                WireErrorReason.UNSUPPORTED_VERSION, "topic", f"{levels[1]} topic; this is v1"
            )
        raise WireError(WireErrorReason.BAD_TOPIC, "topic", f"bad version level {levels[1]!r}")
    channel = _CHANNEL_OF.get("/".join(levels[3:]))
    if channel is None:
        raise WireError(WireErrorReason.BAD_TOPIC, "topic", f"unknown channel in {name[:80]!r}")
    return _topic_id(levels[2]), channel


def _topic_id(gateway_id: str) -> str:
    try:
        return check_id("gw", gateway_id)
    except WireError:
        raise WireError(
            WireErrorReason.BAD_TOPIC, "topic", f"gateway id {gateway_id[:80]!r}: {ID_RULE}"
        ) from None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic filter and the maximum QoS to request for it."""

    filter: str
    qos: int


def collector_subscriptions(share_group: str | None = None) -> tuple[Subscription, ...]:
    """What a collector subscribes to, for every gateway.

    With ``share_group``, several collector processes split the load through MQTT 5 shared
    subscriptions (``$share/<group>/firegate/v1/+/records``). ``status`` is never shared:
    MQTT 5.0 §4.8.2 says retained messages are not sent to a shared subscription when it is
    made, and each collector needs the retained status of every gateway at start-up.
    """
    channels = (Channel.RECORDS, Channel.HEALTH, Channel.CMD_ACK)
    share = ""
    if share_group is not None:
        try:
            check_id("group", share_group)
        except WireError:
            raise ValueError(f"share group {share_group!r}: {ID_RULE}") from None
        share = f"$share/{share_group}/"
    subs = [Subscription(f"{share}{PREFIX}/+/{c.value}", CHANNELS[c].qos) for c in channels]
    subs.insert(1, Subscription(f"{PREFIX}/+/{Channel.STATUS.value}", CHANNELS[Channel.STATUS].qos))
    return tuple(subs)


def gateway_subscriptions(gateway_id: str) -> tuple[Subscription, ...]:
    """What a gateway subscribes to: its own command topic (not ``cmd/#``, which would echo
    its own acks back) and its own ``stored`` confirmations."""
    return (Subscription(topic(gateway_id, Channel.CMD), CHANNELS[Channel.CMD].qos),
            Subscription(topic(gateway_id, Channel.STORED), CHANNELS[Channel.STORED].qos))
