"""Claims 1-4 and 8 of the reference RFC, on one shared guest (isolation: see
testbed.pytest_plugin.p2p).

Every byte a DMA wrote is checked on the host, in the exporter's backing file; every byte a
DMA read was written there by the host.
"""

from __future__ import annotations

import os
import zlib

import pytest

from testbed.deadline import Deadline
from testbed.guest.console import Problem
from testbed.p2p import ctl, debugfs, params
from testbed.p2p.host import hexint, read_bar, write_bar
from testbed.qemu.machine import Machine

PAGE = 4096


def test_claim1_map_yields_bus_addresses_and_dma_lands_in_the_bar(p2p_vm: Machine) -> None:
    vm = p2p_vm
    held = ctl.hold(
        vm.ssh,
        "create size=64K",
        "mmap",
        "reg",
        "dma-write off=0x1000 len=4096 pattern=0x5a",
        "hold",
        "dma-read off=0x2000 len=4096",
        "dereg",
        name="claim1",
    )
    obj, reg = held.holding.op("create"), held.holding.op("reg")
    base = hexint(obj["offset"])
    # p2p_map gave one bus address per page: the object's, page after page
    bus = [hexint(b) for b in reg["bus"]]
    assert reg["npages"] == 16
    assert bus == [hexint(obj["bus"]) + i * PAGE for i in range(16)]
    assert hexint(held.holding.op("dma-write")["bus"]) == bus[1]

    # the DMA write landed in BAR2, exactly there, byte for byte
    assert read_bar(vm, base + 0x1000, PAGE) == b"\x5a" * PAGE
    assert read_bar(vm, base, PAGE) == bytes(PAGE), "the page before must be untouched"
    assert read_bar(vm, base + 0x2000, PAGE) == bytes(PAGE), "the page after must be untouched"

    # a DMA read returns what the host put into BAR2
    pattern = os.urandom(PAGE)
    write_bar(vm, base + 0x2000, pattern)
    run = held.release(Deadline(30, "claim1 p2pctl")).expect_ok()
    read = run.op("dma-read")
    assert hexint(read["crc32"]) == zlib.crc32(pattern)
    assert read["head"] == pattern[:32].hex()


def test_claim1_subrange_map_starts_where_the_range_starts(p2p_vm: Machine) -> None:
    """A mapping that starts 16 KiB into the object (mmap offset) and an MR that starts
    8 KiB into the mapping: p2p_map must return the bus addresses of exactly that range,
    and the DMA must land there in BAR2 and nowhere else."""
    vm = p2p_vm
    mmap_off, mr_off, dma_off = 0x4000, 0x2000, 0x1000
    run = ctl.p2pctl(
        vm.ssh,
        "create size=64K",
        f"mmap off={mmap_off:#x} len=0x8000",
        f"reg off={mr_off:#x} len=0x4000",
        f"dma-write off={dma_off:#x} len=4096 seq=7",
        "dma-read off=0 len=4096",
        "dereg",
    ).expect_ok()
    obj, reg = run.op("create"), run.op("reg")
    base, first = hexint(obj["offset"]), hexint(obj["bus"]) + mmap_off + mr_off
    assert reg["npages"] == 4
    assert [hexint(b) for b in reg["bus"]] == [first + i * PAGE for i in range(4)]
    assert hexint(run.op("dma-write")["bus"]) == first + dma_off
    assert hexint(run.op("dma-read")["bus"]) == first

    # byte for byte on the host: the sequence exactly at the sub-range's page, zero elsewhere
    at = mmap_off + mr_off + dma_off
    want = bytes((7 + i) & 0xFF for i in range(PAGE))
    bar = read_bar(vm, base, 64 * 1024)
    assert bar[at : at + PAGE] == want, "the DMA did not land where the MR's page lives"
    assert bar[:at] == bytes(at) and bar[at + PAGE :] == bytes(64 * 1024 - at - PAGE)
    assert run.op("dma-read")["crc32"] == f"{zlib.crc32(bytes(PAGE)):#010x}"


def test_claim2_second_map_of_a_valid_vma_succeeds_with_the_same_addresses(
    p2p_vm: Machine,
) -> None:
    run = ctl.p2pctl(
        p2p_vm.ssh,
        "create size=32K",
        "mmap",
        "reg",
        "reg",
        "dma-write mr=1 len=256 pattern=0x11",
        "dma-write mr=1 len=256 pattern=0x12",
        "mrinfo mr=1",
        "dereg mr=1",
        "dereg mr=2",
    ).expect_ok()
    first, second = run.op("reg", 0), run.op("reg", 1)
    assert first["bus"] == second["bus"]
    # and the first mapping stays usable: no remap needed between DMAs
    assert [d["remapped"] for d in run.all("dma-write")] == [False, False]
    info = run.op("mrinfo")
    assert info["valid"] and info["maps"] == 1 and info["invalidations"] == 0


