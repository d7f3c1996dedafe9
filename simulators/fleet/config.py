"""Settings of the gateway fleet simulator, validated in one place before anything is opened.

The settings are checked through :class:`common.config.Table`, like every config of the project:
a refusal is a :class:`~common.config.ConfigError` whose key is the setting (``rate``,
``broker``...) and whose message says what is allowed; the CLI prints it with the option's
spelling (``--rate``). Nothing here opens a socket or starts a loop, so a bad command line fails
at once (the Telegraf ``Init()`` rule).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from common.config import ConfigError, Table
from protocols.wire import MAX_RECORDS_PER_BATCH, Channel, WireError, topic

__all__ = [
    "DEFAULT_CONFIRM_TIMEOUT",
    "DEFAULT_DURATION",
    "DEFAULT_RATE",
    "TEMPLATE_FIELDS",
    "BrokerAddress",
    "DeleteOn",
    "FleetConfig",
    "MqttVersion",
    "expand_template",
    "parse_broker",
]

MqttVersion = Literal["5", "3.1.1"]
DeleteOn = Literal["stored", "puback"]
"""When a gateway deletes a record: at the collector's confirmation (docs/wire-protocol.md,
"Stored"; the agent and the firmware) or at the broker's PUBACK (before issue 18)."""
DEFAULT_CONFIRM_TIMEOUT = 10.0  # seconds before an unconfirmed record is sent again
DEFAULT_RATE = 10.0  # records/s per gateway
DEFAULT_DURATION = 10.0  # seconds, when neither duration nor records is given
SCHEMES = {"mqtt": 1883, "mqtts": 8883}
TEMPLATE_FIELDS = ("gateway", "site", "index")
MAX_GATEWAYS = 99_999  # ids are <prefix>-NNNNN
# paho's own in-flight limit is set to window + this, to leave room for status and health.
CONTROL_SLOTS = 4


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the fleet connects: ``mqtt://host:port`` (plain) or ``mqtts://`` (TLS)."""

    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_broker(url: str) -> BrokerAddress:
    """``mqtt://HOST[:PORT]`` (default port 1883) or ``mqtts://HOST[:PORT]`` (8883)."""
    hint = "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    if "://" not in url:
        raise ConfigError("broker", f"{url!r}: {hint}")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError("broker", f"{url!r}: scheme {parts.scheme!r} unknown; {hint}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "broker", f"{url!r}: put credentials in --username/--password, not in the URL"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("broker", f"{url!r}: no path or query allowed; {hint}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("broker", f"{url!r}: the port must be 1..65535") from None
    if not parts.hostname:
        raise ConfigError("broker", f"{url!r}: no host; {hint}")
    if port == 0:
        raise ConfigError("broker", f"{url!r}: the port must be 1..65535")
    return BrokerAddress(parts.scheme, parts.hostname, port or SCHEMES[parts.scheme])


def _template(t: Table, key: str) -> None:
    """A credential template: only the placeholders of :data:`TEMPLATE_FIELDS`."""
    if not t.has(key):
        return
    template = t.text(key, min_len=0)
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        t.fail(key, f"{template!r}: {e} (write {{{{ for a literal brace)")
    for name in names:
        if name not in TEMPLATE_FIELDS:
            allowed = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            t.fail(key, f"{template!r}: unknown placeholder {{{name}}}; use {allowed}")


def expand_template(template: str, *, gateway: str, site: str, index: int) -> str:
    """Fill ``{gateway}``, ``{site}`` and ``{index}`` (1-based) in a credential template."""
    return template.format(gateway=gateway, site=site, index=index)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    """One fleet run. Defaults give 10 gateways x 10 records/s for 10 s, no drops."""

    broker: str = "mqtt://127.0.0.1:1883"
    ca: Path | None = None
    """CA certificate file (PEM) for ``mqtts://``; default: the system trust store."""
    username: str | None = None
    """Template, e.g. ``{gateway}``: see :data:`TEMPLATE_FIELDS`."""
    password: str | None = None
    mqtt: MqttVersion = "5"
    gateways: int = 10
    prefix: str = "fleet"
    """Gateway ids are ``<prefix>-00001``...; client id = gateway id."""
    gateways_per_site: int = 4
    rate: float | None = None
    """Records per second per gateway (default :data:`DEFAULT_RATE`)."""
    total_rate: float | None = None
    """Records per second for the whole fleet, split evenly; instead of ``rate``."""
    duration: float | None = None
    """Seconds of production; or ``records``. Neither: :data:`DEFAULT_DURATION`."""
    records: int | None = None
    """Records to produce over the whole fleet (device traffic; see docs for link faults)."""
    batch_interval: float = 1.0
    max_batch: int = 1000
    window: int = 8
    """Record messages a gateway keeps unacknowledged at once."""
    alarm_rate: float = 0.001
    """Probability that a record starts an alarm burst (raise, then restore later)."""
    offline_fraction: float = 0.0
    offline_for: float = 10.0
    health_interval: float = 60.0
    keepalive: int = 60
    connect_timeout: float = 5.0
    drain_timeout: float = 30.0
    """After production: how long to wait for every record to be delivered (keep it above
    ``confirm_timeout``: a confirmation lost with a connection is made up by a resend)."""
    delete_on: DeleteOn = "stored"
    confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT
    """With ``delete_on="stored"``: seconds after its PUBACK before a record the collector has
    not confirmed is sent again."""
    seed: int = 0
    keep_records: bool = False
    """Keep every produced record in the ledger (for tests that compare values)."""

    def __post_init__(self) -> None:
        # Every field is a key of one table (None: not given), so a field added without a
        # check here is refused by finish() as an unknown key.
        t = Table({f.name: str(v) if isinstance(v, Path) else v
                   for f in fields(self) if (v := getattr(self, f.name)) is not None})
        address = parse_broker(t.text("broker"))
        if t.has("ca"):
            if not address.tls:
                t.fail("ca", "a CA file needs an mqtts:// broker URL")
            ca = t.path_value("ca")
            if ca is None or not ca.is_file():
                t.fail("ca", f"{str(self.ca)!r} is not a file")
        _template(t, "username")
        _template(t, "password")
        if t.has("password") and not t.has("username"):
            t.fail("password", "a password needs a username")
        t.one_of("mqtt", ("5", "3.1.1"))
        t.integer("gateways", min=1, max=MAX_GATEWAYS)
        t.text("prefix", min_len=0)
        try:
            topic(self.gateway_id(self.gateways), Channel.RECORDS)
            topic(self.site_id(self.gateways), Channel.RECORDS)
        except WireError:
            t.fail("prefix", f"{self.prefix!r}: ids must be letters, digits, '_', '.', '-'")
        t.integer("gateways_per_site", min=1)
        if t.has("rate") and t.has("total_rate"):
            t.fail("rate", "give a rate per gateway or a total rate, not both")
        t.opt_number("rate", above=0)
        t.opt_number("total_rate", above=0)
        if t.has("duration") and t.has("records"):
            t.fail("duration", "give a duration or a number of records, not both")
        t.opt_number("duration", above=0)
        t.opt_integer("records", min=1)
        t.number("batch_interval", above=0, max=3600)
        t.integer("max_batch", min=1, max=MAX_RECORDS_PER_BATCH)
        if t.integer("window", min=1) > 64:
            t.fail("window", f"must be at most 64 (keep it within the broker's receive "
                             f"maximum, 20 for Mosquitto by default), got {self.window}")
        t.number("alarm_rate", min=0, max=1)
        t.number("offline_fraction", min=0, max=1)
        t.number("offline_for", above=0)
        t.number("health_interval", above=0)
        t.integer("keepalive", min=5, max=65535)
        t.number("connect_timeout", above=0)
        t.number("drain_timeout", above=0)
        t.one_of("delete_on", ("stored", "puback"))
        t.number("confirm_timeout", above=0)
        t.integer("seed")
        t.flag("keep_records")
        t.finish()

    @property
    def address(self) -> BrokerAddress:
        return parse_broker(self.broker)

    @property
    def per_gateway_rate(self) -> float:
        if self.total_rate is not None:
            return self.total_rate / self.gateways
        return DEFAULT_RATE if self.rate is None else self.rate

    @property
    def production_s(self) -> float | None:
        """Production time when it is set by duration; None when set by a record count."""
        if self.records is not None:
            return None
        return DEFAULT_DURATION if self.duration is None else self.duration

    @property
    def expected_production_s(self) -> float:
        """The duration, or how long ``records`` take at the configured rate."""
        if self.records is None:
            return self.production_s or DEFAULT_DURATION
        return self.records / (self.per_gateway_rate * self.gateways)

    def gateway_id(self, index: int) -> str:
        """Id of gateway ``index`` (1-based): ``fleet-00001``."""
        return f"{self.prefix}-{index:05d}"

    def site_id(self, index: int) -> str:
        """Site of gateway ``index``: ``<prefix>-site-0001`` for gateways 1..gateways_per_site."""
        return f"{self.prefix}-site-{(index - 1) // self.gateways_per_site + 1:04d}"

    def quota(self, index: int) -> int | None:
        """Records gateway ``index`` produces in a ``records`` run (split evenly)."""
        if self.records is None:
            return None
        base, extra = divmod(self.records, self.gateways)
        return base + (1 if index <= extra else 0)

    def summary(self) -> dict[str, object]:
        """The settings for the report (no passwords)."""
        return {
            "broker": str(self.address),
            "mqtt": self.mqtt,
            "tls": self.address.tls,
            "username": self.username,
            "gateways": self.gateways,
            "gateways_per_site": self.gateways_per_site,
            "rate_per_gateway": self.per_gateway_rate,
            "duration": self.production_s,
            "records": self.records,
            "batch_interval": self.batch_interval,
            "max_batch": self.max_batch,
            "window": self.window,
            "alarm_rate": self.alarm_rate,
            "offline_fraction": self.offline_fraction,
            "offline_for": self.offline_for,
            "health_interval": self.health_interval,
            "delete_on": self.delete_on,
            "confirm_timeout": self.confirm_timeout,
            "seed": self.seed,
        }
