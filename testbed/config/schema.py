"""What the testbed works with, as frozen dataclasses: device types, machines, instances.

These are plain data loaded from YAML by :mod:`testbed.config.loader`; the code that acts on
them lives in :mod:`testbed.qemu` and :mod:`testbed.devices`. Validation that needs only the
object itself happens in ``__post_init__`` (raising ``ValueError``, which the loader turns into
a located :class:`~testbed.errors.ConfigError`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from testbed.config.loader import Size

_QEMU_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,30}$")
_PCI_ID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")


class Hotplug(enum.Enum):
    """How the guest learns about hot-plug events on q35."""

    ACPI = "acpi"  #: ACPI PCI hotplug (QEMU 7.2's q35 default); DEVICE_DELETED in ~0.1 s
    NATIVE = "native"  #: native PCIe hotplug (pciehp); attention button + 5 s blink


class Accel(enum.Enum):
    """Which accelerator QEMU uses."""

    AUTO = "auto"  #: probe KVM with a bounded test boot, fall back to TCG
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class Backing:
    """A host file that backs a device BAR (QEMU ``memory-backend-file``, share=on)."""

    size: Size = field(default_factory=lambda: Size(64 << 20))

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size & (self.size - 1):
            raise ValueError(f"backing size must be a power of two, got {Size(self.size).human()}")


@dataclass(frozen=True)
class DeviceType:
    """One kind of emulated device, from ``qemu-devices/<name>/device.yaml``."""

    name: str
    description: str
    qemu_driver: str  #: the ``-device`` driver name, e.g. ``ivshmem-plain``
    pci_id: str  #: ``vendor:device`` as the guest sees it, e.g. ``1af4:1110``
    properties: dict[str, str] = field(default_factory=dict)  #: extra ``-device`` properties
    backing: Backing | None = None  #: a host-file-backed BAR, passed as ``memdev``
    guest_module: str | None = None  #: the guest driver module that binds this device
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _QEMU_ID.match(self.name):
            raise ValueError(f"device type name {self.name!r} must look like a QEMU id")
        if not _PCI_ID.match(self.pci_id):
            raise ValueError(f"pci-id must be 'vvvv:dddd' in lower-case hex, got {self.pci_id!r}")


def _check_qemu_id(what: str, value: str) -> None:
    if not _QEMU_ID.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter and use letters, digits, "
            "'-', '_' or '.' (at most 31 characters)"
        )


@dataclass(frozen=True)
class Switch:
    """A PCIe switch: an ``x3130-upstream`` port behind a pcie-root-port of its own, and one
    ``xio3130-downstream`` port per device placed on it (``switch: <id>`` on the device).

    Devices under one switch share an upstream bridge, which is what Linux's P2PDMA policy
    (``pci_p2pdma_distance``) asks for; devices on separate root ports do not.
    """

    id: str  #: the QEMU id of the upstream port; its root port is ``rp-<id>``
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_qemu_id("switch id", self.id)

    @property
    def port_id(self) -> str:
        """The id of the pcie-root-port the switch's upstream port sits behind."""
        return f"rp-{self.id}"


@dataclass(frozen=True)
class DeviceInstance:
    """A device placed in a machine: ``id`` is the QEMU device id used for hot-plug."""

    id: str
    type: str
    bar_size: Size | None = None  #: overrides the type's backing size
    properties: dict[str, str] = field(default_factory=dict)
    #: where it sits: None behind a pcie-root-port of its own, else behind a downstream port
    #: of the switch with this id (see :class:`Switch`)
    switch: str | None = None
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_qemu_id("device id", self.id)
        if self.bar_size is not None:
            Backing(self.bar_size)  # same power-of-two rule

    @property
    def port_id(self) -> str:
        """The id of the port this device sits behind (its hot-plug slot): its own
        pcie-root-port ``rp-<id>``, or its switch's downstream port ``dp-<id>``."""
        return f"dp-{self.id}" if self.switch is not None else f"rp-{self.id}"


@dataclass(frozen=True)
class MachineSpec:
    """A q35 guest machine: memory, CPUs, hotplug path and the devices in it."""

    name: str
    description: str = ""
    memory: Size = field(default_factory=lambda: Size(1 << 30))
    cpus: int = 1
    cpu_model: str | None = None  #: None: ``max`` under TCG, ``host`` under KVM
    accel: Accel = Accel.AUTO
    hotplug: Hotplug = Hotplug.ACPI
    kernel_args: tuple[str, ...] = ()
    switches: tuple[Switch, ...] = ()  #: PCIe switches devices may sit under
    devices: tuple[DeviceInstance, ...] = ()
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ValueError(f"cpus must be at least 1, got {self.cpus}")
        if self.memory < 128 << 20:
            raise ValueError(f"memory must be at least 128M, got {Size(self.memory).human()}")
        seen: set[str] = set()
        for dev in self.devices:
            if dev.id in seen:
                raise ValueError(f"device id {dev.id!r} is used twice")
            seen.add(dev.id)
        switch_ids = [sw.id for sw in self.switches]
        for sw in self.switches:
            if sw.id in seen:
                raise ValueError(f"switch id {sw.id!r} is also a device id or used twice")
            seen.add(sw.id)
        for dev in self.devices:
            if dev.switch is not None and dev.switch not in switch_ids:
                known = ", ".join(switch_ids) or "none declared under 'switches'"
                raise ValueError(
                    f"device {dev.id!r} sits on switch {dev.switch!r}, which does not exist; "
                    f"known switches: {known}"
                )
        for sw in self.switches:
            if not any(dev.switch == sw.id for dev in self.devices):
                raise ValueError(f"switch {sw.id!r} has no device on it")

    def device(self, device_id: str) -> DeviceInstance:
        """The instance with ``device_id``; :class:`UnknownNameError` lists the valid ids."""
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        from testbed.errors import UnknownNameError

        raise UnknownNameError(
            "device id", device_id, [d.id for d in self.devices], path=self.source or None
        )
