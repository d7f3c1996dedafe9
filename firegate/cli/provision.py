"""``firegate provision``: set up one gateway (a Raspberry Pi agent or an ESP32), or a
collector's broker user (``--kind collector``), from a site file.

Writes the files into ``--out``, prints the broker-side entries (a Mosquitto password line and
ACL lines binding the gateway to its own topics; the broker's ``mosquitto-firegate.conf``) and,
for a Pi, optionally installs the agent's systemd unit (``edge/firegate-agent.service``).
``--dry-run`` prints every file it would write and every step, and writes nothing. Exit status
2 for a bad site file or option (the message names the key), 1 when a file cannot be written.

Files are written through no link (:func:`write_file`). Secrets are 0600, except the agent's
(``gateway.toml``, ``mqtt-password``, ``client.key``): 0640 with the group ``--group``
(``firegate``, the unit's ``Group=``), so the agent, running as ``firegate``, can read them
(``ExecStartPre=firegate check-config`` reads the password file). If that group does not
exist here (provisioning on a PC for a Pi), they are written 0600 and the next steps say how
to install them; ``--install-unit`` requires the group.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import secrets
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["UNIT_FILE", "provision", "register", "write_file"]

UNIT_FILE = Path(str(resources.files("edge") / "firegate-agent.service"))
"""The agent's systemd unit, shipped with the agent package (``edge/``)."""
# a directory holding one is already provisioned (new credentials would orphan the old)
_MARKERS = ("config.json", "gateway.toml", "mqtt-password")
_SERVICE_READABLE = 0o640  # firegate.provision.SERVICE_READABLE: root:<--group>
_USERADD = "sudo useradd --system --home /var/lib/firegate --groups dialout firegate"


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def provision(
    site: Annotated[Path, typer.Option("--site", "-s", help="The site file (TOML), see "
                                       "firmware/site.example.toml.")],
    kind: Annotated[str, typer.Option("--kind", "-k", help="agent (Raspberry Pi), firmware "
                                      "(ESP32) or collector (its own broker user).")],
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
    collector_id: Annotated[str | None, typer.Option(
        "--collector-id", help="collector: its [collector] id; the MQTT user (and client id) "
        "is firegate-collector-<id> [default: collector-1].")] = None,
    group: Annotated[str, typer.Option("--group", help="agent: the group of the service user "
                                       "that reads the agent's secrets (name or gid).")]
    = "firegate",
    force: Annotated[bool, typer.Option("--force", help="Replace an already provisioned "
                                        "--out directory (its credentials are lost).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be written and "
                                          "done; write nothing.")] = False,
) -> None:
    """Provision one gateway: id, MQTT credentials, its config, the broker's entries."""
    from common.config import ConfigError
    from firegate.provision import load_site, new_credentials, provision_collector
    from firegate.provision import provision as make

    if kind not in ("agent", "firmware", "collector"):
        raise _fail(f"--kind: must be 'agent', 'firmware' or 'collector', got {kind!r}")
    if install_unit and kind != "agent":
        raise _fail("--install-unit: only for --kind agent (an ESP32 has no systemd)")
    if collector_id is not None and kind != "collector":
        raise _fail("--collector-id: only for --kind collector")
    gid = _group_id(group) if kind == "agent" else None
    if install_unit and gid is None:
        raise _fail(f"--group: the service group {group!r} does not exist; create the agent's "
                    f"user first ({_USERADD}) or name its group with --group")
    try:
        cfg = load_site(site)
        if kind == "collector":
            result = provision_collector(cfg, collector_id)
            creds = result.credentials
            gw = creds.gateway_id
            out = out if out is not None else Path("provisioned") / gw
        else:
            creds = new_credentials(cfg, gateway_id)
            gw = creds.gateway_id
            out = out if out is not None else Path("provisioned") / gw
            # the agent's config refers to its files where they will be: by default, here
            where = (config_dir or out).resolve()
            result = make(cfg, "agent" if kind == "agent" else "firmware", credentials=creds,
                          client_cert=client_cert, config_dir=where,
                          firmware_data_dir=data_dir)
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
    _write(out, result.files, dry_run, gid, group)
    _broker_entries(result.passwd_line, result.acl, out)
    if install_unit:
        _install_unit(unit_dir, dry_run)
    _next_steps(kind, gw, out, install_unit, config_dir,
                [n for n, (_, m) in result.files.items() if m == _SERVICE_READABLE]
                if gid is None else [], group)


