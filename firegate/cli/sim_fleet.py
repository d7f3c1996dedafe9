"""``firegate sim fleet``: many virtual gateways against one MQTT broker, with a ledger.

paho (through :mod:`.runner`) and asyncio are imported inside the command, so building the
``firegate`` command tree stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from common.config import ConfigError
from simulators.fleet.config import (
    DEFAULT_CONFIRM_TIMEOUT,
    DEFAULT_DURATION,
    DEFAULT_RATE,
    FleetConfig,
)

if TYPE_CHECKING:
    from simulators.fleet.ledger import FleetReport
    from simulators.fleet.runner import Progress


def register(app: typer.Typer) -> None:
    """Add the ``fleet`` command to the ``firegate sim`` group."""
    app.command("fleet", no_args_is_help=False)(fleet)


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def fleet(
    broker: Annotated[str, typer.Option(
        "--broker", metavar="URL",
        help="mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (8883, TLS).")
    ] = "mqtt://127.0.0.1:1883",
    ca: Annotated[Path | None, typer.Option(
        "--ca", metavar="FILE", help="CA certificate (PEM) for mqtts://; default: the "
                                     "system trust store.")] = None,
    username: Annotated[str | None, typer.Option(
        "--username", metavar="TEMPLATE",
        help="Username; {gateway}, {site} and {index} are filled per gateway.")] = None,
    password: Annotated[str | None, typer.Option(
        "--password", metavar="TEMPLATE", help="Password, same placeholders, e.g. "
                                               "'pw-{gateway}'.")] = None,
    mqtt: Annotated[str, typer.Option("--mqtt", metavar="5|3.1.1",
                                      help="MQTT protocol version.")] = "5",
    gateways: Annotated[int, typer.Option("--gateways", "-n",
                                          help="Number of virtual gateways.")] = 10,
    gateways_per_site: Annotated[int, typer.Option(
        "--gateways-per-site", help="Gateways sharing one site id.")] = 4,
    prefix: Annotated[str, typer.Option(
        "--prefix", help="Gateway ids are PREFIX-00001, ...; also the MQTT client ids.")
    ] = "fleet",
    rate: Annotated[float | None, typer.Option(
        "--rate", help=f"Records/s per gateway (default {DEFAULT_RATE:g}).")] = None,
    total_rate: Annotated[float | None, typer.Option(
        "--total-rate", help="Records/s for the whole fleet, instead of --rate.")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", help=f"Seconds of production (default {DEFAULT_DURATION:g}).")] = None,
    records: Annotated[int | None, typer.Option(
        "--records", help="Produce this many records over the fleet, instead of "
                          "--duration.")] = None,
    batch_interval: Annotated[float, typer.Option(
        "--batch-interval", help="Seconds between a gateway's batches.")] = 1.0,
    max_batch: Annotated[int, typer.Option(
        "--max-batch", help="Records per message at most (1-5000; the 128 KiB payload "
                            "limit may split sooner).")] = 1000,
    window: Annotated[int, typer.Option(
        "--window", help="Unacknowledged record messages per gateway.")] = 8,
    alarm_rate: Annotated[float, typer.Option(
        "--alarm-rate", help="Probability that a record starts an alarm burst (raised, "
                             "restored a little later).")] = 0.001,
    offline_fraction: Annotated[float, typer.Option(
        "--offline-fraction", help="Share of gateways that drop offline once (0-1).")] = 0.0,
    offline_for: Annotated[float, typer.Option(
        "--offline-for", help="Seconds a dropped gateway stays offline.")] = 10.0,
    health_interval: Annotated[float, typer.Option(
        "--health-interval", help="Seconds between health messages.")] = 60.0,
    drain_timeout: Annotated[float, typer.Option(
        "--drain-timeout", help="Seconds to wait after production for every record to be "
                                "delivered (longer than --confirm-timeout).")] = 30.0,
    delete_on: Annotated[str, typer.Option(
        "--delete-on", metavar="stored|puback",
        help="When a gateway deletes a record: at the collector's 'stored' confirmation (as "
             "the agent) or at the broker's PUBACK (as before, for comparison).")] = "stored",
    confirm_timeout: Annotated[float, typer.Option(
        "--confirm-timeout", help="Seconds after its PUBACK before an unconfirmed record is "
                                  "sent again (--delete-on stored).")
    ] = DEFAULT_CONFIRM_TIMEOUT,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the record mix and of the "
                                                     "drops.")] = 0,
    report: Annotated[Path | None, typer.Option(
        "--report", metavar="FILE", help="Write the delivery ledger as JSON.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="No progress lines.")] = False,
) -> None:
    """Simulate a fleet of gateways publishing to a broker, and account for every record."""
    try:
        config = FleetConfig(
            broker=broker, ca=ca, username=username, password=password,
            mqtt=mqtt,  # type: ignore[arg-type]  # checked by FleetConfig
            gateways=gateways, gateways_per_site=gateways_per_site, prefix=prefix, rate=rate,
            total_rate=total_rate, duration=duration, records=records,
            batch_interval=batch_interval, max_batch=max_batch, window=window,
            alarm_rate=alarm_rate, offline_fraction=offline_fraction, offline_for=offline_for,
            health_interval=health_interval, drain_timeout=drain_timeout,
            delete_on=delete_on,  # type: ignore[arg-type]  # checked by FleetConfig
            confirm_timeout=confirm_timeout, seed=seed)
    except ConfigError as e:  # the key is the setting: print the option
        raise _fail(f"--{e.key.replace('_', '-')}: {e.message}") from None
    if report is not None and not report.parent.is_dir():
        raise _fail(f"--report: directory {str(report.parent)!r} does not exist")

    import asyncio
    import gc

    from simulators.fleet.runner import FleetError, run_fleet

    # Records are short-lived and build no cycles; with the default gen-0 threshold (700)
    # the collector runs thousands of times a second and costs 5-10 % of the throughput
    # (bench/bench_fleet.py --gc-default, docs/benchmarks.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        result = asyncio.run(run_fleet(config, progress=None if quiet else _progress))
    except FleetError as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        # asyncio.run cancelled the run; its clean-up closed every socket.
        print("interrupted: no report", file=sys.stderr)
        raise typer.Exit(130) from None
    if report is not None:
        result.write(report)
    _summary(result)
    if not result.ok:
        raise typer.Exit(1)


def _progress(p: Progress) -> None:
    print(f"{p.elapsed_s:6.1f} s  produced {p.produced:,}  delivered {p.delivered:,}  "
          f"online {p.online}/{p.gateways}", file=sys.stderr)


def _summary(result: FleetReport) -> None:
    t = result.totals()
    print(f"gateways {t['gateways']}  produced {t['produced']:,}  acked {t['acked']:,}  "
          f"confirmed {t['confirmed']:,}  delivered {t['delivered']:,}  missing "
          f"{t['missing']:,}  rejected {t['rejected']:,}  resent {t['resent']:,}")
    print(f"alarms {t['alarms']:,}  messages {t['messages']:,}  drops {t['drops']}  "
          f"lost connections {t['lost_connections']}  confirm timeouts {t['timeouts']:,}")
    print(f"{t['records_per_s']:,.0f} records/s, {t['messages_per_s']:,.0f} messages/s over "
          f"{result.elapsed_s:.1f} s")
    for text, n in sorted(result.all_errors().items()):
        print(f"error: {text} (x{n})", file=sys.stderr)
    point = "confirmed by a collector" if result.config.get("delete_on") == "stored" \
        else "acknowledged by the broker"
    print(f"ok: every record {point}" if result.ok else "NOT OK: see the errors and the "
          "missing records above", file=sys.stderr if not result.ok else sys.stdout)
