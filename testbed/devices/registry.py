"""The registries of device types and machine specs found under ``qemu-devices/``.

A machine spec names device *types*; :func:`resolve` checks every name against the device
registry so that a typo fails at load time, pointing at the file and line, with the list of
valid names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.config.loader import Size, load_dataclass
from testbed.config.schema import (
    MAX_BAR_TOTAL,
    Q35_PCI_HOLE64,
    DeviceInstance,
    DeviceType,
    MachineSpec,
)
from testbed.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Machine:
    """A machine spec whose device types have all been found: what the QEMU layer needs."""

    spec: MachineSpec
    types: dict[str, DeviceType]

    def type_of(self, device: DeviceInstance) -> DeviceType:
        return self.types[device.type]


def device_types(root: Path | None = None) -> dict[str, DeviceType]:
    """Every ``<root>/<name>/device.yaml``; the folder name must match the ``name`` key."""
    root = root or paths.devices_dir()
    types: dict[str, DeviceType] = {}
    for path in sorted(root.glob("*/device.yaml")):
        dtype = load_dataclass(DeviceType, path)
        if dtype.name != path.parent.name:
            raise ConfigError(
                f"name {dtype.name!r} does not match the folder name {path.parent.name!r}; "
                "rename one of them",
                path=path,
                key="name",
            )
        types[dtype.name] = dtype
    return types


def machine_names(root: Path | None = None) -> list[str]:
    root = root or paths.devices_dir()
    return sorted(p.stem for p in (root / "machines").glob("*.yaml"))


def load_machine(name_or_path: str | Path, root: Path | None = None) -> Machine:
    """A machine by registry name (``default``) or by path to a YAML file."""
    root = root or paths.devices_dir()
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        path = candidate
    else:
        path = root / "machines" / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UnknownNameError("machine", str(name_or_path), machine_names(root))
    spec = load_dataclass(MachineSpec, path)
    return resolve(spec, device_types(root))


def resolve(spec: MachineSpec, types: dict[str, DeviceType]) -> Machine:
    used: dict[str, DeviceType] = {}
    bar_total = 0
    for dev in spec.devices:
        if dev.type not in types:
            where, _, line = dev.source.rpartition(":")
            raise UnknownNameError(
                "device type",
                dev.type,
                list(types),
                path=where or None,
                line=int(line) if line.isdigit() else None,
                key="type",
            )
        used[dev.type] = types[dev.type]
        dtype = types[dev.type]
        if dev.bar_size is not None and dtype.backing is None:
            where, _, line = dev.source.rpartition(":")
            raise ConfigError(
                f"bar-size given, but device type {dtype.name!r} has no host-backed BAR",
                path=where or None,
                line=int(line) if line.isdigit() else None,
                key="bar-size",
            )
        if dtype.backing is not None:
            bar_total += dev.bar_size if dev.bar_size is not None else dtype.backing.size
            if bar_total > MAX_BAR_TOTAL:
                where, _, line = dev.source.rpartition(":")
                raise ConfigError(
                    f"the host-backed BARs up to this device add up to "
                    f"{Size(bar_total).human()}, more than q35's 64-bit PCI window holds "
                    f"(the testbed allows {Size(MAX_BAR_TOTAL).human()} of "
                    f"{Size(Q35_PCI_HOLE64).human()}); use smaller bar-size values or fewer "
                    "devices",
                    path=where or None,
                    line=int(line) if line.isdigit() else None,
                    key="bar-size",
                )
    return Machine(spec=spec, types=used)
