"""``firegate sim uitd-fleet``: many simulated UITDs dialing one GB/T 26875.3 centre.

The simulator (asyncio, the panel engine) is imported inside the command, so building the
``firegate`` command tree stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from common.config import ConfigError, Table, read_toml

if TYPE_CHECKING:
    from simulators.uitd.config import FleetSpec
    from simulators.uitd.ledger import FleetReport
    from simulators.uitd.runner import Progress


def register(app: typer.Typer) -> None:
    """Add the ``uitd-fleet`` command to the ``firegate sim`` group."""
    app.command("uitd-fleet", no_args_is_help=False)(uitd_fleet)


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def _burst(text: str) -> dict[str, Any]:
    """``AT[:FRACTION[:ALARMS]]``."""
    parts = text.split(":")
    try:
        if not 1 <= len(parts) <= 3:
            raise ValueError
        out: dict[str, Any] = {"at": float(parts[0])}
        if len(parts) > 1:
            out["fraction"] = float(parts[1])
        if len(parts) > 2:
            out["alarms"] = int(parts[2])
    except ValueError:
        raise ConfigError("bursts", f"must be AT[:FRACTION[:ALARMS]], got {text!r}") from None
    return out


def _drop(text: str) -> dict[str, Any]:
    """``AT:FRACTION[:DURATION]``."""
    parts = text.split(":")
    try:
        if not 2 <= len(parts) <= 3:
            raise ValueError
        out: dict[str, Any] = {"at": float(parts[0]), "fraction": float(parts[1])}
        if len(parts) > 2:
            out["duration"] = float(parts[2])
    except ValueError:
        raise ConfigError("drops", f"must be AT:FRACTION[:DURATION], got {text!r}") from None
    return out


def build_spec(scenario: Path | None, flags: dict[str, Any]) -> FleetSpec:
    """The ``[uitd_fleet]`` table of ``scenario`` with ``flags`` (keys as in the table) over
    it; an error in a flag names the flag (``--rate``), one in the file names the file."""
    from simulators.uitd.config import SECTION, parse_spec

    data: dict[str, Any] = {}
    if scenario is not None:
        raw = read_toml(scenario)
        try:
            table = Table(raw).table(SECTION)
        except ConfigError as exc:
            raise exc.within(scenario) from None
        data = dict(table.data) if table is not None else {}
    for key in ("bursts", "drops"):
        if key in flags:
            flags[key] = list(data.get(key, [])) + flags[key]
    data.update(flags)
    try:
        return parse_spec(data)
    except ConfigError as exc:
        key = exc.key.removeprefix(f"{SECTION}.")
        top, _, field = key.partition(".")
        top = top.split("[")[0]
        if top in flags:
            flag = {"bursts": "burst", "drops": "drop", "profiles": "profile"}.get(top, top)
            message = f"{field}: {exc.message}" if field else exc.message
            raise ConfigError(f"--{flag.replace('_', '-')}", message) from None
        raise exc.within(scenario) if scenario is not None else exc from None


def uitd_fleet(
    centre: Annotated[str | None, typer.Option(
        "--centre", metavar="HOST:PORT", help="The monitoring centre to dial (default "
                                              "127.0.0.1:9000).")] = None,
    uitds: Annotated[int | None, typer.Option("--uitds", "-n",
                                              help="Number of UITDs (default 10).")] = None,
    scenario: Annotated[Path | None, typer.Option(
        "--scenario", "-s", metavar="FILE", help="TOML file with a \\[uitd_fleet] table; "
                                                 "the flags override it.")] = None,
    first_address: Annotated[str | None, typer.Option(
        "--first-address", metavar="ADDRESS", help="Address of UITD 0 (0x + hex or decimal); "
                                                   "UITD i has this + i.")] = None,
    profile: Annotated[list[str] | None, typer.Option(
        "--profile", help="Dialect; repeat for a mix, assigned round-robin by index.")] = None,
    state_interval: Annotated[float | None, typer.Option(
        "--state-interval", help="Seconds between a UITD's state uploads (type 21 + 1); "
                                 "0 = off (default 60).")] = None,
    rate: Annotated[float | None, typer.Option(
        "--rate", help="Extra analog uploads per second over the whole fleet (default 0).")
    ] = None,
    burst: Annotated[list[str] | None, typer.Option(
        "--burst", metavar="AT[:FRACTION[:ALARMS]]",
        help="A fire alarm burst at AT s: FRACTION of the UITDs (1) raise ALARMS (1) each.")
    ] = None,
    drop: Annotated[list[str] | None, typer.Option(
        "--drop", metavar="AT:FRACTION[:DURATION]",
        help="At AT s, FRACTION of the UITDs lose their link for DURATION s (5).")] = None,
    slow_fraction: Annotated[float | None, typer.Option(
        "--slow-fraction", help="Share of UITDs on a slow line (paced at --slow-baud).")
    ] = None,
    slow_baud: Annotated[int | None, typer.Option(
        "--slow-baud", help="Baud rate of the slow lines (default 1200).")] = None,
    confirm_timeout: Annotated[float | None, typer.Option(
        "--confirm-timeout", help="Seconds without a confirm before a resend (<= 10).")
    ] = None,
    retries: Annotated[int | None, typer.Option("--retries", help="Resends (default 3).")
                       ] = None,
    connect_rate: Annotated[float | None, typer.Option(
        "--connect-rate", help="New connections per second while starting (default 1000).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of every random choice.")
                    ] = None,
    duration: Annotated[float, typer.Option(
        "--duration", help="Seconds to run before draining.")] = 10.0,
    drain_timeout: Annotated[float, typer.Option(
        "--drain-timeout", help="Seconds to wait for every upload to be confirmed.")] = 30.0,
    report: Annotated[Path | None, typer.Option(
        "--report", metavar="FILE", help="Write the ledger (with every fire alarm) as JSON.")
    ] = None,
    print_uitd_list: Annotated[bool, typer.Option(
        "--print-uitd-list", help="Print the collector's \\[\\[gb26875.uitd]] tables for "
                                  "this fleet and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Simulate a fleet of UITDs dialing a GB/T 26875.3 centre, and account for every upload."""
    flags: dict[str, Any] = {}
    try:
        if first_address is not None:
            try:
                flags["first_address"] = int(first_address, 0)
            except ValueError:
                raise ConfigError("--first-address", f"must be 0x + hex digits or a decimal "
                                                     f"integer, got {first_address!r}") from None
        for key, value in (("centre", centre), ("uitds", uitds), ("profiles", profile),
                           ("state_interval", state_interval), ("rate", rate),
                           ("slow_fraction", slow_fraction), ("slow_baud", slow_baud),
                           ("confirm_timeout", confirm_timeout), ("retries", retries),
                           ("connect_rate", connect_rate), ("seed", seed)):
            if value is not None and value != []:
                flags[key] = value
        if burst:
            flags["bursts"] = [_burst(b) for b in burst]
        if drop:
            flags["drops"] = [_drop(d) for d in drop]
        spec = build_spec(scenario, flags)
    except ConfigError as exc:
        key = exc.key
        if key in ("bursts", "drops"):
            exc = ConfigError(f"--{key[:-1]}", exc.message)
        raise _fail(str(exc)) from None
    if not duration >= 0:
        raise _fail(f"--duration: must be at least 0, got {duration:g}")
    if not drain_timeout >= 0:
        raise _fail(f"--drain-timeout: must be at least 0, got {drain_timeout:g}")
    if report is not None and not report.parent.is_dir():
        raise _fail(f"--report: directory {str(report.parent)!r} does not exist")
    if print_uitd_list:
        from firegate.toml_text import dumps_toml
        from simulators.uitd.config import uitd_entries

        print(dumps_toml({"gb26875": {"uitd": uitd_entries(spec)}},
                         f"[[gb26875.uitd]] for a fleet of {spec.uitds} simulated UITDs "
                         f"(firegate sim uitd-fleet)"), end="")
        return
    _run(spec, duration, drain_timeout, report, quiet)


