"""What a state read asks the UITD: the targets and their request frames (pure).

A state read (GB/T 26875.3 §8.3.2) covers the systems (type 61, 图31), the components
(type 62, 图32) and the UITD itself (type 81, 图39). The panel driver reads at start-up,
after every reconnect and on the ``read_panel_state`` command, optionally for one source id
prefix. It sends what :func:`read_requests` plans, one request at a time, and maps the
answers like uploads (:mod:`protocols.panel_records`).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config.panel import PanelConfig
from protocols.gb26875 import (
    ApplicationData,
    ComponentAddress,
    ComponentRef,
    Reserved,
    SystemRef,
)
from protocols.panel_records import ComponentKey, PanelMapper, SystemKey

__all__ = ["COMPONENTS_PER_FRAME", "SYSTEMS_PER_FRAME", "ReadTargets", "read_requests",
           "read_targets"]

SYSTEMS_PER_FRAME = 102  # 图31: at most 102 system objects in one type 61 request
COMPONENTS_PER_FRAME = 22  # 图32: at most 22 component objects in one type 62 request


@dataclass(frozen=True, slots=True)
class ReadTargets:
    """The systems, components and whether the UITD are to be read, in reading order."""

    systems: list[SystemKey]
    components: list[ComponentKey]
    uitd: bool

    def __bool__(self) -> bool:
        return bool(self.systems or self.components or self.uitd)


def read_targets(mapper: PanelMapper, config: PanelConfig, prefix: str | None) -> ReadTargets:
    """Everything known under ``prefix`` (a source id or a prefix of one; None: all).

    Known means configured, seen by the mapper in this run, or raised when the agent last
    stopped (``ctx.previous``): a fire alarm that cleared while the agent was down is read,
    found cleared and restored.
    """
    want = (prefix or "").rstrip("/")

    def chosen(source_id: str) -> bool:
        return not want or source_id == want or source_id.startswith(want + "/")

    systems = [s for s in dict.fromkeys([*config.systems, *mapper.systems(),
                                         *mapper.previous_systems()])
               if chosen(mapper.system_id(*s))]
    previous = mapper.previous_components()
    known = {key: sid for sid, key in [*previous.items(), *mapper.component_sources().items()]}
    configured = [(k.system_type, k.system_address, k.address) for k in config.components]
    # A component never seen has no type yet: "?" stands for it, so that only a prefix that
    # stops above the component matches it.
    components = [k for k in dict.fromkeys([*configured, *mapper.active_components(),
                                            *previous.values()])
                  if chosen(known.get(k, f"{mapper.prefix}/{k[0]}-{k[1]}/?-0x{k[2]:08x}"))]
    return ReadTargets(systems, components, chosen(mapper.uitd_id))


def read_requests(targets: ReadTargets) -> list[tuple[str, ApplicationData]]:
    """The requests (command 4) for ``targets``: ``("systems" | "components" | "uitd", ADU)``."""
    reads: list[tuple[str, ApplicationData]] = []
    systems, components = targets.systems, targets.components
    for k in range(0, len(systems), SYSTEMS_PER_FRAME):
        reads.append(("systems", ApplicationData(61, tuple(
            SystemRef(*s) for s in systems[k:k + SYSTEMS_PER_FRAME]))))
    for k in range(0, len(components), COMPONENTS_PER_FRAME):
        reads.append(("components", ApplicationData(62, tuple(
            ComponentRef(st, sa, ComponentAddress.from_int(a))
            for st, sa, a in components[k:k + COMPONENTS_PER_FRAME]))))
    if targets.uitd:
        reads.append(("uitd", ApplicationData(81, (Reserved(),))))
    return reads
