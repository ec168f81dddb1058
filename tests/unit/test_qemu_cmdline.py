"""The QEMU command line (testbed.qemu.cmdline.build_argv), against golden files.

Golden files: ``tests/data/argv/<machine>.txt`` hold the argv of each real machine in
``qemu-devices/machines/`` for the fixed fake :data:`LAUNCH` below, one argument per line. When
the command line changes on purpose, regenerate them and review the diff::

    TESTBED_REGEN_GOLDEN=1 .venv/bin/pytest tests/unit/test_qemu_cmdline.py -p no:cacheprovider
    git diff tests/data/argv/

(With the variable set, the golden tests rewrite the files instead of comparing.)
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

import pytest

from testbed.config.loader import Size
from testbed.config.schema import Accel, Backing, DeviceInstance, DeviceType, Hotplug, MachineSpec
from testbed.devices import registry
from testbed.devices.registry import Machine
from testbed.qemu import cmdline
from testbed.qemu.cmdline import Launch, build_argv, shell_line

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "argv"
REGEN = os.environ.get("TESTBED_REGEN_GOLDEN") == "1"

LAUNCH = Launch(
    qemu="/fake/bin/qemu-system-x86_64",
    accel=Accel.TCG,
    kernel=Path("/fake/kernel/bzImage"),
    initrd=Path("/fake/run/initrd.cpio"),
    console_log=Path("/fake/run/console.log"),
    qmp_socket=Path("/fake/run/qmp.sock"),
    backing_dir=Path("/fake/run/backing"),
    ssh_port=10022,
    kernel_args=("testbed.run=1",),
    name="testbed-golden",
)


@pytest.fixture(autouse=True)
def _real_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_DEVICES_DIR", raising=False)


def option_values(argv: list[str], option: str) -> list[str]:
    """Every value given to ``option`` (e.g. all ``-device`` arguments), in order."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def option_dict(value: str) -> dict[str, str]:
    """``driver,a=b,c=d`` -> {"": driver, a: b, c: d} (no doubled commas expected here)."""
    head, *rest = value.split(",")
    out = {"": head}
    for item in rest:
        key, _, val = item.partition("=")
        out[key] = val
    return out


def small_machine(hotplug: Hotplug = Hotplug.ACPI, cpu_model: str | None = None) -> Machine:
    backed = DeviceType(
        name="backed",
        description="",
        qemu_driver="ivshmem-plain",
        pci_id="1af4:1110",
        backing=Backing(Size(1 << 20)),
    )
    plain = DeviceType(
        name="plain",
        description="",
        qemu_driver="edu",
        pci_id="1234:11e8",
        properties={"dma_mask": "0xffffffffffffffff"},
    )
    spec = MachineSpec(
        name="small",
        cpu_model=cpu_model,
        hotplug=hotplug,
        kernel_args=("quiet",),
        devices=(
            DeviceInstance(id="b0", type="backed", bar_size=Size(4 << 20)),
            DeviceInstance(id="p0", type="plain", properties={"x": "1"}),
            DeviceInstance(id="b1", type="backed"),
        ),
    )
    return Machine(spec=spec, types={"backed": backed, "plain": plain})


# --- golden files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["default", "native-hotplug", "switch", "switch-native", "two-importers"]
)
def test_golden_argv(name: str) -> None:
    argv = build_argv(registry.load_machine(name), LAUNCH)
    assert all("\n" not in arg for arg in argv)
    text = "".join(f"{arg}\n" for arg in argv)
    golden = GOLDEN / f"{name}.txt"
    if REGEN:
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing; run with TESTBED_REGEN_GOLDEN=1 to create it"
    assert text.splitlines() == golden.read_text().splitlines()