def test_claim3_invalidation_at_any_time_stops_dma_and_remap_works(p2p_vm: Machine) -> None:
    """An invalidation arriving while a DMA is in flight: the importer's notifier waits for
    the transfer, then unmaps; the MR is invalid until the next DMA maps it again."""
    vm = p2p_vm
    held = ctl.hold(
        vm.ssh,
        "create size=64K",
        "mmap",
        "reg",
        "dma-write async=1 off=0x3000 len=4096 pattern=0x3c",
        "hold",
        "dma-wait",
        "mrinfo",
        "dma-write off=0x3000 len=256 pattern=0x3d",
        "mrinfo",
        "dereg",
        name="claim3",
    )
    # the invalidation comes from outside the process, while the DMA is in flight
    debugfs.evict(vm.ssh, held.holding.op("create")["handle"])
    run = held.release(Deadline(30, "claim3 p2pctl")).expect_ok()

    assert run.op("dma-wait").ok, "the in-flight DMA must complete, not be torn"
    invalid = run.op("mrinfo", 0)
    assert not invalid["valid"] and invalid["invalidations"] == 1
    again = run.op("dma-write", 1)
    assert again["remapped"], "the next DMA must map the MR again"
    assert run.op("mrinfo", 1)["valid"] and run.op("mrinfo", 1)["maps"] == 2
    stats = debugfs.importer_stats(vm.ssh)
    assert stats["invalidations"] >= 1 and stats["remaps"] >= 1


def test_claim4_eviction_invalidates_importers_and_no_dma_lands_at_the_old_place(
    p2p_vm: Machine,
) -> None:
    vm = p2p_vm
    run = ctl.p2pctl(
        vm.ssh,
        "create size=64K",
        "mmap",
        "reg",
        "dma-write off=0x1000 len=4096 pattern=0xa1",
        "write off=0x2000 len=4096 pattern=0xb3",
        "evict",
        "mrinfo",
        "dma-write off=0x1000 len=4096 pattern=0xa2",
        "info",
        "read off=0x1000 len=4096 want=0xa2",
        "read off=0x2000 len=4096 want=0xb3",
        "dereg",
    ).expect_ok()
    evict = run.op("evict")
    old, new = hexint(evict["old"]), hexint(evict["new"])
    assert old != new and evict["importers"] == 1 and not evict["timed_out"]
    assert not run.op("mrinfo")["valid"], "eviction must invalidate the importer"
    second = run.op("dma-write", 1)
    assert second["remapped"] and hexint(second["bus"]) != hexint(run.op("dma-write", 0)["bus"])
    assert hexint(run.op("info")["offset"]) == new

    # the new place holds the copy, then the new DMA; the old place never saw 0xa2
    assert read_bar(vm, new + 0x1000, PAGE) == b"\xa2" * PAGE
    assert read_bar(vm, new + 0x2000, PAGE) == b"\xb3" * PAGE, "eviction must copy the data"
    assert b"\xa2" not in read_bar(vm, old, 64 * 1024)


def test_claim4_evict_last_page_invalidates_its_importer_and_moves_the_cpu_mapping(
    p2p_vm: Machine,
) -> None:
    """An importer that registered only the LAST page of an object: the eviction's zap must
    reach that page too. A zap one page short (an off-by-one in the exporter's length, or in
    the kernel's unmap_mapping_range(): guest-kernel-config/patches/demo-buggy-unmap 3/4)
    leaves that importer mapped -- the eviction times out and its next DMA lands at the old
    place -- and leaves the CPU's last page pointing at the old place too."""
    vm = p2p_vm
    last = 0xF000  # the 16th page of a 64K object
    run = ctl.p2pctl(
        vm.ssh,
        "create size=64K",
        "mmap",
        f"reg off={last:#x} len=4096",
        "dma-write off=0 len=4096 pattern=0xd1",
        "evict",
        "mrinfo",
        "dma-write off=0 len=4096 pattern=0xd2",
        f"write off={last:#x} len=256 pattern=0xd3",
        "info",
        "dereg",
    ).expect_ok()
    evict = run.op("evict")
    old, new = hexint(evict["old"]), hexint(evict["new"])
    assert old != new and evict["importers"] == 1
    assert not evict["timed_out"], "the zap missed the last page: its importer never unmapped"
    assert not run.op("mrinfo")["valid"], "eviction must invalidate the last page's importer"
    second = run.op("dma-write", 1)
    assert second["remapped"], "the DMA after eviction must map the last page again"
    assert hexint(second["bus"]) != hexint(run.op("dma-write", 0)["bus"])
    assert hexint(run.op("info")["offset"]) == new

    # on the host: the new last page has the DMA, then the CPU's write; the old one neither
    moved = read_bar(vm, new + last, PAGE)
    assert moved[:256] == b"\xd3" * 256, "the CPU's last page still maps the old place"
    assert moved[256:] == b"\xd2" * (PAGE - 256), "the DMA after eviction missed the new place"
    stale = read_bar(vm, old + last, PAGE)
    assert b"\xd2" not in stale and b"\xd3" not in stale, "a write landed at the old place"


