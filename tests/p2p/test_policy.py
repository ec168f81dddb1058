"""Who may do P2P with whom -- upstream's P2PDMA policy -- and the RFC series' own bug.

Upstream's policy (``drivers/pci/p2pdma.c``, ``pci_p2pdma_distance``): two devices under a
common upstream bridge without ACS redirect may do P2P (the ``switch`` machine); devices on
separate root ports only through a whitelisted host bridge (q35's 8086:29c0 is not) or behind
an AMD family >= 0x17 CPU (``default`` runs ``-cpu EPYC``; ``default-qemu64`` does not). On a
kernel with ``CONFIG_PCI_P2PDMA`` the exporter applies it (``use_p2pdma_distance``); on the
``vm_ops`` path (a kernel with the RFC series) the importer first asks the RFC's
``device_test_p2p()`` -- RFC 2/5 on ``pci_test_p2p()`` of RFC 1/5 -- and refuses with -EXDEV.

The kernel: these tests run on the suite's kernel and skip, saying why, when it lacks what they
check. The RFC tests want the kernel built with ``guest-kernel-config/patches/rfc-p2p-vma/``
(:data:`RFC_KERNEL`); as posted (``rfc-p2p-vma-as-posted/``) ``pci_test_p2p()`` always returned
false, and :func:`test_rfc_device_test_p2p_allows_what_upstream_allows` fails on that kernel.
Until ``testbed run --kernel NAME`` exists, give the kernel by path: ``--testbed-kernel
<O>/arch/x86/boot/bzImage --testbed-modules <staging>/lib/modules/<release> --testbed-build <O>``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from testbed.kernel.image import Kernel
from testbed.p2p import ctl, debugfs
from testbed.p2p.payload import driver_path
from testbed.qemu.machine import Machine

#: The kernel the RFC tests are meant for, by the name ``testbed kernel build`` will give it.
RFC_KERNEL = "patched"
REFUSING_MACHINE = "default-qemu64"


def _config_has(kernel: Kernel, option: str) -> bool:
    config = kernel.config_path()
    return config is not None and f"CONFIG_{option}=y" in config.read_text().splitlines()


def _exports(kernel: Kernel, symbol: str) -> bool:
    symvers = kernel.build / "Module.symvers" if kernel.build is not None else None
    if symvers is None or not symvers.is_file():
        return False
    return any(line.split("\t")[1:2] == [symbol] for line in symvers.read_text().splitlines())


def _has_vma_p2p_ops(kernel: Kernel) -> bool:
    """Whether the kernel's ``vm_operations_struct`` has RFC 3/5's ``p2p_map``: read from the
    headers in its kbuild tree (a prefix of a series may export RFC 2/5's device_test_p2p
    without 3/5: ``testbed bisect``), else guessed from the export the full series brings."""
    header = kernel.build / "include" / "linux" / "mm.h" if kernel.build is not None else None
    if header is not None and header.is_file():
        return "(*p2p_map)(" in header.read_text(errors="replace")
    return _exports(kernel, "device_test_p2p")


def _need_p2pdma(kernel: Kernel) -> None:
    if not _config_has(kernel, "PCI_P2PDMA"):
        pytest.skip(
            f"kernel {kernel.release} has no CONFIG_PCI_P2PDMA (or no .config in its build "
            "tree): there is no upstream policy to check, only the drivers' parameters; run on "
            "a kernel built with guest-kernel-config/base.config"
        )


def _need_rfc(kernel: Kernel) -> None:
    if not _exports(kernel, "device_test_p2p"):
        pytest.skip(
            f"kernel {kernel.release} does not export device_test_p2p (RFC 2/5): run on the "
            f"kernel {RFC_KERNEL!r} (guest-kernel-config/patches/rfc-p2p-vma/), for now by path "
            "with --testbed-kernel/--testbed-modules/--testbed-build"
        )


def _refusals(vm: Machine) -> tuple[int, list[str]]:
    """The exporter's p2p_denied counter and the importer's device_test_p2p refusals."""
    events = [
        e.text
        for e in debugfs.events(vm.ssh)
        if e.module == "p2p_importer" and "device_test_p2p" in e.text
    ]
    return debugfs.exporter_stats(vm.ssh)["p2p_denied"], events


def test_drivers_use_the_kernels_vm_ops_when_it_has_the_rfc(
    p2p_vm: Machine, testbed_kernel: Kernel
) -> None:
    """The compile probe must pick ``vm_ops`` on a kernel with the series, ``compat`` without:
    a probe that silently fell back would leave the kernel's own path untested."""
    expected = "vm_ops" if _has_vma_p2p_ops(testbed_kernel) else "compat"
    assert driver_path(p2p_vm.ssh) == expected, (
        f"kernel {testbed_kernel.release}: the drivers report path "
        f"{driver_path(p2p_vm.ssh)!r}, expected {expected!r} (see qemu-devices/p2p/probe/)"
    )


def test_rfc_device_test_p2p_allows_what_upstream_allows(
    p2p_vm: Machine, testbed_kernel: Kernel
) -> None:
    """On the suite's machine upstream's policy allows the pair (a common switch, or root
    ports behind an EPYC CPU), so ``device_test_p2p(importer, exporter)`` must say yes and the
    importer must map. RFC 1/5 as posted ends ``pci_test_p2p()`` in ``return false;``: there
    the importer refuses every map with -EXDEV, and this test fails saying so."""
    _need_p2pdma(testbed_kernel)
    _need_rfc(testbed_kernel)
    denied_before, refused_before = _refusals(p2p_vm)
    run = ctl.p2pctl(p2p_vm.ssh, "create size=16K", "mmap", "reg", "dereg")
    denied_after, refused_after = _refusals(p2p_vm)
    new = refused_after[len(refused_before) :]
    assert not new, (
        f"device_test_p2p() refused a pair that upstream's P2PDMA allows on machine "
        f"{p2p_vm.spec.name!r}: {new}; pci_test_p2p() answers false for an allowed pair "
        "(RFC 1/5 as posted: 'This function only ever returns false')"
    )
    run.expect_ok()
    assert denied_after == denied_before, "the exporter's own P2PDMA check refused the pair"


def test_p2pdma_policy_refuses_root_ports_without_a_p2p_capable_host_bridge(
    fresh_p2p_vm: Callable[..., Machine], testbed_kernel: Kernel
) -> None:
    """``default-qemu64``: separate root ports, a CPU family 15, q35's host bridge -- upstream
    refuses. On the vm_ops path the importer's ``device_test_p2p`` refuses before the exporter
    is asked; on the compat path the exporter's ``pci_p2pdma_distance`` check refuses."""
    _need_p2pdma(testbed_kernel)
    vm = fresh_p2p_vm(REFUSING_MACHINE)
    path = driver_path(vm.ssh)
    run = ctl.p2pctl(vm.ssh, "create size=16K", "mmap", "reg expect=EXDEV")
    run.expect_ok()
    denied, refused = _refusals(vm)
    if path == "vm_ops" and _exports(testbed_kernel, "device_test_p2p"):
        assert len(refused) == 1 and denied == 0, (
            f"device_test_p2p must be what refused: importer events {refused}, "
            f"exporter p2p_denied={denied}"
        )
    else:
        assert denied == 1 and not refused, (refused, denied)
        # the exporter asks verbosely: the kernel says why, as upstream words it
        assert "do not share an upstream bridge or whitelisted host bridge" in vm.console_text()
