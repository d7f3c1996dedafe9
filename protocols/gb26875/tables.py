"""Code tables of GB/T 26875.3-2011 as data, each citing its table or figure in the standard.

Every entry carries the standard's Chinese name and an English name. Values the standard reserves
or leaves to users (typically 128-255) are not errors: :func:`lookup` names them as such, and the
decoders keep the raw number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntFlag


@dataclass(frozen=True, slots=True)
class Code:
    """One entry of a code table."""

    value: int
    zh: str
    en: str


def _table(rows: tuple[tuple[int, str, str], ...]) -> Mapping[int, Code]:
    return {v: Code(v, zh, en) for v, zh, en in rows}


def lookup(table: Mapping[int, Code], value: int, user_from: int = 128) -> Code:
    """The entry for ``value``; reserved and user-defined values get a descriptive stand-in."""
    code = table.get(value)
    if code is not None:
        return code
    if value >= user_from:
        return Code(value, "用户自定义", f"user-defined {value}")
    return Code(value, "预留", f"reserved {value}")


# 表4 系统类型标志 (system type). Std §8.2.1.1.
SYSTEM_TYPES: Mapping[int, Code] = _table((
    (0, "通用", "generic"),
    (1, "火灾报警系统", "fire alarm system"),
    (10, "消防联动控制器", "fire linkage controller"),
    (11, "消火栓系统", "hydrant system"),
    (12, "自动喷水灭火系统", "automatic sprinkler system"),
    (13, "气体灭火系统", "gas extinguishing system"),
    (14, "水喷雾灭火系统(泵启动方式)", "water-spray system, pump-started"),
    (15, "水喷雾灭火系统(压力容器启动方式)", "water-spray system, pressure-vessel-started"),
    (16, "泡沫灭火系统", "foam extinguishing system"),
    (17, "干粉灭火系统", "dry-powder extinguishing system"),
    (18, "防烟排烟系统", "smoke control and exhaust system"),
    (19, "防火门及卷帘系统", "fire door and shutter system"),
    (20, "消防电梯", "fire elevator"),
    (21, "消防应急广播", "emergency broadcast"),
    (22, "消防应急照明和疏散指示系统", "emergency lighting and evacuation signs"),
    (23, "消防电源", "fire power supply"),
    (24, "消防电话", "fire telephone"),
))

# 表5 部件类型 (component type). Std §8.2.1.2.
COMPONENT_TYPES: Mapping[int, Code] = _table((
    (0, "通用", "generic"),
    (1, "火灾报警控制器", "fire alarm control panel"),
    (10, "可燃气体探测器", "combustible gas detector"),
    (11, "点型可燃气体探测器", "point combustible gas detector"),
    (12, "独立式可燃气体探测器", "stand-alone combustible gas detector"),
    (13, "线型可燃气体探测器", "line combustible gas detector"),
    (16, "电气火灾监控报警器", "electrical fire monitoring alarm unit"),
    (17, "剩余电流式电气火灾监控探测器", "residual-current electrical fire detector"),
    (18, "测温式电气火灾监控探测器", "temperature-type electrical fire detector"),
    (21, "探测回路", "detection loop"),
    (22, "火灾显示盘", "fire display panel"),
    (23, "手动火灾报警按钮", "manual call point"),
    (24, "消火栓按钮", "hydrant button"),
    (25, "火灾探测器", "fire detector"),
    (30, "感温火灾探测器", "heat detector"),
    (31, "点型感温火灾探测器", "point heat detector"),
    (32, "点型感温火灾探测器(S型)", "point heat detector, S type"),
    (33, "点型感温火灾探测器(R型)", "point heat detector, R type"),
    (34, "线型感温火灾探测器", "line heat detector"),
    (35, "线型感温火灾探测器(S型)", "line heat detector, S type"),
    (36, "线型感温火灾探测器(R型)", "line heat detector, R type"),
    (37, "光纤感温火灾探测器", "fibre-optic heat detector"),
    (40, "感烟火灾探测器", "smoke detector"),
    (41, "点型离子感烟火灾探测器", "point ionisation smoke detector"),
    (42, "点型光电感烟火灾探测器", "point photoelectric smoke detector"),
    (43, "线型光束感烟火灾探测器", "linear beam smoke detector"),
    (44, "吸气式感烟火灾探测器", "aspirating smoke detector"),
    (50, "复合式火灾探测器", "multi-sensor fire detector"),
    (51, "复合式感烟感温火灾探测器", "smoke and heat multi-sensor detector"),
    (52, "复合式感光感温火灾探测器", "flame and heat multi-sensor detector"),
    (53, "复合式感光感烟火灾探测器", "flame and smoke multi-sensor detector"),
    (61, "紫外火焰探测器", "UV flame detector"),
    (62, "红外火焰探测器", "IR flame detector"),
    (69, "感光火灾探测器", "optical flame detector"),
    (74, "气体探测器", "gas detector"),
    (78, "图像摄像方式火灾探测器", "video image fire detector"),
    (79, "感声火灾探测器", "acoustic fire detector"),
    (81, "气体灭火控制器", "gas extinguishing controller"),
    (82, "消防电气控制装置", "fire electrical control device"),
    (83, "消防控制室图形显示装置", "fire control room graphic display unit"),
    (84, "模块", "module"),
    (85, "输入模块", "input module"),
    (86, "输出模块", "output module"),
    (87, "输入/输出模块", "input/output module"),
    (88, "中继模块", "relay module"),
    (91, "消防水泵", "fire pump"),
    (92, "消防水箱", "fire water tank"),
    (95, "喷淋泵", "sprinkler pump"),
    (96, "水流指示器", "water flow indicator"),
    (97, "信号阀", "signal valve"),
    (98, "报警阀", "alarm valve"),
    (99, "压力开关", "pressure switch"),
    (101, "阀驱动装置", "valve actuator"),
    (102, "防火门", "fire door"),
    (103, "防火阀", "fire damper"),
    (104, "通风空调", "ventilation and air conditioning"),
    (105, "泡沫液泵", "foam concentrate pump"),
    (106, "管网电磁阀", "pipe-network solenoid valve"),
    (111, "防烟排烟风机", "smoke control and exhaust fan"),
    (113, "排烟防火阀", "smoke exhaust fire damper"),
    (114, "常闭送风口", "normally-closed air supply outlet"),
    (115, "排烟口", "smoke outlet"),
    (116, "电控挡烟垂壁", "electrically controlled smoke curtain"),
    (117, "防火卷帘控制器", "fire shutter controller"),
    (118, "防火门监控器", "fire door monitor"),
    (121, "警报装置", "alarm sounder and beacon"),
))


@dataclass(frozen=True, slots=True)
class AnalogType:
    """One row of 表6 模拟量定义: physical value = raw int16 x resolution."""

    value: int
    zh: str
    en: str
    quantity: str  # firegate's quantity name (protocols.wire vocabulary)
    unit: str
    resolution: float
    minimum: float | None
    maximum: float | None


# 表6 模拟量定义 (analog value types). Std §8.2.1.3. The "valid range" is in physical units and
# the raw value is scaled by the resolution (最小计量单元): 0-3200 V at 0.1 V is raw 0-32000.
ANALOG_TYPES: Mapping[int, AnalogType] = {
    a.value: a
    for a in (
        AnalogType(1, "事件计数", "event count", "event_count", "", 1, 0, 32000),
        AnalogType(2, "高度", "height", "level", "m", 0.01, 0, 320),
        AnalogType(3, "温度", "temperature", "temperature", "°C", 0.1, -273, 3200),
        AnalogType(4, "压力", "pressure", "pressure", "MPa", 0.1, 0, 3200),
        AnalogType(5, "压力", "pressure", "pressure", "kPa", 0.1, 0, 3200),
        AnalogType(6, "气体浓度", "gas concentration", "gas_concentration", "%LEL", 0.1, 0, 100),
        AnalogType(7, "时间", "time", "duration", "s", 1, 0, 32000),
        AnalogType(8, "电压", "voltage", "voltage", "V", 0.1, 0, 3200),
        AnalogType(9, "电流", "current", "current", "A", 0.1, 0, 3200),
        AnalogType(10, "流量", "flow", "flow", "L/s", 0.1, 0, 3200),
        AnalogType(11, "风量", "air volume", "air_volume", "m³/min", 0.1, 0, 3200),
        AnalogType(12, "风速", "wind speed", "wind_speed", "m/s", 1, 0, 20),
    )
}


class SystemState(IntFlag):
    """建筑消防设施系统状态, 2 bytes LE (图6). Bit 0 set means *normal* (clear = test)."""

    NORMAL = 1 << 0
    FIRE_ALARM = 1 << 1
    FAULT = 1 << 2
    DISABLED = 1 << 3
    SUPERVISORY = 1 << 4
    STARTED = 1 << 5
    FEEDBACK = 1 << 6
    DELAY = 1 << 7
    MAINS_POWER_FAULT = 1 << 8
    BACKUP_POWER_FAULT = 1 << 9
    BUS_FAULT = 1 << 10
    MANUAL_MODE = 1 << 11
    CONFIG_CHANGED = 1 << 12
    RESET = 1 << 13


class ComponentState(IntFlag):
    """建筑消防设施部件状态, 2 bytes LE (图7). Bit 0 set means *normal* (clear = test)."""

    NORMAL = 1 << 0
    FIRE_ALARM = 1 << 1
    FAULT = 1 << 2
    DISABLED = 1 << 3
    SUPERVISORY = 1 << 4
    STARTED = 1 << 5
    FEEDBACK = 1 << 6
    DELAY = 1 << 7
    POWER_FAULT = 1 << 8


class UitdState(IntFlag):
    """用户信息传输装置运行状态, 1 byte (图13). Bit 0 set means normal monitoring."""

    NORMAL = 1 << 0
    FIRE_ALARM = 1 << 1
    FAULT = 1 << 2
    MAINS_POWER_FAULT = 1 << 3
    BACKUP_POWER_FAULT = 1 << 4
    CENTRE_LINK_FAULT = 1 << 5
    MONITORING_LINE_FAULT = 1 << 6


class FacilityOperation(IntFlag):
    """建筑消防设施操作信息 操作标志, 1 byte (图9)."""

    RESET = 1 << 0
    SILENCE = 1 << 1
    MANUAL_ALARM = 1 << 2
    ALARM_CLEARED = 1 << 3
    SELF_TEST = 1 << 4
    ACKNOWLEDGE = 1 << 5
    TEST = 1 << 6


class UitdOperation(IntFlag):
    """用户信息传输装置操作信息 操作标志, 1 byte (图14); bit 5 differs from 图9."""

    RESET = 1 << 0
    SILENCE = 1 << 1
    MANUAL_ALARM = 1 << 2
    ALARM_CLEARED = 1 << 3
    SELF_TEST = 1 << 4
    CHECK_POST_ANSWER = 1 << 5
    TEST = 1 << 6


# Chinese names of each flag when set (the figures' "=1" column).
FLAG_ZH: Mapping[type[IntFlag], Mapping[int, str]] = {
    SystemState: {
        0: "正常运行", 1: "火警", 2: "故障", 3: "屏蔽", 4: "监管", 5: "启动(开启)", 6: "反馈",
        7: "延时状态", 8: "主电故障", 9: "备电故障", 10: "总线故障", 11: "手动状态",
        12: "配置改变", 13: "复位",
    },
    ComponentState: {
        0: "正常运行", 1: "火警", 2: "故障", 3: "屏蔽", 4: "监管", 5: "启动(开启)", 6: "反馈",
        7: "延时状态", 8: "电源故障",
    },
    UitdState: {
        0: "正常监视", 1: "火警", 2: "故障", 3: "主电故障", 4: "备电故障",
        5: "与监控中心通信信道故障", 6: "监测连接线路故障",
    },
    FacilityOperation: {
        0: "复位", 1: "消音", 2: "手动报警", 3: "警情消除", 4: "自检", 5: "确认", 6: "测试",
    },
    UitdOperation: {
        0: "复位", 1: "消音", 2: "手动报警", 3: "警情消除", 4: "自检", 5: "查岗应答", 6: "测试",
    },
}


def flag_names(flags: IntFlag) -> list[str]:
    """Snake-case names of the set bits, low bit first; unnamed set bits as ``bit<n>``."""
    out: list[str] = []
    value = int(flags)
    cls = type(flags)
    for bit in range(value.bit_length()):
        if value >> bit & 1:
            try:
                name = cls(1 << bit).name
            except ValueError:  # pragma: no cover - IntFlag keeps unknown bits instead
                name = None
            out.append(name.lower() if name else f"bit{bit}")
    return out


def flag_names_zh(flags: IntFlag) -> list[str]:
    """Chinese names of the set bits; unnamed bits as ``位<n>``."""
    zh = FLAG_ZH[type(flags)]
    value = int(flags)
    return [zh.get(bit, f"位{bit}") for bit in range(value.bit_length()) if value >> bit & 1]