def _run(spec: FleetSpec, duration: float, drain_timeout: float, report: Path | None,
         quiet: bool) -> None:
    import asyncio
    import gc

    from simulators.uitd.runner import FleetError, run_fleet

    print(f"dialing tcp {spec.centre} uitds {spec.uitds} first 0x{spec.first_address:012x} "
          f"profiles {','.join(spec.profiles)}", flush=True)
    # Thousands of engines are millions of long-lived objects; with the default gen-0
    # threshold (700) the garbage collector walks them often enough to stall the loop, and
    # that stall would show as confirm latency. The fleet makes few reference cycles.
    gc.set_threshold(50_000, 20, 20)
    try:
        result = asyncio.run(run_fleet(spec, duration=duration, drain_timeout=drain_timeout,
                                       progress=None if quiet else _progress, freeze=True))
    except FleetError as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        print("interrupted: no report", file=sys.stderr)
        raise typer.Exit(130) from None
    if report is not None:
        result.write(report)
    _summary(result)
    if not result.ok:
        raise typer.Exit(1)


def _progress(p: Progress) -> None:
    print(f"{p.elapsed_s:6.1f} s  connected {p.connected}/{p.uitds}  uploads {p.uploads:,}  "
          f"confirmed {p.confirmed:,}  fire alarms {p.fire_alarms:,}", file=sys.stderr)


def _summary(result: FleetReport) -> None:
    t = result.totals()
    lat = result.ledger.latency_summary()
    print(f"uitds {t['uitds']}  connected {t['connected']}  uploads {t['uploads']:,}  "
          f"confirmed {t['confirmed']:,}  resends {t['resends']:,}  failed {t['failed']:,}  "
          f"pending {t['pending']:,}")
    print(f"fire alarms {t['fire_alarms']:,} (confirmed {t['fire_alarms_confirmed']:,})  "
          f"connects {t['connects']:,}  drops {t['drops']:,}  lost {t['lost']:,}  "
          f"dial failures {t['dial_failed']:,}")
    if lat["count"]:
        print(f"confirm latency ms: p50 {lat['p50_ms']}  p99 {lat['p99_ms']}  max "
              f"{lat['max_ms']}  over {lat['count']:,} confirms")
    cmds = result.commands()
    if cmds:
        print("answered: " + "  ".join(f"{k} {v}" for k, v in cmds.items()))
    for text, n in sorted(result.ledger.errors.items()):
        print(f"error: {text} (x{n})", file=sys.stderr)
    print("ok: every upload confirmed" if result.ok else
          "NOT OK: uploads unconfirmed or failed", file=sys.stdout if result.ok else sys.stderr)
