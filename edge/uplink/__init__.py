"""The gateway's MQTT uplink: outbox -> broker, commands down, status and health up.

Wiring (the composition root, ``edge/app.py``)::

    uplink = MqttUplink(config, gateway_id=gw, version=__version__, site=site, links=links)
    forwarder = Forwarder(outbox, config, gateway_id=gw, site=site, counters=uplink.counters)
    control = ControlChannel(gateway_id=gw, handlers=handlers, health=build_health,
                             health_interval_s=config.health_interval_s,
                             counters=uplink.counters, outbox=outbox)
    tg.create_task(uplink.run(forwarder.serve, control.serve), name="uplink")

See :mod:`edge.uplink.session` for what the uplink can and cannot see of a broker's refusals.
"""

from .commands import BUILT_IN, ControlChannel, HealthFailed, HealthSource
from .forwarder import Forwarder
from .mqtt import (
    LINK,
    ConnectFailed,
    ConnectionLost,
    Message,
    MqttError,
    MqttSession,
    MqttUplink,
    NoSubscribers,
    PublishRefused,
    Service,
    SubscribeRefused,
    WatchdogExpired,
)

__all__ = [
    "BUILT_IN",
    "LINK",
    "ConnectFailed",
    "ConnectionLost",
    "ControlChannel",
    "Forwarder",
    "HealthFailed",
    "HealthSource",
    "Message",
    "MqttError",
    "MqttSession",
    "MqttUplink",
    "NoSubscribers",
    "PublishRefused",
    "Service",
    "SubscribeRefused",
    "WatchdogExpired",
]