@pytest.mark.parametrize(
    ("acpi", "twin"), [("default", "native-hotplug"), ("switch", "switch-native")]
)
def test_goldens_differ_only_by_hotplug_global(acpi: str, twin: str) -> None:
    default = (GOLDEN / f"{acpi}.txt").read_text().splitlines()
    native = (GOLDEN / f"{twin}.txt").read_text().splitlines()
    at = native.index("-global")
    assert native[at : at + 2] == ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]
    assert native[:at] + native[at + 2 :] == default


# --- properties of the command line ------------------------------------------------------------


def test_starts_with_qemu_and_uses_q35() -> None:
    argv = build_argv(small_machine(), LAUNCH)
    assert argv[0] == LAUNCH.qemu
    assert option_values(argv, "-machine") == ["q35"]
    assert option_values(argv, "-smp") == ["1"]
    assert option_values(argv, "-m") == ["1024M"]
    assert "-nodefaults" in argv


def test_tcg_uses_cpu_max_never_host() -> None:
    argv = build_argv(small_machine(), LAUNCH)
    assert option_values(argv, "-accel") == ["tcg"]
    assert option_values(argv, "-cpu") == ["max"]
    assert "host" not in option_values(argv, "-cpu")


def test_kvm_uses_cpu_host() -> None:
    argv = build_argv(small_machine(), dataclasses.replace(LAUNCH, accel=Accel.KVM))
    assert option_values(argv, "-accel") == ["kvm"]
    assert option_values(argv, "-cpu") == ["host"]


@pytest.mark.parametrize("accel", [Accel.TCG, Accel.KVM])
def test_cpu_model_from_spec_wins(accel: Accel) -> None:
    argv = build_argv(
        small_machine(cpu_model="Skylake-Server"), dataclasses.replace(LAUNCH, accel=accel)
    )
    assert option_values(argv, "-cpu") == ["Skylake-Server"]


def test_auto_accel_is_refused() -> None:
    with pytest.raises(ValueError, match="accelerator"):
        build_argv(small_machine(), dataclasses.replace(LAUNCH, accel=Accel.AUTO))


def test_native_hotplug_disables_acpi_hotplug() -> None:
    flag = "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"
    native = build_argv(small_machine(Hotplug.NATIVE), LAUNCH)
    acpi = build_argv(small_machine(Hotplug.ACPI), LAUNCH)
    assert option_values(native, "-global") == [flag]
    assert option_values(acpi, "-global") == []
    assert flag not in acpi


def test_every_device_sits_on_its_own_root_port() -> None:
    machine = small_machine()
    argv = build_argv(machine, LAUNCH)
    devices = [option_dict(v) for v in option_values(argv, "-device")]
    ports = [d for d in devices if d[""] == "pcie-root-port"]
    assert len(ports) == len(machine.spec.devices)
    assert len({p["id"] for p in ports}) == len(ports)
    assert len({p["chassis"] for p in ports}) == len(ports)
    assert len({p["slot"] for p in ports}) == len(ports)
    assert all(p["bus"] == "pcie.0" for p in ports)
    port_ids = {p["id"] for p in ports}
    placed = [d for d in devices if d.get("id") in {x.id for x in machine.spec.devices}]
    assert [d["id"] for d in placed] == ["b0", "p0", "b1"]
    buses = [d["bus"] for d in placed]
    assert buses == ["rp-b0", "rp-p0", "rp-b1"]
    assert set(buses) == port_ids
    # Each root port comes before the device plugged into it.
    for dev in machine.spec.devices:
        port_at = argv.index(
            next(v for v in argv if v.startswith(f"pcie-root-port,id=rp-{dev.id},"))
        )
        dev_at = argv.index(next(v for v in argv if f",id={dev.id}," in v))
        assert port_at < dev_at


