"""The API's tests: a real uvicorn on a free loopback port serving the real AlarmBook (fed the
way the writer feeds it, :meth:`AlarmBook.apply`), and real HTTP clients (httpx)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from collector.alarms.book import AlarmBook, Signal
from collector.alarms.model import Alarm
from collector.api.config import HttpConfig, UserConfig
from collector.api.server import ApiServer
from collector.registry import Registry
from tests.infra.ports import free_port

OPERATOR = "op-" + "0123456789abcdef" * 3
VIEWER = "vw-" + "fedcba9876543210" * 3
ADMIN = "ad-" + "a1b2c3d4e5f60718" * 3
FIRM = "fm-" + "9a8b7c6d5e4f3a2b" * 3
"""Tokens (>= 32 characters): an operator, a viewer and an admin who see every site, and a
maintenance firm's operator who sees only ``hz-*``."""
USERS = (UserConfig("duty-officer", OPERATOR, "operator"),
         UserConfig("watcher", VIEWER, "viewer"),
         UserConfig("chief", ADMIN, "admin"),
         UserConfig("hz-firm", FIRM, "operator", ("hz-*",)))


@dataclass
class Api:
    """A running API over a real book and registry."""

    server: ApiServer
    book: AlarmBook
    registry: Registry
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, token: str | None = OPERATOR) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(c)
        return c

    def raise_alarm(self, site: str = "hz-0001", source: str = "panel/1-1/42",
                    type: str = "fire_alarm", description: str = "三层东走廊感烟探测器",
                    gateway: str = "gw-1", seq: int = 1) -> Alarm:
        """Raise an alarm the way the writer does; returns it."""
        self.book.apply([Signal("raise", gateway, site, source, type,
                                "fire" if type == "fire_alarm" else "alarm", description,
                                stamp=(1, seq))])
        found = [a for a in self.book.open_alarms() if a.key == (gateway, source, type)]
        assert found, "the book did not open the alarm"
        return found[0]


def make_config(port: int | None = None, **overrides: object) -> HttpConfig:
    base = HttpConfig("127.0.0.1", port or free_port(), users=USERS)
    return HttpConfig(**{**{f: getattr(base, f) for f in HttpConfig.__dataclass_fields__},
                         **overrides})  # type: ignore[arg-type]


@pytest.fixture
def api_factory(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(**overrides: object) -> Api:
        book = AlarmBook(tmp_path / f"alarms-{len(made)}.sqlite").start()
        registry = Registry(tmp_path / f"registry-{len(made)}.sqlite")
        extra = overrides.pop("extra_routes", ())
        server = ApiServer(make_config(**overrides), book=book, registry=registry.view,
                           extra_routes=extra).start_thread()  # type: ignore[arg-type]
        api = Api(server, book, registry)
        made.append(api)
        return api

    yield make
    for api in made:
        for c in api.clients:
            c.close()
        api.server.close()
        api.book.close()
        api.registry.close()


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()
