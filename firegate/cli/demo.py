"""``firegate demo``: the README's main job, the whole pipeline on simulators.

Starts a private Mosquitto (or uses ``--broker``), the collector on the embedded SQLite store
(or ``--influx``), the panel, Modbus and BLE simulators playing ``firegate/demo/scenario.toml``
once a minute, and the edge agent wired to them, then shows what happens until Ctrl-C or
``--duration``. Every child is stopped by PID on the way out; the work directory is kept for
``firegate status`` / ``events`` / ``collector query``. ``docs/demo.md`` is the guide.

``--codec`` plays the former demo instead: a GB/T 26875.3 conversation in memory
(``edge/cli/demo_codec.py``), no process started.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from firegate.demo.display import Display, Header
    from firegate.demo.plan import Story
    from firegate.demo.stack import Running, Stack
    from firegate.demo.watch import Observer, Tap

__all__ = ["demo"]

DEFAULT_CYCLES = 240  # without --duration the story is written out for 240 cycles (4 h at 60 s)
DRAIN_S = 15.0  # at the end, wait at most this long for the outbox and the collector to empty


@dataclass(frozen=True, slots=True)
class Options:
    """The command line, checked."""

    duration: float | None
    workdir: Path | None
    scenario: Path
    broker: str | None
    username: str | None
    password: str | None
    influx: str | None
    influx_token: str | None
    influx_org: str
    influx_bucket: str
    ble: bool


def demo(
    duration: Annotated[float | None, typer.Option(
        "--duration", min=10, metavar="S",
        help="Stop after S seconds of the story (default: until Ctrl-C).")] = None,
    workdir: Annotated[Path | None, typer.Option(
        "--workdir", metavar="DIR", help="Work directory, new or empty (default: a new "
        "temporary one). Kept at the end.")] = None,
    broker: Annotated[str | None, typer.Option(
        "--broker", metavar="URL", help="Use this MQTT 5 broker (mqtt://HOST:PORT or "
        "mqtts://HOST:PORT) instead of a private Mosquitto.")] = None,
    username: Annotated[str | None, typer.Option("--username", help="MQTT user name.")] = None,
    password: Annotated[str | None, typer.Option("--password", help="MQTT password.")] = None,
    influx: Annotated[str | None, typer.Option(
        "--influx", metavar="URL", help="Store into this InfluxDB (v2 write API) instead of "
        "the embedded SQLite store.")] = None,
    influx_token: Annotated[str | None, typer.Option("--influx-token", metavar="T")] = None,
    influx_org: Annotated[str, typer.Option("--influx-org", metavar="O")] = "firegate",
    influx_bucket: Annotated[str, typer.Option("--influx-bucket", metavar="B")] = "firegate",
    scenario: Annotated[Path | None, typer.Option(
        "--scenario", metavar="FILE", exists=True, dir_okay=False,
        help="The story (default: firegate/demo/scenario.toml).")] = None,
    no_ble: Annotated[bool, typer.Option("--no-ble", help="Leave the BLE sensors out.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON summary on stdout at the end (the view goes to "
        "stderr).")] = False,
    summary_json: Annotated[Path | None, typer.Option(
        "--summary-json", metavar="FILE", help="Write the JSON summary to FILE.")] = None,
    codec: Annotated[bool, typer.Option(
        "--codec", help="Only the GB/T 26875.3 codec conversation, in memory.")] = False,
) -> None:
    """Run the whole pipeline on simulators and show it live (no server needed)."""
    if codec:
        from firegate.cli.demo_codec import run

        raise typer.Exit(run())
    from rich.console import Console

    from firegate.demo.plan import DEFAULT_SCENARIO

    if (username or password) and broker is None:
        typer.echo("error: --username/--password need --broker (the private broker is "
                   "anonymous)", err=True)
        raise typer.Exit(2)
    if influx is None and influx_token is not None:
        typer.echo("error: --influx-token needs --influx URL", err=True)
        raise typer.Exit(2)
    opts = Options(duration, workdir, scenario or DEFAULT_SCENARIO, broker, username, password,
                   influx, influx_token, influx_org, influx_bucket, not no_ble)
    code, summary = _run(opts, Console(stderr=as_json, highlight=False))
    if summary:
        text = json.dumps(summary, ensure_ascii=False, indent=2)
        if summary_json is not None:
            summary_json.write_text(text + "\n", encoding="utf-8")
        if as_json:
            sys.stdout.write(text + "\n")
    raise typer.Exit(code)


class _Stop(Exception):
    """SIGTERM: stop as on Ctrl-C."""


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise _Stop


def _run(opts: Options, console: Console) -> tuple[int, dict[str, Any]]:
    from firegate.demo.display import Display
    from firegate.demo.plan import DemoError, Layout, load_story
    from firegate.demo.stack import Stack
    from firegate.demo.summary import summarize
    from firegate.demo.watch import Observer
    from firegate.textsafe import escaped

    try:
        story = load_story(opts.scenario)
        layout = Layout(_workdir(opts.workdir))
    except DemoError as exc:
        console.print(f"[red]error:[/] {escaped(exc)}")
        return 2, {}
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    stack = Stack(layout)
    tap: Tap | None = None
    observer: Observer | None = None
    running: Running | None = None
    problems: list[str] = []
    outcome = "duration reached"
    try:
        running, tap = _start(opts, story, stack)
        observer = Observer(tap=tap, site=story.site, gateway=story.gateway,
                            registry=layout.collector_dir / "registry.sqlite",
                            agent_state=layout.edge_dir / "state.db", store=running.store,
                            console=running.console)
        with Display(console, _header(story, running)) as display:
            _watch(opts, stack, observer, display, running.t0)
    except KeyboardInterrupt:
        outcome = "stopped (Ctrl-C)"
    except _Stop:
        outcome = "stopped (SIGTERM)"
    except DemoError as exc:
        outcome = "failed"
        problems.append(str(exc))
        console.print(f"[red]error:[/] {escaped(exc)}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if tap is not None:
            tap.close()
        console.print("stopping every part of the pipeline ...")
        stack.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    for child in stack.children:
        if child.left_out:
            continue
        if child.killed or child.proc.returncode not in (0, -signal.SIGTERM):
            problems.append(f"{child.name} exited with status {child.proc.returncode}"
                            f"{' after SIGKILL' if child.killed else ''}; see {child.log}")
    code = 1 if problems else 0
    summary = summarize(observer, stack, layout, story, opts.scenario, running,
                        outcome=outcome, problems=problems, exit_code=code)
    _next_steps(console, summary, layout.root)
    return code, summary


def _workdir(path: Path | None) -> Path:
    from firegate.demo.plan import DemoError

    if path is None:
        return Path(tempfile.mkdtemp(prefix="firegate-demo-"))
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DemoError(f"--workdir {path}: not an empty directory; give a new or empty one "
                        "(a second run in the same directory would mix two runs' data)")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _start(opts: Options, story: Story, stack: Stack) -> tuple[Running, Tap]:
    """Broker, collector and simulators at once, then the view subscribes, then the agent
    wired to the simulators starts (the last child: no thread runs before it is started)."""
    from edge.config import ConfigError
    from edge.config.load import load_config
    from firegate.demo import stack as st
    from firegate.demo.plan import (
        Broker,
        DemoError,
        Influx,
        agent_config,
        collector_config,
        console_access,
        dumps_toml,
        repeated,
    )
    from firegate.demo.stack import Running
    from firegate.demo.watch import Tap

    layout = stack.layout
    broker = Broker(opts.broker, opts.username, opts.password) if opts.broker \
        else st.start_broker(stack)
    influx = Influx(opts.influx, opts.influx_token, opts.influx_org, opts.influx_bucket) \
        if opts.influx else None
    console = console_access(layout)  # the collector's web console, one operator token
    layout.collector_toml.write_text(dumps_toml(collector_config(layout, broker, influx,
                                                                 console),
                                                "written by firegate demo"), encoding="utf-8")
    cycles = math.ceil(opts.duration / story.period) + 1 if opts.duration else DEFAULT_CYCLES
    layout.scenario.write_text(dumps_toml(repeated(story, cycles), (
        f"{opts.scenario}, its events repeated {cycles} times every {story.period:g} s; "
        "written by firegate demo")), encoding="utf-8")
    collector = st.start_collector(stack)
    ble_note = None if story.has("ble") else "not in the scenario"
    if ble_note is None and not opts.ble:
        ble_note = "left out (--no-ble)"
    if ble_note is None and (reason := st.ble_unavailable()) is not None:
        ble_note = f"left out: {reason}"
    t0 = time.monotonic()  # the simulators' scenario clocks start now
    sims = {name: st.start_simulator(stack, name, "--rtu" if name == "modbus" else "--pty")
            for name in ("panel", "modbus") if story.has(name)}
    ble = st.start_ble(stack) if ble_note is None else None
    st.ready(collector)
    ports = {name: st.listening_address(child) for name, child in sims.items()}
    bus = None
    if ble is not None:
        try:
            bus = st.ble_bus(ble)
        except DemoError as exc:  # no BLE on this machine: run without it, and say so
            ble_note = f"left out: the BLE simulator did not start ({exc})"
            ble.left_out = True
            stack.stop_one(ble)
    gateway = agent_config(story, layout, broker, panel_port=ports.get("panel"),
                           modbus_port=ports.get("modbus"), ble=bus is not None)
    layout.gateway_toml.write_text(dumps_toml(gateway, "written by firegate demo"),
                                   encoding="utf-8")
    try:
        load_config(layout.gateway_toml)
    except ConfigError as exc:
        raise DemoError(f"{layout.gateway_toml}: {exc}") from None
    tap = Tap(broker, story.gateway)
    tap.subscribe()
    st.start_agent(stack, bus)
    tap.start()
    store = None if influx else layout.collector_dir / "store.sqlite3"
    return Running(broker, influx, store, ble_note, t0, console), tap


def _header(story: Story, running: Running) -> Header:
    from firegate.demo.display import Header

    labels = {"panel": "fire panel (GB/T 26875.3 on a serial pty)",
              "modbus": "Modbus RTU pressure + level (pty)"}
    parts = [label for name, label in labels.items() if story.has(name)]
    if running.ble_note is None:
        parts.append("BLE sensors (BTHome, mocked BlueZ)")
    broker = running.broker.url + (" (private mosquitto)" if running.broker.embedded else "")
    store = f"InfluxDB {running.influx.url} bucket {running.influx.bucket}" if running.influx \
        else f"SQLite {running.store}"
    return Header(story.site, story.gateway, broker, store,
                  " + ".join(parts) + f" -> agent {story.gateway} -> broker -> collector -> "
                  "store", story.period,
                  None if running.ble_note is None else f"BLE {running.ble_note}",
                  None if running.console is None else
                  f"web console {running.console.url}/  user {running.console.user}  token "
                  f"{running.console.token}  (also in {running.console.token_file})")


def _watch(opts: Options, stack: Stack, observer: Observer, display: Display,
           t0: float) -> None:
    """Refresh the view until the duration is over (or Ctrl-C), then let the pipeline
    drain so the summary counts everything that was sent."""
    from firegate.demo.plan import DemoError

    while True:
        new = observer.poll()
        display.update(observer.view, new, time.monotonic() - t0)
        failed = stack.failed()
        if failed is not None:
            raise DemoError(f"{failed.name} stopped unexpectedly (exit status "
                            f"{failed.proc.returncode}); {failed.log}:\n{failed.log_tail()}")
        if opts.duration is not None and time.monotonic() - t0 >= opts.duration:
            break
        time.sleep(0.5)
    # Drained: the agent's outbox is empty and the collector holds nothing, both seen in
    # snapshots taken after the end (each is refreshed every second).
    deadline = time.monotonic() + DRAIN_S
    time.sleep(1.5)
    while True:
        new = observer.poll()
        view = observer.view
        display.update(view, new, time.monotonic() - t0,
                       "finishing: waiting for the outbox and the collector to empty")
        if (view.outbox_depth == 0 and not view.collector.get("queue_depth")) \
                or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _next_steps(console: Console, summary: dict[str, Any], root: Path) -> None:
    from firegate.textsafe import escaped

    stored = summary.get("stored", {})
    dead = stored.get("dead_letters") or {}
    console.print(
        f"\n[bold]{summary['outcome']}[/] after {summary['duration_s']:.0f} s: "
        f"{stored.get('records', 0)} records stored, {stored.get('duplicates', 0)} duplicates, "
        f"dead letters {', '.join(f'{k} {v}' for k, v in dead.items()) or 'none'}; site "
        f"colours seen: {', '.join(summary['site']['colours_seen']) or 'none'}",
        soft_wrap=True)
    for problem in summary["problems"]:
        console.print(f"[red]problem:[/] {escaped(problem)}")  # may quote a log
    gw, co = root / "gateway.toml", root / "collector.toml"
    console.print(f"\nThe work directory is kept: {root}\n"
                  f"  firegate status --config {gw}        # the gateway: links, outbox\n"
                  f"  firegate events --config {gw}        # what it saw\n"
                  f"  firegate sensors --config {gw}       # its latest values\n"
                  f"  firegate collector status --config {co}\n"
                  + (f"  firegate collector query --config {co} -m fg_event\n"
                     if summary["store"].get("kind") == "sqlite" else "") +
                  f"  logs: {root / 'logs'}", highlight=False, soft_wrap=True)
