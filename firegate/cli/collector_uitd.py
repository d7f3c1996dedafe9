"""``firegate collector uitd ...``: the UITDs that dial into a collector (GB/T 26875.3 centre).

* ``list``: every UITD with its link, state and counters; from the API (``--url``) or, with
  ``--config``, from the state directory's ``uitd.json`` (rewritten by the running collector
  every few seconds, so it answers whether the collector runs or not);
* ``clock-sync UITD``, ``check-post UITD [--minutes N]``, ``read UITD [--what ...]
  [--target 1,1]``: through the API, as the user of ``--token-file``.

The token is read from a file, never from an argument (process lists and shell histories are
readable by others). ``UITD`` is the gateway id or the address (``0x`` + 12 hex digits).
Text from the field is shown with control characters made visible; ``--json`` keeps it exact.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["build", "register"]

STATE_FILE = "uitd.json"
TIMEOUT_S = 60.0
"""A command waits for the UITD's answer: up to 4 transmissions of 10 s each (§6.5.4-5)."""

UrlOption = Annotated[str | None, typer.Option(
    "--url", help="The collector's API, e.g. https://collector.example:8443")]
TokenOption = Annotated[Path | None, typer.Option(
    "--token-file", help="A file holding the API token (never give it as an argument).",
    exists=True, dir_okay=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document, exact text.")]
UitdArg = Annotated[str, typer.Argument(help="Gateway id or address (0x + 12 hex digits).")]


def register(app: typer.Typer) -> None:
    """Add the ``uitd`` group to the ``collector`` command group."""
    app.add_typer(build(), name="uitd")


def build() -> typer.Typer:
    group = typer.Typer(help="UITDs dialling in over GB/T 26875.3: list, clock sync, "
                             "check-post, read states.", no_args_is_help=True)
    group.command("list")(list_command)
    group.command("clock-sync")(clock_sync_command)
    group.command("check-post")(check_post_command)
    group.command("read")(read_command)
    return group


def _visible(text: object) -> str:
    """Field text for the terminal by the project's one rule (firegate/textsafe.py): C0 as
    control pictures; C1, line separators, bidi overrides and isolates as escapes."""
    from firegate.textsafe import visible  # rich, imported only when something is shown

    return visible(text)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {_visible(message)}", err=True)
    return typer.Exit(code)


def _token(path: Path | None) -> str:
    if path is None:
        raise _fail("--token-file is required with --url", 2)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read the token file {path}: {exc}", 2) from None
    if not token:
        raise _fail(f"the token file {path} is empty", 2)
    return token


def _call(url: str, token: str, method: str, path: str,
          body: dict[str, Any] | None = None) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(f"--url must be an http:// or https:// URL, got {url!r}", 2)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            doc = json.loads(response.read(4 * 1024 * 1024))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read(65536))["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise _fail(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _fail(f"cannot reach {url}: {exc}") from None
    if not isinstance(doc, dict):
        raise _fail("the API answered something that is not a JSON object")
    return doc


def list_command(
    url: UrlOption = None, token_file: TokenOption = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="The collector's TOML file: read its state directory instead "
        "of the API.", exists=True, dir_okay=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Every UITD: address, gateway, site, link, state, counters."""
    if url is not None:
        data = _call(url, _token(token_file), "GET", "/api/v1/uitds")
    else:
        from collector.config import ConfigError, load_config

        try:
            cfg = load_config(config) if config is not None else None
        except ConfigError as exc:
            raise _fail(f"{config}: {exc}", 2) from None
        if cfg is None:
            raise _fail("give --url (and --token-file) or --config", 2)
        path = cfg.state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _fail(f"{path} does not exist: has this collector run with [gb26875]?") \
                from None
        except (OSError, ValueError) as exc:
            raise _fail(f"cannot read {path}: {exc}") from None
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    _render(data)


def _render(data: dict[str, Any]) -> None:
    running = "running" if data.get("running") else "not running"
    age = ""
    if isinstance(data.get("updated_ms"), int):  # the file is rewritten every 5-15 s
        age = f", as of {max(0, time.time_ns() // 1_000_000 - data['updated_ms']) / 1000:.0f} s ago"
    typer.echo(f"centre {_visible(data.get('collector', '?'))} ({running}), listen "
               f"{_visible(data.get('listen'))}, {data.get('connections', 0)} connection(s)"
               f"{age}")
    rows = data.get("uitds") or []
    header = ("ADDRESS", "GATEWAY", "SITE", "LINK", "STATE", "SILENT", "PEER")
    table: list[tuple[str, ...]] = [header]
    for u in rows:
        link = "connected" if u.get("connected") else "-"
        state = "online" if u.get("online") else "offline"
        if u.get("link_fault"):
            state += " link_fault"
        silent = "-" if u.get("silent_s") is None else f"{u['silent_s']}s"
        table.append(tuple(_visible(x) for x in (u.get("address"), u.get("gateway"),
                                                  u.get("site"), link, state, silent,
                                                  u.get("peer") or "-")))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    counters = data.get("counters") or {}
    if counters:
        typer.echo("counters: " + ", ".join(f"{_visible(k)}={v}"
                                             for k, v in sorted(counters.items())))


def _command(url: str | None, token_file: Path | None, uitd: str, action: str,
             body: dict[str, Any], as_json: bool) -> None:
    if url is None:
        raise _fail("--url is required (commands go through the collector's API)", 2)
    quoted = urllib.parse.quote(uitd, safe="")
    out = _call(url, _token(token_file), "POST", f"/api/v1/uitds/{quoted}/{action}", body)
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    extra = ", ".join(f"{k}={_visible(v)}" for k, v in out.items()
                      if k not in ("gateway", "command", "answer"))
    typer.echo(f"{_visible(out.get('command'))} {_visible(out.get('gateway'))}: ok ({extra})")
    if out.get("answer") is not None:
        typer.echo(_visible(json.dumps(out["answer"], ensure_ascii=False)))


def clock_sync_command(uitd: UitdArg, url: UrlOption = None, token_file: TokenOption = None,
                       as_json: JsonOption = False) -> None:
    """Set the UITD's clock to the collector's (type 90)."""
    _command(url, token_file, uitd, "clock-sync", {}, as_json)


def check_post_command(
    uitd: UitdArg, url: UrlOption = None, token_file: TokenOption = None,
    minutes: Annotated[int, typer.Option("--minutes", min=1, max=255,
                                         help="The operator's time to answer.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """查岗: ask the UITD's operator to answer (type 91); stored as a check_post event."""
    _command(url, token_file, uitd, "check-post", {"minutes": minutes}, as_json)


def read_command(
    uitd: UitdArg, url: UrlOption = None, token_file: TokenOption = None,
    what: Annotated[str, typer.Option("--what", help="uitd (81), systems (61) or "
                                                     "components (62).")] = "uitd",
    target: Annotated[list[str] | None, typer.Option(
        "--target", help="systems: TYPE,ADDRESS; components: TYPE,ADDRESS,COMPONENT "
        "(repeat it).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Read states from the UITD; the answer is stored as records and shown."""
    targets = []
    for t in target or []:
        try:
            targets.append([int(v, 0) for v in t.split(",")])
        except ValueError:
            raise _fail(f"--target {t!r}: integers separated by commas", 2) from None
    body: dict[str, Any] = {"what": what}
    if targets:
        body["targets"] = targets
    _command(url, token_file, uitd, "read", body, as_json)