def _group_id(group: str) -> int | None:
    """The gid of ``group`` (a name, or a number taken as is); None if no such group."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def write_file(path: Path, data: bytes, mode: int, gid: int | None = None) -> None:
    """Write ``path`` through no link, its group and mode set before its content.

    A new file beside it (``O_CREAT | O_EXCL | O_NOFOLLOW``, created 0600) gets the group
    ``gid`` and ``mode``, then the content (fsynced), then replaces ``path`` by rename: an
    existing file, or a hard link planted there, is replaced and never written through, and
    nobody holds it open from before. A symbolic link at ``path`` is refused (ELOOP)."""
    if path.is_symlink():
        raise OSError(errno.ELOOP, "a symbolic link is there (refused, not followed)")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        try:
            if gid is not None:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write(out: Path, files: dict[str, tuple[bytes, int]], dry_run: bool, gid: int | None,
           group: str) -> None:
    if not dry_run:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail(f"cannot create {out}: {exc.strerror}", 1) from None
    for name, (data, wanted) in files.items():
        path = out / name
        mode, owner = wanted, None
        if wanted == _SERVICE_READABLE:
            if gid is None:  # no service group here: owner only, installed later (next steps)
                mode = 0o600
            else:
                owner = gid
        where = f"mode {mode:o}" + (f", group {group}" if owner is not None else "")
        if dry_run:
            typer.echo(f"would write {path} ({len(data)} bytes, {where})")
            continue
        try:
            write_file(path, data, mode, owner)
        except OSError as exc:
            raise _fail(f"cannot write {path}: {exc.strerror}", 1) from None
        typer.echo(f"wrote {path} ({where})")


def _broker_entries(passwd_line: str, acl: list[str], out: Path) -> None:
    typer.echo("")
    typer.echo("Broker (Mosquitto 2.0) entries for this gateway:")
    typer.echo(f"  add to the password_file ({out / 'mosquitto.passwd'}):")
    typer.echo(f"    {passwd_line}")
    typer.echo(f"  add to the acl_file ({out / 'mosquitto.acl'}):")
    for line in acl:
        typer.echo(f"    {line}")
    typer.echo("  then reload the broker (systemctl reload mosquitto, or kill -HUP its pid)")
    typer.echo(f"  once per broker: install {out / 'mosquitto-firegate.conf'} as "
               "/etc/mosquitto/conf.d/firegate.conf (it binds each client id to its user, "
               "docs/collector.md) and restart mosquitto")


def _install_unit(unit_dir: Path, dry_run: bool) -> None:
    target = unit_dir / UNIT_FILE.name
    if dry_run:
        typer.echo(f"would install {UNIT_FILE} as {target}")
        return
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        write_file(target, UNIT_FILE.read_bytes(), 0o644)
    except OSError as exc:
        raise _fail(f"cannot install {target}: {exc.strerror}", 1) from None
    typer.echo(f"installed {target}")


def _next_steps(kind: str, gw: str, out: Path, unit: bool, config_dir: Path | None,
                owner_only: list[str], group: str) -> None:
    typer.echo("")
    typer.echo("Next steps:")
    if kind == "collector":
        typer.echo(f"  in the collector's TOML: [mqtt] username = \"{gw}\", password_file = "
                   f"the copy of {out / 'mqtt-password'} (0600, the collector's user); the "
                   f"broker makes {gw} its client id")
        return
    if owner_only:
        typer.echo(f"  on the Pi, after `{_USERADD}`: sudo install -o root -g {group} -m 0640 "
                   + " ".join(str(out / n) for n in owner_only) + " /etc/firegate/ "
                   f"(the agent reads them as a member of {group}; written 0600 here: no group "
                   f"{group} on this machine)")
    if kind == "firmware":
        typer.echo(f"  flash the ESP32 with firmware/flash.sh (it copies {out / 'config.json'})")
    else:
        conf = Path("/etc/firegate/gateway.toml")
        if config_dir is None and out.resolve() / "gateway.toml" != conf:
            typer.echo(f"  copy {out}/* to /etc/firegate/ on the Pi (the unit reads {conf}; "
                       f"or provision with --config-dir /etc/firegate)")
        typer.echo(f"  firegate check-config {(config_dir or out) / 'gateway.toml'}")
        if unit:
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
