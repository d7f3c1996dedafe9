"""Small named validators for TOML configs, ESPHome style: every error names its key.

A section parser wraps its TOML table in a :class:`Table` and asks for each key with the type
and range it needs; whatever it did not ask for is reported as unknown by :meth:`Table.finish`
with the keys that are allowed (a typo must not silently fall back to a default). The first
error stops the load with a :class:`ConfigError` whose ``key`` is the full dotted path:
``modbus[0].device[2].interval_s: must be at least 0.05, got 0``. A parser that reports every
problem at once (the BLE simulator's scenario) gathers them with an :class:`ErrorCollector` into
one :class:`ConfigErrors`; :meth:`ConfigError.within` adds the file's name.

Nothing here opens a port or a device: ``firegate check-config`` runs exactly this code.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

__all__ = ["MISSING", "ConfigError", "ConfigErrors", "ErrorCollector", "Table", "is_loopback",
           "read_toml"]

E = TypeVar("E", bound=Enum)
T = TypeVar("T")
D = TypeVar("D")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: _Missing = _Missing()
"""Default meaning "this key is required"."""


class ConfigError(ValueError):
    """A config value that is missing, of the wrong type, out of range or unknown.

    ``source``, when given, names the file the value came from and leads the text:
    ``site.toml: panel.baud: must be at least 1, got 0``.
    """

    def __init__(self, key: str, message: str, *, source: str = "") -> None:
        text = f"{key}: {message}" if key else message
        super().__init__(f"{source}: {text}" if source else text)
        self.key = key
        self.message = message
        self.source = source

    def within(self, source: str | os.PathLike[str]) -> ConfigError:
        """The same error, naming the file it came from."""
        return ConfigError(self.key, self.message, source=os.fspath(source))


class ConfigErrors(ConfigError):
    """Every error a parser found in one pass, in order (one per line); ``key``, ``message``
    and ``source`` are the first one's, so a caller that wants one error still gets one."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        first = errors[0]
        super().__init__(first.key, first.message, source=first.source)
        self.errors: tuple[ConfigError, ...] = tuple(errors)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def within(self, source: str | os.PathLike[str]) -> ConfigErrors:
        return ConfigErrors([e.within(source) for e in self.errors])


class ErrorCollector:
    """Collects :class:`ConfigError` so a parser can go on and report every problem at once
    (a long hand-written scenario is fixed in one round, not one error per run)::

        problems = ErrorCollector()
        interval = problems.attempt(lambda: t.number("interval", 5.0, min=0.02), None)
        ...
        problems.raise_any()  # ConfigErrors, when there were any
    """

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def attempt(self, read: Callable[[], T], default: D) -> T | D:
        """``read()``, or ``default`` after noting the :class:`ConfigError` it raised."""
        try:
            return read()
        except ConfigError as exc:
            self.errors.extend(exc.errors if isinstance(exc, ConfigErrors) else (exc,))
            return default

    def raise_any(self) -> None:
        """Raise :class:`ConfigErrors` with everything noted so far, if anything was."""
        if self.errors:
            raise ConfigErrors(self.errors)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


