"""AlarmBook.list: open alarms from memory (per site, newest first) and closed ones from the
file must give exactly what the file alone gives (select_alarms, the command line's path), for
every state, scope, filter, limit and page."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from collector.alarms.book import STATES, AlarmBook, Signal, select_alarms
from collector.alarms.model import Alarm
from tests.collector.alarms.helpers import Clock, book

SITES = [f"site-{i:02d}" for i in range(12)]


@dataclass(frozen=True)
class Globs:
    """A user's site filter as the API passes it (hashable, like a bound ``User.sees``);
    counts its calls."""

    prefix: str
    calls: list[str] = field(default_factory=list, hash=False, compare=False)

    def __call__(self, site: str) -> bool:
        self.calls.append(site)
        return site.startswith(self.prefix)


def churn(b: AlarmBook, clock: Clock, rng: random.Random, n: int) -> None:
    """Raise, re-raise, clear, acknowledge and resolve at random; raise times often tie."""
    for i in range(n):
        if rng.random() < 0.6:
            clock.now += rng.choice((0, 0, 1, 7))
        site = rng.choice(SITES)
        key = rng.randrange(40)
        what = rng.random()
        gw = f"gw-{site}"
        if what < 0.55:
            b.apply([Signal("raise", gw, site, f"src-{key}", "fire_alarm", "fire",
                            f"smoke {i}", stamp=(1, i + 1))])
        elif what < 0.75:
            b.apply([Signal("clear", gw, site, f"src-{key}", "fire_alarm", stamp=(1, i + 1))])
        else:
            alarms = b.list(state="open", limit=10_000)
            if not alarms:
                continue
            a = rng.choice(alarms)
            if what < 0.9 and not a.acknowledged:
                b.acknowledge(a.id, by="op", note=None, origin="cli")
            elif a.resolution is None:
                b.resolve(a.id, verdict="false", by="op", note=None, origin="cli")


def ids(alarms: list[Alarm]) -> list[str]:
    return [a.id for a in alarms]


def pages(b: AlarmBook, size: int, **kw: object) -> list[str]:
    """Every alarm matching ``kw``, page by page through the cursor."""
    out: list[Alarm] = []
    cursor: dict[str, object] = {}
    for _ in range(10_000):
        page = b.list(limit=size, **cursor, **kw)  # type: ignore[arg-type]
        out += page
        if len(page) < size:
            return ids(out)
        cursor = {"before_ms": page[-1].raised_ms, "before_id": page[-1].id}
    raise AssertionError("the pages never end")


@pytest.mark.parametrize(("seed", "merge_sites"), [(1, 64), (2, 64), (3, 0)])
def test_memory_and_file_agree(tmp_path: Path, seed: int, merge_sites: int,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    # merge_sites 0: a scoped list walks the overall order (as for a user of many sites).
    monkeypatch.setattr("collector.alarms.book.MERGE_SITES", merge_sites)
    rng = random.Random(seed)
    clock = Clock()
    b = book(tmp_path, clock)
    try:
        churn(b, clock, rng, 600)
        file = b._store  # the oracle: the file alone, as the command line reads it
        every = select_alarms(file, state="all", limit=100_000)
        assert any(a.open for a in every) and any(not a.open for a in every)
        assert any(a.state == "active" and not a.open for a in every), \
            "no active closed alarm: the merge of memory and file goes untested"
        counts: dict[str, int] = {}
        for a in every:
            if a.open:
                counts[a.site] = counts.get(a.site, 0) + 1
        assert b.open_counts() == counts
        tie = {a.raised_ms for a in every}
        assert len(tie) < len(every), "no equal raise times: the id order goes untested"
        scopes: list[dict[str, object]] = [
            {}, {"site": "site-03"}, {"site": "nowhere"}, {"sites": Globs("site-0")},
            {"sites": Globs("site-1")}, {"sites": Globs("none")},
            {"site": "site-03", "sites": Globs("site-1")}]
        for state in STATES:
            for scope in scopes:
                for acked in (None, True, False):
                    for limit in (1, 7, 100_000):
                        kw = {"state": state, "acknowledged": acked, **scope}
                        want = select_alarms(file, limit=limit, **kw)  # type: ignore[arg-type]
                        assert b.list(limit=limit, **kw) == want, (kw, limit)  # type: ignore[arg-type]
                    full = ids(select_alarms(file, limit=100_000, **kw))  # type: ignore[arg-type]
                    assert pages(b, 5, **kw) == full, kw
        # A cursor of raise time alone: strictly older alarms.
        mid = every[len(every) // 2].raised_ms
        assert ids(b.list(state="all", limit=100_000, before_ms=mid)) == \
            [a.id for a in every if a.raised_ms < mid]
        with pytest.raises(ValueError, match="before_ms"):
            b.list(before_id="a0")
    finally:
        b.close()


def test_the_index_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    b = book(tmp_path, clock)
    churn(b, clock, random.Random(9), 300)
    before = {s: b.list(state=s, limit=100_000) for s in STATES}
    b.close()
    again = book(tmp_path, clock)
    try:
        assert {s: again.list(state=s, limit=100_000) for s in STATES} == before
        assert again.list(state="open", limit=100_000) == \
            select_alarms(again._store, state="open", limit=100_000)
    finally:
        again.close()


def test_a_user_filter_runs_once_per_site_and_sees_new_sites(tmp_path: Path) -> None:
    clock = Clock()
    b = book(tmp_path, clock)
    try:
        for i in range(300):  # 300 alarms over 12 sites
            site = SITES[i % len(SITES)]
            b.apply([Signal("raise", f"gw-{i}", site, "s", "fire_alarm", "fire", "",
                            stamp=(1, i + 1))])
        user = Globs("site-0")
        seen = b.list(sites=user, limit=1000)
        assert {a.site for a in seen} == {f"site-0{i}" for i in range(10)}
        assert len(seen) == 250
        assert sorted(user.calls) == SITES, "the filter ran per alarm, not per site"
        b.list(sites=user, limit=1000)
        b.list(sites=Globs("site-0"), limit=1000)  # an equal filter (the same user again)
        assert len(user.calls) == len(SITES), "the filter's matches were not remembered"
        clock.now += 1
        b.apply([Signal("raise", "gw-new", "site-0x", "s", "fire_alarm", "fire", "",
                        stamp=(1, 999))])
        assert b.list(sites=user, limit=1)[0].site == "site-0x", "a new site was not seen"
    finally:
        b.close()