@pytest.mark.console_allows(Problem.P2P_WARNING)  # the exporter names the lazy importer
def test_claim4_lazy_importer_dma_after_eviction_does_not_land_at_the_old_place(
    p2p_vm: Machine,
) -> None:
    """An importer in lazy-unmap mode keeps its mapping across the zap (the exporter's wait
    times out and quarantines the old range), but its next DMA must still map again and
    land at the object's new place, never at the stale address."""
    vm = p2p_vm
    params.set_values(
        vm.ssh, {"p2p_importer": {"lazy_unmap": "Y"}, "p2p_exporter": {"evict_wait_ms": "300"}}
    )
    run = ctl.p2pctl(
        vm.ssh,
        "create size=64K",
        "mmap",
        "reg",
        "dma-write off=0x1000 len=4096 pattern=0xc1",
        "evict",
        "mrinfo",
        "dma-write off=0x1000 len=4096 pattern=0xc2",
        "info",
        "dereg",
    ).expect_ok()
    evict = run.op("evict")
    old, new = hexint(evict["old"]), hexint(evict["new"])
    assert evict["timed_out"], "a lazy importer keeps its mapping past the zap"
    kept = run.op("mrinfo")
    assert not kept["valid"] and kept["mapped"], "lazy: invalid for DMA, mapping kept"
    second = run.op("dma-write", 1)
    assert second["remapped"] and hexint(second["bus"]) != hexint(run.op("dma-write", 0)["bus"])
    assert hexint(run.op("info")["offset"]) == new
    assert read_bar(vm, new + 0x1000, PAGE) == b"\xc2" * PAGE
    assert read_bar(vm, old + 0x1000, PAGE) == b"\xc1" * PAGE, "DMA landed at the stale place"


def test_claim8_exporter_refuses_a_permanent_pin(p2p_vm: Machine) -> None:
    vm = p2p_vm
    before_exp, before_imp = debugfs.exporter_stats(vm.ssh), debugfs.importer_stats(vm.ssh)
    ctl.p2pctl(vm.ssh, "create size=16K", "mmap", "reg pin=1 expect=EPERM", "reg pin=0").expect_ok()
    after_exp, after_imp = debugfs.exporter_stats(vm.ssh), debugfs.importer_stats(vm.ssh)
    assert after_exp["refused"] == before_exp["refused"] + 1
    assert after_imp["refused"] == before_imp["refused"] + 1

    # the refusal is the exporter's decision: allowed by policy, a pin succeeds, except on
    # an object created as not pinnable
    vm.ssh.run_check("echo N > /sys/module/p2p_exporter/parameters/refuse_pin")
    ctl.p2pctl(
        vm.ssh,
        "create size=16K",
        "mmap",
        "reg pin=1",
        "evict expect=EBUSY",  # a pinned object stays where it is
        "create size=16K nopin=1",
        "mmap",
        "reg pin=1 expect=EPERM",
    ).expect_ok()


def test_importer_rejects_bad_registrations_without_a_kernel_warning(p2p_vm: Machine) -> None:
    """Memory no exporter owns, and a length no object can have (2 TiB once made kvmalloc
    WARN in the importer): refused with an errno, the console stays clean."""
    ctl.p2pctl(
        p2p_vm.ssh,
        "mmap anon=1 len=64K",
        "reg expect=EOPNOTSUPP",
        "create size=16K",
        "mmap",
        "reg len=2T bus=0 expect=EINVAL",
        "reg off=32K expect=EINVAL",
    ).expect_ok()