_TLS_SCHEME = {"mqtt": "mqtts", "http": "https"}
"""Plain scheme -> its TLS twin, for :meth:`Table.refuse_plaintext`."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``, and 127/8 mapped
    into IPv6): traffic that never leaves the machine. Any other name is not trusted to be
    local, even one that resolves to 127.0.0.1 today (``*.localhost`` included: not every
    resolver keeps RFC 6761's promise)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1: False on Python 3.11
    return address.is_loopback


class Table:
    """One TOML table being read; remembers which keys were used."""

    def __init__(self, data: Mapping[str, object], path: str = "", *,
                 base_dir: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.data = data
        self.path = path
        self.base_dir = base_dir or Path.cwd()
        self.env: Mapping[str, str] = os.environ if env is None else env
        self._used: set[str] = set()

    # -- helpers -------------------------------------------------------------------------------

    def key(self, key: str) -> str:
        """The full dotted path of ``key`` in this table."""
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(self.key(key) if key else self.path, message)

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: object) -> object:
        self._used.add(key)
        if key in self.data:
            return self.data[key]
        if default is MISSING:
            self.fail(key, "is required")
        return default

    def raw(self, key: str, default: object = MISSING) -> object:
        """The value as given, unchecked (but counted as asked for): for a key that takes
        several shapes, e.g. seconds or ``"never"``; check it and report with :meth:`fail`."""
        return self._get(key, default)

    def _child(self, data: Mapping[str, object], path: str) -> Table:
        return Table(data, path, base_dir=self.base_dir, env=self.env)

    # -- scalars -------------------------------------------------------------------------------

    def text(self, key: str, default: str | _Missing = MISSING, *,
             pattern: str | None = None, hint: str | None = None,
             min_len: int = 1, max_len: int = 1024) -> str:
        """A string; ``pattern`` must match it whole (``hint`` describes it in the error)."""
        value = self._get(key, default)
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {_kind(value)}")
        if not min_len <= len(value) <= max_len:
            self.fail(key, f"must be {min_len}-{max_len} characters, got {len(value)}")
        if pattern is not None and re.fullmatch(pattern, value) is None:
            self.fail(key, f"must be {hint or 'of the form ' + pattern}, got {value!r}")
        return value

    def opt_text(self, key: str, *, pattern: str | None = None, hint: str | None = None,
                 max_len: int = 1024) -> str | None:
        if key not in self.data:
            self._used.add(key)
            return None
        return self.text(key, pattern=pattern, hint=hint, max_len=max_len)

    def integer(self, key: str, default: int | _Missing = MISSING, *,
                min: int | None = None, max: int | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {_kind(value)}")
        self._range(key, value, min, max)
        return value

    def opt_integer(self, key: str, *, min: int | None = None, max: int | None = None
                    ) -> int | None:
        if key not in self.data:
            self._used.add(key)
            return None
        return self.integer(key, min=min, max=max)

    def number(self, key: str, default: float | _Missing = MISSING, *,
               min: float | None = None, max: float | None = None,
               above: float | None = None) -> float:
        """An integer or float (TOML ``1`` and ``1.0`` both); ``above`` is an exclusive minimum."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, got {_kind(value)}")
        number = float(value)
        if not math.isfinite(number):
            self.fail(key, "must be a finite number")
        if above is not None and not number > above:
            self.fail(key, f"must be greater than {above:g}, got {number:g}")
        self._range(key, number, min, max)
        return number

    def opt_number(self, key: str, *, min: float | None = None, max: float | None = None,
                   above: float | None = None) -> float | None:
        if key not in self.data:
            self._used.add(key)
            return None
        return self.number(key, min=min, max=max, above=above)

    def _range(self, key: str, value: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and value < lo:
            self.fail(key, f"must be at least {lo:g}, got {value:g}")
        if hi is not None and value > hi:
            self.fail(key, f"must be at most {hi:g}, got {value:g}")

    def flag(self, key: str, default: bool | _Missing = MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_kind(value)}")
        return value

    def choice(self, key: str, enum: type[E], default: E | _Missing = MISSING) -> E:
        """One of an enum's values (matched on ``.value``)."""
        value = self._get(key, default)
        if isinstance(value, enum):
            return value
        for member in enum:
            if member.value == value:
                return member
        allowed = ", ".join(repr(m.value) for m in enum)
        self.fail(key, f"must be one of {allowed}, got {value!r}")

    def one_of(self, key: str, allowed: Sequence[str], default: str | _Missing = MISSING) -> str:
        value = self._get(key, default)
        if value not in allowed:
            self.fail(key, f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        assert isinstance(value, str)
        return value

    def texts(self, key: str, default: Sequence[str] | _Missing = MISSING) -> list[str]:
        value = self._get(key, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            self.fail(key, f"must be an array of strings, got {_kind(value)}")
        return list(value)

    def path_value(self, key: str, default: str | _Missing | None = MISSING, *,
                   must_exist: bool = False) -> Path | None:
        """A file path; relative paths are relative to the config file's directory."""
        value = self._get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a path string, got {_kind(value)}")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if must_exist and not path.exists():
            self.fail(key, f"file not found: {path}")
        return path

    def secret(self, key: str, *, min_bytes: int = 1, hint: str = "") -> str | None:
        """A secret given inline (``key``), in a file (``key_file``, white space around it
        stripped) or in the environment (``key_env`` names the variable). At most one of the
        three; None when none is given.

        An empty secret is refused: it would quietly mean "no authentication" (an empty
        password file, an unset-but-exported variable). ``min_bytes`` counts UTF-8 bytes: an
        HMAC key shorter than its hash's output weakens it (RFC 2104 §3), so HMAC-SHA256 keys
        ask for 32; ``hint`` says how to make a good one. Errors name the key that was given
        (``secret_file``) and never echo the value.
        """
        given = [k for k in (key, f"{key}_file", f"{key}_env") if k in self.data]
        self._used.update((key, f"{key}_file", f"{key}_env"))
        if len(given) > 1:
            self.fail(key, f"give only one of {', '.join(given)}")
        if not given:
            return None
        which = given[0]
        if which == key:
            value = self.text(key, min_len=0)
            empty = "must not be empty"
        elif which.endswith("_file"):
            path = self.path_value(which, must_exist=True)
            assert path is not None
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.fail(which, f"cannot read {path}: {exc.strerror}")
            except UnicodeDecodeError:
                self.fail(which, f"{path} is not UTF-8")
            empty = f"{path} is empty"
        else:
            name = self.text(which, pattern=r"[A-Za-z_][A-Za-z0-9_]*", hint="a variable name")
            if name not in self.env:
                self.fail(which, f"environment variable {name} is not set")
            value = self.env[name]
            empty = f"environment variable {name} is empty"
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # os.environ keeps undecodable bytes as surrogates
            self.fail(which, "is not UTF-8")
        if size == 0:
            self.fail(which, empty)
        if size < min_bytes:
            self.fail(which, f"must be at least {min_bytes} bytes, got {size}"
                             + (f" ({hint})" if hint else ""))
        return value

    def refuse_url_credentials(self, key: str, url: str, use: str) -> None:
        """Refuse ``user:password@`` in the URL ``key`` without echoing it: a URL is logged,
        shown by ``status`` and may sit in a process's arguments; ``use`` names the keys that
        carry the credential instead. Call it before any check that quotes the URL."""
        authority = url.partition("://")[2]
        authority = re.split(r"[/?#]", authority, maxsplit=1)[0]  # urlsplit's netloc
        if "@" in authority:
            self.fail(key, f"must not carry credentials; use {use}")

    def refuse_plaintext(self, url_key: str, url: str, secret_key: str,
                         secret: str | None) -> None:
        """Refuse sending ``secret`` (the value of ``secret_key``, None when not given) over
        the plain ``mqtt://`` or ``http://`` URL of ``url_key`` to a host that is not loopback
        (:func:`is_loopback`): anyone on the path reads it. ``allow_plaintext = true`` in the
        same table is the explicit opt-in (a lab, a trusted wire); it is always read, so it is
        a known key even where it changes nothing."""
        allowed = self.flag("allow_plaintext", False)
        parts = urlsplit(url)
        host = parts.hostname or ""
        if secret is None or allowed or parts.scheme not in _TLS_SCHEME or is_loopback(host):
            return
        self.fail(url_key, f"{parts.scheme}:// sends the {secret_key} unencrypted to {host} "
                           f"(not a loopback address); use {_TLS_SCHEME[parts.scheme]}://, or "
                           f"set allow_plaintext = true in [{self.path}] to accept that risk")

    def date_time(self, key: str, default: datetime | _Missing = MISSING) -> datetime:
        """A date and time: a TOML date-time (local or with an offset) or an ISO 8601 string
        (``datetime.fromisoformat``); a TOML date or time alone is refused. Whether an offset
        is wanted is the caller's to decide."""
        value = self._get(key, default)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a date-time: the error below
                value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            self.fail(key, f"must be a date-time like 2024-05-01T08:00:00, got {value!r}")
        return value

    # -- nesting -------------------------------------------------------------------------------

    def table(self, key: str, *, required: bool = False) -> Table | None:
        value = self._get(key, MISSING if required else None)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(key, f"must be a table, got {_kind(value)}")
        return self._child(value, self.key(key))

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``); a single table is accepted as a list of one."""
        value = self._get(key, [])
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            self.fail(key, f"must be an array of tables ([[{key}]]), got {_kind(value)}")
        return [self._child(v, f"{self.key(key)}[{i}]") for i, v in enumerate(value)]

    def mapping(self, key: str) -> dict[str, Table]:
        """A table of tables keyed by name (``[key.NAME]``)."""
        sub = self.table(key)
        if sub is None:
            return {}
        out: dict[str, Table] = {}
        for name in sub.data:
            child = sub.table(name, required=True)
            assert child is not None
            out[name] = child
        sub.finish()
        return out

    def finish(self) -> None:
        """Refuse keys nobody asked for, naming the allowed ones."""
        unknown = [k for k in self.data if k not in self._used]
        if unknown:
            allowed = ", ".join(sorted(self._used)) or "none"
            self.fail(unknown[0], f"unknown key; allowed here: {allowed}")


def read_toml(path: Path) -> dict[str, object]:
    """A config file's TOML tables; :class:`ConfigError` for an unreadable, non-UTF-8 or
    malformed file (every process's ``load_config`` starts here)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML: {exc}") from None
