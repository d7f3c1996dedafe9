"""``firegate provision``: set up one gateway (a Raspberry Pi agent or an ESP32) from a site file.

Writes the gateway's files into ``--out`` (secrets with mode 0600), prints the broker-side
entries (a Mosquitto password line and ACL lines binding the gateway to its own topics) and,
for a Pi, optionally installs the agent's systemd unit (``edge/firegate-agent.service``).
``--dry-run`` prints every file it would write and every step, and writes nothing. Exit status
2 for a bad site file or option (the message names the key), 1 when a file cannot be written.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["UNIT_FILE", "provision", "register"]

UNIT_FILE = Path(str(resources.files("edge") / "firegate-agent.service"))
"""The agent's systemd unit, shipped with the agent package (``edge/``)."""
_MARKERS = ("config.json", "gateway.toml")  # a directory holding one is already provisioned


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def provision(
    site: Annotated[Path, typer.Option("--site", "-s", help="The site file (TOML), see "
                                       "firmware/site.example.toml.")],
    kind: Annotated[str, typer.Option("--kind", "-k", help="agent (Raspberry Pi) or firmware "
                                      "(ESP32).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for the files "
                                             "[default: provisioned/<gateway id>].")] = None,
    gateway_id: Annotated[str | None, typer.Option("--gateway-id", help="Use this id instead "
                                                   "of the site file's or a generated one.")]
    = None,
    client_cert: Annotated[bool, typer.Option("--client-cert", help="Also issue a client "
                                              "certificate from the site CA.")] = False,
    config_dir: Annotated[Path | None, typer.Option("--config-dir", help="agent: where the "
                                                    "files will live on the Pi (the config "
                                                    "refers to them there) [default: --out].")]
    = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="firmware: data directory "
                                                 "of the MicroPython unix port (tests, bench).")]
    = None,
    install_unit: Annotated[bool, typer.Option("--install-unit", help="agent: install the "
                                               "systemd unit into --unit-dir.")] = False,
    unit_dir: Annotated[Path, typer.Option("--unit-dir", help="Where --install-unit puts "
                                           "firegate-agent.service.")]
    = Path("/etc/systemd/system"),
    force: Annotated[bool, typer.Option("--force", help="Replace an already provisioned "
                                        "--out directory (its credentials are lost).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be written and "
                                          "done; write nothing.")] = False,
) -> None:
    """Provision one gateway: id, MQTT credentials, its config, the broker's entries."""
    from common.config import ConfigError
    from firegate.provision import load_site, new_credentials
    from firegate.provision import provision as make

    if kind not in ("agent", "firmware"):
        raise _fail(f"--kind: must be 'agent' or 'firmware', got {kind!r}")
    if install_unit and kind != "agent":
        raise _fail("--install-unit: only for --kind agent (an ESP32 has no systemd)")
    try:
        cfg = load_site(site)
        creds = new_credentials(cfg, gateway_id)
        gw = creds.gateway_id
        out = out if out is not None else Path("provisioned") / gw
        # the agent's config refers to its files where they will be: by default, right here
        where = (config_dir or out).resolve()
        result = make(cfg, "agent" if kind == "agent" else "firmware", credentials=creds,
                      client_cert=client_cert, config_dir=where, firmware_data_dir=data_dir)
    except ConfigError as exc:
        raise _fail(f"{site}: {exc}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise _fail(f"{site}: {exc}") from None
    typer.echo(f"gateway {gw} (site {cfg.site}, {kind}){' [dry run]' if dry_run else ''}")
    taken = [m for m in _MARKERS if (out / m).exists()]
    if taken and not force:
        raise _fail(f"{out} already holds a provisioned gateway ({taken[0]}); use --force to "
                    f"replace it (its old credentials stop working once the broker entries "
                    f"are replaced)")
    _write(out, result.files, dry_run)
    _broker_entries(result.passwd_line, result.acl, out)
    if install_unit:
        _install_unit(unit_dir, dry_run)
    _next_steps(kind, gw, out, install_unit, config_dir)


def _write(out: Path, files: dict[str, tuple[bytes, int]], dry_run: bool) -> None:
    if not dry_run:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail(f"cannot create {out}: {exc.strerror}", 1) from None
    for name, (data, mode) in files.items():
        path = out / name
        if dry_run:
            typer.echo(f"would write {path} ({len(data)} bytes, mode {mode:o})")
            continue
        try:
            # create with the final mode: a secret is never readable by others, not even briefly
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(path, mode)
        except OSError as exc:
            raise _fail(f"cannot write {path}: {exc.strerror}", 1) from None
        typer.echo(f"wrote {path}")


def _broker_entries(passwd_line: str, acl: list[str], out: Path) -> None:
    typer.echo("")
    typer.echo("Broker (Mosquitto 2.0) entries for this gateway:")
    typer.echo(f"  add to the password_file ({out / 'mosquitto.passwd'}):")
    typer.echo(f"    {passwd_line}")
    typer.echo(f"  add to the acl_file ({out / 'mosquitto.acl'}):")
    for line in acl:
        typer.echo(f"    {line}")
    typer.echo("  then reload the broker (systemctl reload mosquitto, or kill -HUP its pid)")


def _install_unit(unit_dir: Path, dry_run: bool) -> None:
    target = unit_dir / UNIT_FILE.name
    if dry_run:
        typer.echo(f"would install {UNIT_FILE} as {target}")
        return
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(UNIT_FILE, target)
        os.chmod(target, 0o644)
    except OSError as exc:
        raise _fail(f"cannot install {target}: {exc.strerror}", 1) from None
    typer.echo(f"installed {target}")


def _next_steps(kind: str, gw: str, out: Path, unit: bool, config_dir: Path | None) -> None:
    typer.echo("")
    typer.echo("Next steps:")
    if kind == "firmware":
        typer.echo(f"  flash the ESP32 with firmware/flash.sh (it copies {out / 'config.json'})")
    else:
        conf = Path("/etc/firegate/gateway.toml")
        if config_dir is None and out.resolve() / "gateway.toml" != conf:
            typer.echo(f"  copy {out}/* to /etc/firegate/ on the Pi (the unit reads {conf}; "
                       f"or provision with --config-dir /etc/firegate)")
        typer.echo(f"  firegate check-config {(config_dir or out) / 'gateway.toml'}")
        if unit:
            typer.echo("  sudo useradd --system --home /var/lib/firegate --groups dialout "
                       "firegate")
            typer.echo("  sudo systemctl daemon-reload && sudo systemctl enable --now "
                       "firegate-agent")
    typer.echo(f"  watch it arrive: mosquitto_sub -v -t 'firegate/v1/{gw}/#' (as a collector)")


def register(app: typer.Typer) -> None:
    """Add ``firegate provision`` to the root command."""
    app.command("provision")(provision)


if __name__ == "__main__":  # `python -m firegate.cli.provision ...`, before it is mounted
    _app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(_app)
    _app.command("version", hidden=True)(lambda: None)  # keeps `provision` a subcommand
    _app()
