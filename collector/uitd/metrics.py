"""The centre's Prometheus metrics, added to the collector's ``/metrics``
(``firegate_collector_uitd_*``), read from the centre at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from collector.metrics import Counter, Gauge, Labels, Metrics
from collector.uitd.centre import Centre

__all__ = ["CounterView", "attach_metrics"]


class CounterView(Counter):
    """A counter with one label whose values are a mapping read at each scrape (the centre
    counts on its own loop; nothing is incremented twice)."""

    def __init__(self, name: str, help_text: str, label: str,
                 source: Callable[[], Mapping[str, int]]) -> None:
        super().__init__(name, help_text, (label,))
        self._source = source

    def values(self) -> dict[Labels, float]:
        for _ in range(3):  # the loop thread may add a key while we copy: copy again
            try:
                return {(k,): float(v) for k, v in dict(self._source()).items()}
            except RuntimeError:
                continue
        return {}


def attach_metrics(metrics: Metrics, centre: Centre) -> None:
    """Add the centre's metrics to ``metrics`` (its :meth:`Metrics.all` lists every metric
    attribute, so these are rendered with the rest)."""
    p = "firegate_collector_uitd_"
    extra = {
        "uitd_links": Gauge(p + "links", "Open UITD connections (GB/T 26875.3 centre)",
                            read=lambda: float(len(centre.links))),
        "uitd_online": Gauge(p + "online", "UITDs online (a valid frame within "
                             "silence_timeout_s)",
                             read=lambda: float(sum(d.online for d in list(
                                 centre.devices.values())))),
        "uitd_events": CounterView(p + "events_total", "Centre events by kind: uploads, "
                                   "confirmed, duplicate, denied, decode_<kind>, "
                                   "closed_<reason>, refused_*, command_* ...", "kind",
                                   lambda: centre.counters),
    }
    for name, metric in extra.items():
        setattr(metrics, name, metric)
