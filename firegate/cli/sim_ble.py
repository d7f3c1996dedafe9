"""``firegate sim ble``: BTHome sensors on a mocked BlueZ, for an edge agent with no radio.

dbus-python and dbusmock are imported inside the command (through :mod:`.bluez`), so listing the
simulators does not need the ``sim`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from common.config import ConfigError, ConfigErrors
from simulators.ble.scenario import (
    DEFAULT_INTERVAL,
    Scenario,
    load_scenario,
    sensor_from_flag,
)
from simulators.ble.sensors import Advertisement, Simulation

HELP = """Simulate BTHome v2 BLE sensors (fire doors, smoke detectors, pressure, temperature,
manual call points) on a private D-Bus with a mocked BlueZ, until interrupted.

Point the edge agent (or any bleak program) at the printed DBUS_SYSTEM_BUS_ADDRESS.
"""


def register(app: typer.Typer) -> None:
    """Add the ``ble`` command to the ``sim`` group."""
    app.command("ble", help=HELP)(ble)


def _scenario(scenario: Path | None, sensors: list[str], interval: float) -> Scenario:
    if scenario is None and not sensors:
        raise ConfigError("", "give --scenario FILE and/or --sensor KIND:ADDRESS")
    base = load_scenario(scenario) if scenario is not None else Scenario(sensors=())
    extra = []
    problems: list[ConfigError] = []
    for flag in sensors:
        try:
            extra.append(sensor_from_flag(flag, interval=interval))
        except ConfigErrors as exc:
            problems += exc.errors
    taken = {s.address for s in base.sensors}
    for sensor in extra:
        if sensor.address in taken:
            problems.append(ConfigError(f"--sensor {sensor.address}", "declared twice"))
        taken.add(sensor.address)
    if problems:
        raise ConfigErrors(problems)
    return Scenario(sensors=base.sensors + tuple(extra), events=base.events,
                    adapter=base.adapter)


def ble(
    *,
    scenario: Annotated[Path | None, typer.Option(
        "--scenario", "-s", exists=True, dir_okay=False,
        help=r"TOML scenario file; only its \[ble] table is read.")] = None,
    sensor: Annotated[list[str] | None, typer.Option(
        "--sensor", metavar="KIND:ADDRESS",
        help="Add a sensor, e.g. door:A4:C1:38:00:00:01 (kinds: door, smoke, pressure, "
             "temperature, callpoint). Repeatable.")] = None,
    speed: Annotated[float, typer.Option(
        min=0.01, help="Time scale: 10 plays the scenario ten times faster.")] = 1.0,
    interval: Annotated[float, typer.Option(
        min=0.02, help="Advertising interval (s) of --sensor sensors.")] = DEFAULT_INTERVAL,
    duration: Annotated[float | None, typer.Option(
        min=0.0, help="Stop after this many simulated seconds (default: until Ctrl-C).")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Do not print each advertisement.")] = False,
) -> None:
    try:
        plan = _scenario(scenario, sensor or [], interval)
    except ConfigError as exc:  # every problem found, one per line
        for error in exc.errors if isinstance(exc, ConfigErrors) else (exc,):
            typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None

    from simulators.ble.bluez import BluezMockError, MockBluez
    from simulators.ble.runner import BluezPublisher, run_simulation

    bluez = MockBluez(adapter=plan.adapter)
    try:
        bluez.start()
    except BluezMockError as exc:
        typer.echo(f"cannot start the mocked BlueZ: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        typer.echo(f"mocked BlueZ (adapter {plan.adapter}) on a private D-Bus; "
                   f"pids {' '.join(map(str, bluez.pids))}")
        typer.echo("for the edge agent or any bleak program:")
        typer.echo(f"  export DBUS_SYSTEM_BUS_ADDRESS='{bluez.address}'")
        for s in plan.sensors:
            typer.echo(f"  sensor {s.address} {s.kind:<11} {s.name} every {s.interval:g} s"
                       f"{' (encrypted)' if s.key else ''}")
        sys.stdout.flush()
        publisher = BluezPublisher(bluez)

        def publish(advert: Advertisement) -> None:
            publisher(advert)
            if not quiet:
                typer.echo(f"t={advert.at:8.2f} {advert.address} {advert.name}: {advert.summary}")

        sim = Simulation(plan.sensors, plan.events)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_main(run_simulation(sim, publish, speed=speed, until=duration)))
        typer.echo(f"stopped after {publisher.sent} advertisements")
    finally:
        bluez.stop()


async def _main(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work``; SIGTERM cancels it like Ctrl-C, so the bus processes are always stopped."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
