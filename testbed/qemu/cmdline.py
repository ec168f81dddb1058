"""The QEMU command line as a pure function of a machine spec and a few paths.

Nothing here touches the file system or starts anything, so the whole argv is unit-tested
against golden files (``tests/data/argv/``). :func:`device_properties` is shared by the boot
command line and by QMP ``device_add``, so a re-plugged device is the same device.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from testbed.config.schema import Accel, DeviceInstance, Hotplug
from testbed.devices.registry import Machine

#: Kernel arguments every guest gets. Once the pvpanic driver is loaded, a panic pauses QEMU
#: (``-action panic=pause``): the guest stays inspectable and the host sees GUEST_PANICKED.
#: A panic before that (early boot, initramfs, a built-in driver) reboots at once
#: (``panic=-1``), which ``-action reboot=shutdown`` turns into QEMU exiting: the machine
#: reports it within a second instead of at the boot timeout.
BASE_KERNEL_ARGS = ("console=ttyS0", "rdinit=/init", "printk.time=1", "panic=-1")


@dataclass(frozen=True)
class Launch:
    """Everything about one start of a machine that is not in its spec."""

    qemu: str  #: path of qemu-system-x86_64
    accel: Accel  #: KVM or TCG, already decided (never AUTO here)
    kernel: Path
    initrd: Path
    console_log: Path
    #: QMP's socket; None for ``testbed exec``'s machine, which needs no monitor: a panic
    #: then ends QEMU (``-action panic=exit-failure``) instead of pausing it
    qmp_socket: Path | None
    backing_dir: Path  #: where the BAR backing files live
    ssh_port: int = 0  #: host port forwarded to the guest's sshd; 0 lets QEMU pick
    kernel_args: tuple[str, ...] = ()
    name: str = "testbed"
    extra_args: tuple[str, ...] = field(default=())
    #: ``testbed exec``'s output port: a second serial port (the guest's ttyS1) that QEMU
    #: writes to this file and the guest cannot read from (:mod:`testbed.guest.execout`)
    exec_output: Path | None = None


def _path(path: Path) -> str:
    """A path as a QEMU option value: a literal comma is written as two."""
    return str(path).replace(",", ",,")


def memdev_id(dev: DeviceInstance) -> str:
    return f"mem-{dev.id}"


def backing_file(backing_dir: Path, dev: DeviceInstance) -> Path:
    return backing_dir / f"{dev.id}.bar"


def _props(props: dict[str, str]) -> str:
    # The schema rejects commas in names and values (testbed.config.schema.check_properties);
    # this is the last line of defence for values built in code.
    for key, value in props.items():
        if "," in key or "=" in key or "," in value:
            raise ValueError(f"property {key}={value!r}: ',' and '=' would inject options")
    return ",".join(f"{k}={v}" for k, v in props.items())


def device_properties(machine: Machine, dev: DeviceInstance) -> dict[str, str]:
    """``-device`` / ``device_add`` properties of ``dev``, driver first."""
    dtype = machine.type_of(dev)
    props = {"driver": dtype.qemu_driver, "id": dev.id, "bus": dev.port_id}
    if dtype.backing is not None:
        props["memdev"] = memdev_id(dev)
    props.update(dtype.properties)
    props.update(dev.properties)
    return props


def backing_size(machine: Machine, dev: DeviceInstance) -> int | None:
    dtype = machine.type_of(dev)
    if dtype.backing is None:
        return None
    return int(dev.bar_size if dev.bar_size is not None else dtype.backing.size)


def build_argv(machine: Machine, launch: Launch) -> list[str]:
    """The full QEMU argv for ``machine`` started as ``launch`` says."""
    if launch.accel is Accel.AUTO:
        raise ValueError("decide the accelerator before building the command line")
    spec = machine.spec
    cpu = spec.cpu_model or ("host" if launch.accel is Accel.KVM else "max")
    argv = [
        launch.qemu,
        "-name", f"{launch.name},debug-threads=on",
        "-machine", "q35",
        "-accel", launch.accel.value,
        "-cpu", cpu,
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory // (1 << 20)}M",
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-kernel", str(launch.kernel),  # plain file names: no comma escaping
        "-initrd", str(launch.initrd),
        "-append", " ".join((*BASE_KERNEL_ARGS, *spec.kernel_args, *launch.kernel_args)),
        "-chardev", f"file,id=console,path={_path(launch.console_log)}",
        "-serial", "chardev:console",
    ]  # fmt: skip
    if launch.qmp_socket is not None:
        argv += [
            "-chardev", f"socket,id=qmp,path={_path(launch.qmp_socket)}",
            "-mon", "chardev=qmp,mode=control",
        ]  # fmt: skip
    argv += [
        "-action", "panic=pause" if launch.qmp_socket is not None else "panic=exit-failure",
        "-action", "reboot=shutdown",
        "-device", "pvpanic-pci",
    ]  # fmt: skip
    if launch.qmp_socket is not None:
        # restrict=on: the guest (an untrusted kernel) reaches nothing on the host or beyond;
        # the SSH forward still works, it is a connection from the host in. testbed exec's
        # machine (no monitor, its output on a serial port) has no network at all: nothing
        # would use it, and the guest would probe the NIC on every boot.
        argv += [
            "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{launch.ssh_port}-:22",
            "-device", "virtio-net-pci,netdev=net0,romfile=",
        ]  # fmt: skip
    if launch.exec_output is not None:
        argv += [
            "-chardev", f"file,id=execout,path={_path(launch.exec_output)}",
            "-serial", "chardev:execout",
        ]  # fmt: skip
    if spec.hotplug is Hotplug.NATIVE:
        argv += ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]
    # Every hot-plug capable port gets its own chassis/slot pair, numbered in argv order.
    slots = iter(range(1, 256))
    for sw in spec.switches:
        n = next(slots)
        argv += [
            "-device", f"pcie-root-port,id={sw.port_id},bus=pcie.0,chassis={n},slot={n}",
            "-device", f"x3130-upstream,id={sw.id},bus={sw.port_id}",
        ]  # fmt: skip
    downstream = dict.fromkeys((sw.id for sw in spec.switches), 0)
    for dev in spec.devices:
        size = backing_size(machine, dev)
        if size is not None:
            path = backing_file(launch.backing_dir, dev)
            argv += [
                "-object",
                f"memory-backend-file,id={memdev_id(dev)},share=on,mem-path={_path(path)},size={size}",
            ]
        n = next(slots)
        if dev.switch is None:
            port = f"pcie-root-port,id={dev.port_id},bus=pcie.0,chassis={n},slot={n}"
        else:
            port = (
                f"xio3130-downstream,id={dev.port_id},bus={dev.switch},"
                f"port={downstream[dev.switch]},chassis={n},slot={n}"
            )
            downstream[dev.switch] += 1
        argv += ["-device", port]
        props = device_properties(machine, dev)
        driver = props.pop("driver")
        argv += ["-device", f"{driver},{_props(props)}"]
    argv += list(launch.extra_args)
    return argv


def shell_line(argv: list[str]) -> str:
    """``argv`` as one line a developer can paste into a shell."""
    return shlex.join(argv)


def bare_argv(
    qemu: str,
    accel: Accel,
    kernel: Path,
    initrd: Path,
    console_log: Path,
    *,
    memory: int,
    cpus: int,
    cpu_model: str | None = None,
    kernel_args: tuple[str, ...] = (),
) -> list[str]:
    """The plainest QEMU that boots ``kernel`` + ``initrd`` (the benchmark's baseline).

    Same machine type, CPU model, memory and kernel arguments as :func:`build_argv`, but no
    devices, no QMP and no network: what any harness would pay to reach the guest's init.
    """
    if accel is Accel.AUTO:
        raise ValueError("decide the accelerator before building the command line")
    return [
        qemu,
        "-machine", "q35",
        "-accel", accel.value,
        "-cpu", cpu_model or ("host" if accel is Accel.KVM else "max"),
        "-smp", str(cpus),
        "-m", f"{memory // (1 << 20)}M",
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", " ".join((*BASE_KERNEL_ARGS, *kernel_args)),
        "-chardev", f"file,id=console,path={_path(console_log)}",
        "-serial", "chardev:console",
    ]  # fmt: skip