def test_backed_device_gets_shared_memory_backend_file() -> None:
    argv = build_argv(small_machine(), LAUNCH)
    objects = [option_dict(v) for v in option_values(argv, "-object")]
    assert [o[""] for o in objects] == ["memory-backend-file", "memory-backend-file"]
    by_id = {o["id"]: o for o in objects}
    assert set(by_id) == {"mem-b0", "mem-b1"}
    for obj in objects:
        assert obj["share"] == "on"
    assert by_id["mem-b0"]["mem-path"] == "/fake/run/backing/b0.bar"
    assert by_id["mem-b0"]["size"] == str(4 << 20)  # the instance's bar-size
    assert by_id["mem-b1"]["size"] == str(1 << 20)  # the type's backing size
    devices = {d["id"]: d for d in map(option_dict, option_values(argv, "-device")) if "id" in d}
    assert devices["b0"]["memdev"] == "mem-b0"
    assert devices["b1"]["memdev"] == "mem-b1"
    assert "memdev" not in devices["p0"]


def test_real_ivshmem_gets_shared_backend_and_edu_a_wide_dma_mask() -> None:
    machine = registry.load_machine("default")
    argv = build_argv(machine, LAUNCH)
    devices = {d["id"]: d for d in map(option_dict, option_values(argv, "-device")) if "id" in d}
    gpu = devices["gpu-exporter"]
    assert gpu[""] == "ivshmem-plain"
    objects = {o["id"]: o for o in map(option_dict, option_values(argv, "-object"))}
    backend = objects[gpu["memdev"]]
    assert backend[""] == "memory-backend-file"
    assert backend["share"] == "on"
    assert backend["size"] == str(64 << 20)
    edu = devices["importer"]
    assert edu[""] == "edu"
    assert edu["dma_mask"] == "0xffffffffffffffff"


def test_instance_properties_override_type_properties() -> None:
    machine = small_machine()
    dev = machine.spec.device("p0")
    props = cmdline.device_properties(machine, dev)
    assert next(iter(props)) == "driver"
    assert props == {
        "driver": "edu",
        "id": "p0",
        "bus": "rp-p0",
        "dma_mask": "0xffffffffffffffff",
        "x": "1",
    }
    over = dataclasses.replace(dev, properties={"dma_mask": "0xffff"})
    assert cmdline.device_properties(machine, over)["dma_mask"] == "0xffff"


def test_comma_in_a_property_value_is_refused_by_the_schema() -> None:
    with pytest.raises(ValueError, match="must not contain ','"):
        DeviceInstance(id="p0", type="plain", properties={"x": "a,b"})


@pytest.mark.parametrize(
    "props", [{"x": "a,b"}, {"x,romfile": "/etc/shadow"}, {"romfile=/etc/shadow,x": "1"}]
)
def test_the_command_line_refuses_injection_that_got_past_the_schema(
    props: dict[str, str],
) -> None:
    """Defence in depth: a DeviceType built in code (no __post_init__ bypass needed: replace
    the dict's content after construction) still cannot inject options."""
    machine = small_machine()
    dev = DeviceInstance(id="p0", type="plain")
    dev.properties.update(props)  # the dict is mutable even in a frozen dataclass
    spec = dataclasses.replace(machine.spec, devices=(dev,))
    with pytest.raises(ValueError, match="inject"):
        build_argv(Machine(spec, machine.types), LAUNCH)


def test_commas_in_option_string_paths_are_doubled() -> None:
    launch = dataclasses.replace(
        LAUNCH,
        console_log=Path("/fake/a,b/console.log"),
        qmp_socket=Path("/fake/a,b/qmp.sock"),
        backing_dir=Path("/fake/a,b/backing"),
    )
    argv = build_argv(small_machine(), launch)
    chardevs = option_values(argv, "-chardev")
    assert "file,id=console,path=/fake/a,,b/console.log" in chardevs
    assert "socket,id=qmp,path=/fake/a,,b/qmp.sock" in chardevs
    objects = option_values(argv, "-object")
    assert all("mem-path=/fake/a,,b/backing/" in o for o in objects)
    assert not any(",b/" in a.replace(",,b/", "") for a in chardevs + objects)


