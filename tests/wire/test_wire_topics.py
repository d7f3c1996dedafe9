"""Topic names, their parsing, and the subscriptions of collectors and gateways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.wire import (
    CHANNELS,
    Channel,
    Direction,
    Subscription,
    WireError,
    WireErrorReason,
    collector_subscriptions,
    gateway_subscriptions,
    parse_topic,
    topic,
)

from .wire_strategies import ids


def test_topic_names():
    assert topic("gw-0001", Channel.RECORDS) == "firegate/v1/gw-0001/records"
    assert topic("gw-0001", Channel.CMD_ACK) == "firegate/v1/gw-0001/cmd/ack"


@given(ids, st.sampled_from(Channel))
def test_parse_inverts_topic(gateway_id, channel):
    assert parse_topic(topic(gateway_id, channel)) == (gateway_id, channel)


@pytest.mark.parametrize("gateway_id", ["", "a/b", "+", "#", "gw 1", "-gw", "g" * 65, "网关"])
def test_topic_refuses_ids_that_break_topic_levels(gateway_id):
    with pytest.raises(WireError) as info:
        topic(gateway_id, Channel.STATUS)
    assert info.value.reason is WireErrorReason.BAD_TOPIC


@pytest.mark.parametrize(
    "name",
    [
        "",
        "firegate",
        "firegate/v1/gw-1",
        "firegate/v1/gw-1/",
        "firegate/v1/gw-1/records/x",
        "firegate/v1/gw-1/ack",
        "firegate/v1//records",
        "firegate/v1/+/records",
        "firegate/vx/gw-1/records",
        "other/v1/gw-1/records",
        "$share/g/firegate/v1/gw-1/records",
    ],
)
def test_parse_refuses_foreign_topics(name):
    with pytest.raises(WireError) as info:
        parse_topic(name)
    assert (info.value.reason, info.value.path) == (WireErrorReason.BAD_TOPIC, "topic")


def test_a_later_version_is_unsupported_not_malformed():
    with pytest.raises(WireError) as info:
        parse_topic("firegate/v2/gw-1/records")
    assert info.value.reason is WireErrorReason.UNSUPPORTED_VERSION


def test_channel_table():
    assert set(CHANNELS) == set(Channel)
    assert all(spec.qos == 1 for spec in CHANNELS.values())
    assert [c for c, spec in CHANNELS.items() if spec.retain] == [Channel.STATUS]
    assert [c for c, spec in CHANNELS.items() if spec.direction is Direction.DOWN] == [
        Channel.CMD, Channel.STORED]


def test_collector_subscriptions():
    assert collector_subscriptions() == (
        Subscription("firegate/v1/+/records", 1),
        Subscription("firegate/v1/+/status", 1),
        Subscription("firegate/v1/+/health", 1),
        Subscription("firegate/v1/+/cmd/ack", 1),
    )


def test_shared_collector_subscriptions_keep_status_unshared():
    # MQTT 5.0 §4.8.2: retained messages are not sent to a new shared subscription.
    assert collector_subscriptions("collectors") == (
        Subscription("$share/collectors/firegate/v1/+/records", 1),
        Subscription("firegate/v1/+/status", 1),
        Subscription("$share/collectors/firegate/v1/+/health", 1),
        Subscription("$share/collectors/firegate/v1/+/cmd/ack", 1),
    )
    with pytest.raises(ValueError, match="share group"):
        collector_subscriptions("a/b")


def test_gateway_subscribes_to_its_own_commands_and_confirmations_only():
    assert gateway_subscriptions("gw-7") == (Subscription("firegate/v1/gw-7/cmd", 1),
                                             Subscription("firegate/v1/gw-7/stored", 1))
