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

from testbed.config.loader import FieldError, Size

_QEMU_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,30}$")
_PCI_ID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")
#: a QEMU device driver or property name: ``ivshmem-plain``, ``dma_mask``, ``x-pcie-lnksta``
_QEMU_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]{0,63}$")
#: ``-cpu``'s one argument: a model name and optional ``,+feature`` / ``,feature=on``
_CPU_MODEL = re.compile(r"^[A-Za-z][A-Za-z0-9_.+=,-]{0,127}$")
#: a property value: anything but what would end it (``,``) or split the line (whitespace,
#: control characters) -- ``-device`` is one argument of comma-separated ``key=value`` pairs
_PROPERTY_VALUE = re.compile(r"^[^,\s\x00-\x1f\x7f]{0,256}$")

#: Properties the testbed sets itself (``id``, ``bus``, ``memdev``: see
#: :func:`testbed.qemu.cmdline.device_properties`) or that would let a YAML file reach beyond
#: its device: ``addr``/``chassis``/``slot`` collide with the testbed's topology, ``romfile``
#: makes QEMU read any host file into the guest (only ``romfile: ''``, no ROM, is allowed),
#: ``chardev``/``netdev``/``drive`` attach host back-ends.
RESERVED_PROPERTIES = frozenset(
    {
        "driver", "id", "bus", "addr", "memdev", "chassis", "slot", "multifunction",
        "romfile", "chardev", "netdev", "drive", "host", "sysfsdev", "failover_pair_id",
    }
)  # fmt: skip

#: QEMU q35's default 64-bit PCI window (``pci-hole64-size``: 32 GiB, read with ``qom-get
#: /machine/q35 pci-hole64-size`` on QEMU 7.2; ``Q35_PCI_HOST_HOLE64_SIZE_DEFAULT``).
Q35_PCI_HOLE64 = 1 << 35
#: What the host-backed BARs of one machine may add up to: half the window. The window
#: starts only 1 GiB-aligned and a BAR must be aligned to its size, so a BAR of half the
#: window may waste up to its own size in alignment; with at most half used, any set of
#: power-of-two BARs, placed largest first, fits.
MAX_BAR_TOTAL = Q35_PCI_HOLE64 // 2


def check_properties(properties: dict[str, str]) -> None:
    """Raise :class:`FieldError` unless every ``-device`` property is safe to pass to QEMU."""
    for key, value in properties.items():
        if key == "romfile" and value == "":
            continue
        if not _QEMU_NAME.match(key):
            raise FieldError(
                f"property name {key!r} must be a QEMU property name (letters, digits, "
                "'-', '_', '.', '+'; no ',', '=' or spaces)",
                "properties",
                key,
            )
        if key in RESERVED_PROPERTIES:
            raise FieldError(
                f"property {key!r} is reserved (the testbed sets it, or it reaches host "
                f"resources); reserved: {', '.join(sorted(RESERVED_PROPERTIES))}",
                "properties",
                key,
            )
        if not _PROPERTY_VALUE.match(value):
            raise FieldError(
                f"property {key}: value {value!r} must not contain ',', whitespace or control "
                "characters (at most 256 characters)",
                "properties",
                key,
            )


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
        if not _QEMU_NAME.match(self.qemu_driver):
            raise FieldError(
                f"qemu-driver {self.qemu_driver!r} must be a QEMU device name such as "
                "'ivshmem-plain' (letters, digits, '-', '_', '.'; no ',', '=' or spaces)",
                "qemu_driver",
            )
        check_properties(self.properties)
        if self.backing is not None and self.backing.size > MAX_BAR_TOTAL:
            raise FieldError(_bar_too_big(self.backing.size), "backing")


def _bar_too_big(size: int) -> str:
    return (
        f"a BAR of {Size(size).human()} does not fit q35's 64-bit PCI window "
        f"({Size(Q35_PCI_HOLE64).human()}; the testbed allows {Size(MAX_BAR_TOTAL).human()} "
        "of host-backed BARs per machine); use a smaller size"
    )


@dataclass(frozen=True)
class DeviceInstance:
    """A device placed in a machine: ``id`` is the QEMU device id used for hot-plug."""

    id: str
    type: str
    bar_size: Size | None = None  #: overrides the type's backing size
    properties: dict[str, str] = field(default_factory=dict)
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _QEMU_ID.match(self.id):
            raise ValueError(
                f"device id {self.id!r} must start with a letter and use letters, digits, "
                "'-', '_' or '.' (at most 31 characters)"
            )
        if self.bar_size is not None:
            Backing(self.bar_size)  # same power-of-two rule
            if self.bar_size > MAX_BAR_TOTAL:
                raise FieldError(_bar_too_big(self.bar_size), "bar_size")
        check_properties(self.properties)

    @property
    def port_id(self) -> str:
        """The id of the pcie-root-port this device sits behind."""
        return f"rp-{self.id}"


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
    devices: tuple[DeviceInstance, ...] = ()
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _QEMU_ID.match(self.name):
            raise FieldError(
                f"machine name {self.name!r} must start with a letter and use letters, digits, "
                "'-', '_' or '.' (at most 31 characters)",
                "name",
            )
        if self.cpu_model is not None and not _CPU_MODEL.match(self.cpu_model):
            raise FieldError(
                f"cpu-model {self.cpu_model!r} must be a QEMU CPU model such as 'max' or "
                "'max,-la57' (no spaces or control characters)",
                "cpu_model",
            )
        for index, arg in enumerate(self.kernel_args):
            if not arg or any(c.isspace() or ord(c) < 32 for c in arg):
                raise FieldError(
                    f"kernel argument {arg!r} must be one word (no spaces or control "
                    "characters); give each argument as its own list item",
                    "kernel_args",
                    index,
                )
        if self.cpus < 1:
            raise ValueError(f"cpus must be at least 1, got {self.cpus}")
        if self.memory < 128 << 20:
            raise ValueError(f"memory must be at least 128M, got {Size(self.memory).human()}")
        seen: dict[str, int] = {}
        for index, dev in enumerate(self.devices):
            if dev.id in seen:
                raise FieldError(
                    f"device id {dev.id!r} is used twice (first by devices[{seen[dev.id]}]); "
                    "give each device its own id",
                    "devices",
                    index,
                )
            seen[dev.id] = index

    def device(self, device_id: str) -> DeviceInstance:
        """The instance with ``device_id``; :class:`UnknownNameError` lists the valid ids."""
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        from testbed.errors import UnknownNameError

        raise UnknownNameError(
            "device id", device_id, [d.id for d in self.devices], path=self.source or None
        )
