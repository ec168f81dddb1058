"""The importer's contract when the application changes a registered VMA under it:
``munmap``, ``mprotect``, ``mremap`` and ``fork`` (issue 10's VMA steps), on the shared guest.

An MR follows the CPU mapping it was registered on, as an ODP MR does: whatever takes the
range away or takes write access away fires the importer's mmu notifier, the MR is invalidated,
and the next DMA maps again -- which must then fail, so no byte of it reaches the exporter's
BAR. Each test first lands a DMA (pattern A) and then tries one more (pattern B) after the
operation; the host checks, in BAR2's backing file, that A is there and B is not.
"""

from __future__ import annotations

from testbed import paths
from testbed.p2p import ctl, debugfs
from testbed.p2p.host import hexint, read_bar
from testbed.qemu.machine import Machine
from testbed.scenario import loader
from testbed.scenario.runner import Runner

LEN = 64  #: bytes per DMA
A, B = 0x3C, 0xC3  #: the pattern that lands first, the one that must not land after


def _bar(vm: Machine, run: ctl.Run) -> bytes:
    return read_bar(vm, hexint(run.op("create")["offset"]), LEN)


def _invalidated(vm: Machine, mr: int, since: int) -> list[str]:
    """The importer's invalidation events for ``mr`` after guest time ``since`` (ns: the
    ``reg`` result's stamp, so an earlier test's MR of the same number does not count)."""
    return [
        e.text
        for e in debugfs.events(vm.ssh)
        if e.t_ns >= since and e.text.startswith(f"invalidate mr={mr} ")
    ]


def test_munmap_invalidates_the_mr_and_a_later_dma_fails(p2p_vm: Machine) -> None:
    vm = p2p_vm
    run = ctl.p2pctl(
        vm.ssh,
        "create size=16K",
        "mmap",
        "reg",
        f"dma-write len={LEN} pattern={A}",
        "munmap",
        "mrinfo",
        f"dma-write len={LEN} pattern={B} expect=EFAULT",
        "dereg",
    ).expect_ok()
    mr = int(run.op("reg")["mr"])
    info = run.op("mrinfo")
    assert not info["valid"] and not info["mapped"], f"munmap left the MR usable\n{run}"
    assert info["invalidations"] == 1
    events = _invalidated(vm, mr, run.op("reg").t_ns)
    assert any("event=unmap" in e for e in events), events
    assert _bar(vm, run) == bytes([A]) * LEN, "a DMA after munmap reached the BAR"


def test_mprotect_read_only_refuses_dma_writes(p2p_vm: Machine) -> None:
    """No CPU access before the mprotect: the MR's mapping is the importer's alone, with no
    CPU page table entry under it -- the case an mmu notifier can miss."""
    vm = p2p_vm
    run = ctl.p2pctl(
        vm.ssh,
        "create size=16K",
        "mmap",
        "reg",
        f"dma-write len={LEN} pattern={A}",
        "mprotect prot=r",
        "mrinfo",
        f"dma-write len={LEN} pattern={B} expect=EACCES",
        "mprotect prot=rw",
        f"dma-read len={LEN} want={A}",
        "dereg",
        "munmap",
    ).expect_ok()
    info = run.op("mrinfo")
    assert not info["valid"], f"mprotect(PROT_READ) left the writable MR valid\n{run}"
    events = _invalidated(vm, int(run.op("reg")["mr"]), run.op("reg").t_ns)
    assert any("event=protection_vma" in e for e in events), events
    assert _bar(vm, run) == bytes([A]) * LEN, "a DMA write after mprotect(PROT_READ) landed"
    assert run.op("dma-read")["remapped"], "the MR must map again once writable again"


def test_mremap_shrink_invalidates_and_grow_is_refused(p2p_vm: Machine) -> None:
    """The exporter's VMA is VM_DONTEXPAND: growing it fails; shrinking it under an MR that
    covers the whole mapping unmaps the tail, and the MR no longer fits a VMA."""
    vm = p2p_vm
    run = ctl.p2pctl(
        vm.ssh,
        "create size=16K",
        "mmap",
        "reg",
        f"dma-write len={LEN} pattern={A}",
        "mremap len=32K expect=EFAULT",
        f"dma-write len={LEN} pattern={A}",
        "mremap len=4K",
        "mrinfo",
        f"dma-write len={LEN} pattern={B} expect=EFAULT",
        "dereg",
        "munmap",
    ).expect_ok()
    assert not run.op("mrinfo")["valid"]
    assert _bar(vm, run) == bytes([A]) * LEN, "a DMA after mremap shrank the VMA landed"


def test_fork_child_gets_no_mapping_and_no_dma_after_the_parent_unmaps(
    p2p_vm: Machine,
) -> None:
    """The exporter's VMA is VM_DONTCOPY: the child has no mapping to touch. The child shares
    the importer file and so the parent's MR -- a DMA through it follows the parent's mapping
    (mr->mm is the parent's), and once the parent unmaps, fails like the parent's own."""
    vm = p2p_vm
    run = ctl.p2pctl(
        vm.ssh,
        "create size=16K",
        "mmap",
        "reg",
        f"fork dma=1 pattern={A}",
        "munmap",
        f"fork touch=0 dma=1 pattern={B}",
        f"dma-write len={LEN} pattern={B} expect=EFAULT",
        "dereg",
    ).expect_ok()
    child = run.op("fork")
    assert child["child_touch"] == "SIGSEGV", f"the child inherited the P2P mapping\n{run}"
    assert child["child_status"] == 0
    # a DMA from the child through the parent's still valid MR lands where the parent's would
    assert child["child_dma"] == "ok"
    after = run.op("fork", 1)
    assert after["child_dma"] == "EFAULT", f"the child's DMA outlived the parent's munmap\n{run}"
    assert _bar(vm, run) == bytes([A]) * LEN


def test_munmap_during_a_dma_stream_scenario(p2p_vm: Machine) -> None:
    """``scenarios/vma/munmap-during-dma.yaml`` through the scenario engine: the app unmaps
    its range while its async DMA is in flight; later DMAs fail, nothing of them lands."""
    scenario = loader.load(paths.scenarios_dir() / "vma" / "munmap-during-dma.yaml")
    result = Runner(p2p_vm).run(scenario)
    assert result.passed, result.report() + "\n" + "\n".join(result.log)
    assert result.reusable, result.log
