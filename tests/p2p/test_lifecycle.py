"""Leaks: a process that exits with its mappings held, hundreds of map/unmap pairs, and 50
plug/unplug cycles; and p2pctl itself: a failed step ends the run, whatever follows it."""

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
#: Bound on unreclaimable slab growth over MAP_CYCLES map/unmap pairs (measured noise: see
#: the test).
SLAB_BOUND_KIB = 48


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
    # every step ran and succeeded (a failed one ends p2pctl before 'exit')
    assert [(s.op, s.ok) for s in run.steps] == [
        ("create", True),
        ("mmap", True),
        ("reg", True),
        ("reg", True),
        ("dma-write", True),
        ("exit", True),
    ]
    assert debugfs.live(vm.ssh).idle
    exporter, importer = debugfs.exporter_stats(vm.ssh), debugfs.importer_stats(vm.ssh)
    assert exporter["imports"] == 0 and importer["mrs"] == 0
    assert exporter["objects"] == objects
    assert {m: debugfs.module_refcount(vm.ssh, m) for m in refs} == refs
    leaks = _kmemleak(vm.ssh)
    assert not leaks, leaks


def test_p2pctl_fails_at_the_first_failed_step_even_before_exit(p2p_vm: Machine) -> None:
    """A script that ends in 'exit' once exited 0 whatever the steps before it did."""
    run = ctl.p2pctl(p2p_vm.ssh, "create size=16K", "info obj=4242", "mark", "exit")
    assert run.exitcode == 1
    assert [s.op for s in run.steps] == ["create", "info"], "nothing may run after a failure"
    assert "step 2 'info' failed: ENOENT" in run.stderr
    # -k goes on, but the final exit still reports the failure
    kept = ctl.p2pctl(p2p_vm.ssh, "-k", "info obj=4242", "mark", "exit code=0")
    assert kept.exitcode == 1 and [s.op for s in kept.steps] == ["info", "mark", "exit"]
    assert ctl.p2pctl(p2p_vm.ssh, "mark", "exit code=3").exitcode == 3


MAP_CYCLES = 1000


def test_hundreds_of_map_unmap_pairs_leak_no_record_reference_or_slab(
    p2p_vm: Machine, record_property: Callable[[str, object], None]
) -> None:
    """p2p_map/p2p_unmap pairs in one guest: every record and importer reference goes, the
    counters move by exactly the number of pairs, unreclaimable slab stays flat (a leaked
    record is at least 64 bytes: 1000 of them would be 62 KiB)."""
    vm = p2p_vm
    # a script file: the command line would exceed what dropbear accepts (9000 bytes)
    script = "/tmp/p2pctl-pairs"
    vm.ssh.run_check(
        f"{{ echo create size=16K; echo mmap; yes 'reg bus=0 dereg' | head -n {MAP_CYCLES}; }}"
        f" > {script}"
    )
    # The drivers log each map and unmap at KERN_INFO; 4000 lines through the serial console
    # would take a minute under TCG. Warnings (level 4) still reach the console.
    loglevel = vm.ssh.run_check("cat /proc/sys/kernel/printk").stdout.split()[0]
    vm.ssh.run_check("echo 5 > /proc/sys/kernel/printk")
    try:
        ctl.p2pctl(vm.ssh, f"-f {script}").expect_ok()  # warm the caches
        vm.ssh.run_check("sync; echo 3 > /proc/sys/vm/drop_caches")
        before, stats0 = _meminfo(vm.ssh), debugfs.exporter_stats(vm.ssh)
        run = ctl.p2pctl(vm.ssh, f"-f {script}").expect_ok()
    finally:
        vm.ssh.run_check(f"echo {loglevel} > /proc/sys/kernel/printk")
    assert len(run.all("reg")) == len(run.all("dereg")) == MAP_CYCLES
    live = debugfs.live(vm.ssh)
    vm.ssh.run_check("sync; echo 3 > /proc/sys/vm/drop_caches")
    after, stats1 = _meminfo(vm.ssh), debugfs.exporter_stats(vm.ssh)
    assert live.idle, f"{MAP_CYCLES} map/unmap pairs left {live}"
    assert stats1["maps"] - stats0["maps"] == MAP_CYCLES
    assert stats1["unmaps"] - stats0["unmaps"] == MAP_CYCLES
    assert not debugfs.balance_problems(live, stats1), debugfs.balance_problems(live, stats1)
    grown_kib = after["SUnreclaim"] - before["SUnreclaim"]
    record_property("sunreclaim_growth_kib", grown_kib)
    assert grown_kib < SLAB_BOUND_KIB, f"unreclaimable slab grew {grown_kib} KiB"


def test_fifty_plug_unplug_cycles_leak_nothing(
    fresh_p2p_vm: Boot, record_property: Callable[[str, object], None]
) -> None:
    vm = fresh_p2p_vm("default")
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
