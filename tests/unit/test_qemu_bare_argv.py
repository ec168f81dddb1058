"""The benchmark's baseline QEMU command line (testbed.qemu.cmdline.bare_argv).

It must boot the same kernel on the same virtual hardware as :func:`build_argv` (machine
type, CPU model, memory, CPU count, kernel arguments, console) with nothing else: no devices,
no QMP monitor, no network.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from testbed.config.loader import Size
from testbed.config.schema import Accel
from testbed.devices import registry
from testbed.qemu.cmdline import BASE_KERNEL_ARGS, Launch, bare_argv, build_argv

QEMU = "/fake/bin/qemu-system-x86_64"
KERNEL = Path("/fake/kernel/bzImage")
INITRD = Path("/fake/run/initrd.cpio")
CONSOLE = Path("/fake/run/bare-console.log")


@pytest.fixture(autouse=True)
def _real_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_DEVICES_DIR", raising=False)


def bare(accel: Accel = Accel.TCG, memory: int = 1 << 30, cpus: int = 1) -> list[str]:
    return bare_argv(QEMU, accel, KERNEL, INITRD, CONSOLE, memory=memory, cpus=cpus)


def values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def launch(accel: Accel) -> Launch:
    return Launch(
        qemu=QEMU,
        accel=accel,
        kernel=KERNEL,
        initrd=INITRD,
        console_log=CONSOLE,
        qmp_socket=Path("/fake/run/qmp.sock"),
        backing_dir=Path("/fake/run/backing"),
    )


def test_starts_with_qemu_and_boots_kernel_and_initrd() -> None:
    argv = bare()
    assert argv[0] == QEMU
    assert values(argv, "-machine") == ["q35"]
    assert values(argv, "-kernel") == [str(KERNEL)]
    assert values(argv, "-initrd") == [str(INITRD)]
    assert values(argv, "-append") == [" ".join(BASE_KERNEL_ARGS)]
    assert values(argv, "-chardev") == [f"file,id=console,path={CONSOLE}"]
    assert values(argv, "-serial") == ["chardev:console"]
    assert values(argv, "-display") == ["none"]
    for flag in ("-nodefaults", "-no-user-config"):
        assert argv.count(flag) == 1


@pytest.mark.parametrize("accel", [Accel.TCG, Accel.KVM])
def test_no_devices_monitor_or_network(accel: Accel) -> None:
    argv = bare(accel)
    for option in ("-netdev", "-device", "-mon", "-qmp", "-object", "-global", "-nic", "-net"):
        assert option not in argv, option
    assert not any("qmp" in arg or "hostfwd" in arg for arg in argv)


@pytest.mark.parametrize(("accel", "cpu"), [(Accel.TCG, "max"), (Accel.KVM, "host")])
def test_accel_and_cpu_model(accel: Accel, cpu: str) -> None:
    argv = bare(accel)
    assert values(argv, "-accel") == [accel.value]
    assert values(argv, "-cpu") == [cpu]


@pytest.mark.parametrize(
    ("memory", "cpus", "m", "smp"),
    [(1 << 30, 1, "1024M", "1"), (512 << 20, 4, "512M", "4"), (3 << 30, 2, "3072M", "2")],
)
def test_memory_and_cpus(memory: int, cpus: int, m: str, smp: str) -> None:
    argv = bare(memory=memory, cpus=cpus)
    assert values(argv, "-m") == [m]
    assert values(argv, "-smp") == [smp]


def test_auto_accel_is_refused() -> None:
    with pytest.raises(ValueError, match="decide the accelerator"):
        bare(Accel.AUTO)


def test_comma_in_console_path_is_doubled() -> None:
    argv = bare_argv(
        QEMU, Accel.TCG, KERNEL, INITRD, Path("/tmp/a,b/console.log"), memory=1 << 30, cpus=1
    )
    assert values(argv, "-chardev") == ["file,id=console,path=/tmp/a,,b/console.log"]


def test_pure() -> None:
    assert bare() == bare()


@pytest.mark.parametrize("accel", [Accel.TCG, Accel.KVM])
@pytest.mark.parametrize(("memory", "cpus"), [(1 << 30, 1), (768 << 20, 2)])
@pytest.mark.parametrize("name", ["default", "native-hotplug"])
def test_same_hardware_as_build_argv(accel: Accel, memory: int, cpus: int, name: str) -> None:
    machine = registry.load_machine(name)
    assert machine.spec.kernel_args == ()
    spec = dataclasses.replace(machine.spec, memory=Size(memory), cpus=cpus)
    full = build_argv(dataclasses.replace(machine, spec=spec), launch(accel))
    base = bare_argv(
        QEMU,
        accel,
        KERNEL,
        INITRD,
        CONSOLE,
        memory=memory,
        cpus=cpus,
        cpu_model=machine.spec.cpu_model,
    )
    for option in ("-machine", "-accel", "-cpu", "-smp", "-m", "-kernel", "-initrd", "-append"):
        assert values(base, option) == values(full, option), option
    assert values(base, "-chardev")[0] == values(full, "-chardev")[0]  # the console
    assert values(base, "-serial") == values(full, "-serial")