def test_kernel_and_initrd_paths_are_passed_literally() -> None:
    launch = dataclasses.replace(
        LAUNCH, kernel=Path("/fake/a,b/bzImage"), initrd=Path("/fake/a,b/initrd.cpio")
    )
    argv = build_argv(small_machine(), launch)
    assert option_values(argv, "-kernel") == ["/fake/a,b/bzImage"]
    assert option_values(argv, "-initrd") == ["/fake/a,b/initrd.cpio"]


def test_kernel_command_line_order() -> None:
    argv = build_argv(small_machine(), LAUNCH)
    (append,) = option_values(argv, "-append")
    assert append.split() == [*cmdline.BASE_KERNEL_ARGS, "quiet", "testbed.run=1"]


def test_ssh_port_forward_and_qmp() -> None:
    argv = build_argv(small_machine(), LAUNCH)
    # restrict=on: the guest reaches nothing on the host; the SSH forward still works
    assert option_values(argv, "-netdev") == [
        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:10022-:22"
    ]
    assert option_values(argv, "-mon") == ["chardev=qmp,mode=control"]
    assert "panic=pause" in option_values(argv, "-action")


def test_an_early_panic_ends_qemu() -> None:
    """Before pvpanic loads, a panic reboots at once and the reboot ends QEMU."""
    argv = build_argv(small_machine(), LAUNCH)
    assert "panic=-1" in option_values(argv, "-append")[0].split()
    assert "reboot=shutdown" in option_values(argv, "-action")


def test_extra_args_come_last() -> None:
    launch = dataclasses.replace(LAUNCH, extra_args=("-d", "guest_errors"))
    argv = build_argv(small_machine(), launch)
    assert argv[-2:] == ["-d", "guest_errors"]


def test_build_argv_is_pure() -> None:
    machine = registry.load_machine("default")
    assert build_argv(machine, LAUNCH) == build_argv(machine, LAUNCH)


@pytest.mark.parametrize(
    "name", ["default", "native-hotplug", "switch", "switch-native", "two-importers"]
)
def test_shell_line_round_trips(name: str) -> None:
    argv = build_argv(registry.load_machine(name), LAUNCH)
    assert shlex.split(shell_line(argv)) == argv


def test_shell_line_quotes_awkward_arguments() -> None:
    argv = ["/fake/qemu", "-append", "console=ttyS0 quiet", "it's", "$HOME", "a;b", "", "*"]
    line = shell_line(argv)
    assert shlex.split(line) == argv
    assert "$HOME" not in line.replace("'$HOME'", "")


def test_switch_devices_share_one_upstream_port_behind_one_root_port() -> None:
    machine = registry.load_machine("switch")
    argv = build_argv(machine, LAUNCH)
    devices = [option_dict(v) for v in option_values(argv, "-device")]
    by_driver: dict[str, list[dict[str, str]]] = {}
    for dev in devices:
        by_driver.setdefault(dev[""], []).append(dev)
    (root,) = by_driver["pcie-root-port"]
    (upstream,) = by_driver["x3130-upstream"]
    assert root["bus"] == "pcie.0" and upstream["bus"] == root["id"]
    downs = by_driver["xio3130-downstream"]
    assert [d["bus"] for d in downs] == [upstream["id"]] * 2
    assert sorted(d["port"] for d in downs) == ["0", "1"]
    slots = [(p["chassis"], p["slot"]) for p in [root, *downs]]
    assert len(set(slots)) == len(slots), "every hot-plug slot needs its own chassis/slot"
    # each device sits on its own downstream port, which comes before it
    for inst in machine.spec.devices:
        props = cmdline.device_properties(machine, inst)
        assert props["bus"] == f"dp-{inst.id}"
        port_at = next(
            i for i, a in enumerate(argv) if a.startswith(f"xio3130-downstream,id=dp-{inst.id},")
        )
        dev_at = next(i for i, a in enumerate(argv) if f",id={inst.id}," in a)
        assert port_at < dev_at
