"""Leaks: a process that exits with its mappings held, and 50 plug/unplug cycles."""

from __future__ import annotations

from collections.abc import Callable

from testbed.deadline import Deadline, wait_for
from testbed.devices import hotplug
from testbed.guest import pci
from testbed.guest.ssh import GuestShell
from testbed.p2p import ctl, debugfs
from testbed.qemu.machine import Machine

Boot = Callable[..., Machine]
CYCLES = 50


def _meminfo(shell: GuestShell) -> dict[str, int]:
    out = {}
    for line in shell.run_check("cat /proc/meminfo").stdout.splitlines():
        name, _, rest = line.partition(":")
        out[name] = int(rest.split()[0])
    return out


def _kmemleak(shell: GuestShell) -> str | None:
    """New suspected leaks, or None when the kernel has no kmemleak (Debian's stock one)."""
    if not shell.run("test -w /sys/kernel/debug/kmemleak").ok:
        return None
    shell.run_check("echo scan > /sys/kernel/debug/kmemleak")
    return shell.run_check("cat /sys/kernel/debug/kmemleak").stdout


def test_process_exit_while_mapped_leaves_no_reference(p2p_vm: Machine) -> None:
    vm = p2p_vm
    refs = {m: debugfs.module_refcount(vm.ssh, m) for m in ("p2p_exporter", "p2p_importer")}
    objects = debugfs.exporter_stats(vm.ssh)["objects"]
    # exit with an object, a mapping, two MRs and no dereg/munmap/destroy
    run = ctl.p2pctl(
        vm.ssh, "create size=64K", "mmap", "reg", "reg", "dma-write len=64 pattern=9", "exit"
    ).expect_ok()
    # 'exit' sets the exit status itself: check the steps, or a refused reg would pass unseen
    assert all(step.ok for step in run.steps), run
    exporter, importer = debugfs.exporter_stats(vm.ssh), debugfs.importer_stats(vm.ssh)
    assert exporter["imports"] == 0 and importer["mrs"] == 0
    assert exporter["objects"] == objects
    assert {m: debugfs.module_refcount(vm.ssh, m) for m in refs} == refs
    leaks = _kmemleak(vm.ssh)
    assert not leaks, leaks


def test_fifty_plug_unplug_cycles_leak_nothing(
    fresh_p2p_vm: Boot, record_property: Callable[[str, object], None]
) -> None:
    vm = fresh_p2p_vm()
    exporter_id = "1af4:1110"
    ctl.p2pctl(vm.ssh, "create size=16K", "mmap", "reg", "dma-write len=64 pattern=1").expect_ok()
    before = _meminfo(vm.ssh)
    refs = debugfs.module_refcount(vm.ssh, "p2p_exporter")
    for cycle in range(1, CYCLES + 1):
        hotplug.unplug(vm, "gpu-exporter")
        pci.wait_gone(vm.ssh, exporter_id, Deadline(10, "exporter gone"))
        hotplug.plug(vm, "gpu-exporter")
        wait_for(
            lambda: vm.ssh.run("ls /dev/p2p-exporter*").ok,
            Deadline(20, "exporter bound again"),
            doing=f"cycle {cycle}: waiting for the exporter driver to bind",
        )
        if cycle % 10 == 0:  # the re-plugged device works, end to end
            dev = vm.ssh.run_check("ls /dev/p2p-exporter*").stdout.split()[0]
            ctl.p2pctl(
                vm.ssh,
                "create size=16K",
                "mmap",
                "reg",
                f"dma-write len=64 pattern={cycle}",
                "dma-read len=64",
                exporter=dev,
            ).expect_ok()
    after = _meminfo(vm.ssh)
    stats = debugfs.exporter_stats(vm.ssh)
    assert stats["devices"] == 1 and stats["imports"] == 0 and stats["unplug_timeouts"] == 0
    assert debugfs.module_refcount(vm.ssh, "p2p_exporter") == refs
    grown_kib = after["Slab"] - before["Slab"]
    record_property("slab_growth_kib", grown_kib)
    record_property("mem_available_drop_kib", before["MemAvailable"] - after["MemAvailable"])
    assert grown_kib < 1024, f"slab grew by {grown_kib} KiB over {CYCLES} cycles"
    leaks = _kmemleak(vm.ssh)
    assert not leaks, leaks
