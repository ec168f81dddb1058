"""``testbed bench``: how much the testbed adds to a bare QEMU boot, and how fast unplug is.

Every figure is measured in the same run as its baseline, runs interleaved, medians reported:

- ``bare_boot_s``: a plain QEMU (no devices, no QMP, no network) booting the same kernel and
  the same initramfs, from spawn to the guest's "init reached" line on the serial console;
- ``boot_to_ssh_s``: from the testbed starting a machine (image, accelerator, keys, QEMU,
  QMP) to the first SSH command that succeeded in the guest -- measured conservatively, when
  the machine's context manager returns, which also waits for the guest's "ready" line;
- ``ratio``: ``boot_to_ssh_s / bare_boot_s`` per run (each testbed boot right after its bare
  boot), median over the runs (target: at most 1.25 under TCG); ``ratio_of_medians`` too;
- ``unplug_s``: ``device_del`` of the GPU exporter, to QMP ``DEVICE_DELETED``, to the guest
  confirming over SSH that the device left its PCI bus.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from testbed.cli.common import accel_from, add_kernel_options, kernel_from
from testbed.config.schema import Accel
from testbed.deadline import Deadline, wait_for
from testbed.devices import hotplug
from testbed.devices.registry import Machine as MachineDef
from testbed.devices.registry import load_machine
from testbed.errors import TestbedError
from testbed.guest import pci
from testbed.guest.console import MarkerWatch
from testbed.kernel.image import Kernel
from testbed.qemu import accel as accel_mod
from testbed.qemu import cmdline
from testbed.qemu.machine import INIT_MARKER, Machine
from testbed.qemu.process import QemuProcess, reaped_tempdir

TARGET_RATIO = 1.25


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="measure boot overhead against a bare QEMU boot, and unplug latency",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--runs", type=int, default=5, help="repetitions of each figure (median)")
    p.add_argument("--machine", default="default", help="machine name or YAML path")
    p.add_argument(
        "--device", default="gpu-exporter", help="device id to unplug (default: %(default)s)"
    )
    add_kernel_options(p)
    p.set_defaults(func=main)


def bare_boot(
    definition: MachineDef, kernel: Kernel, initrd: Path, accel: Accel, qemu: str, folder: Path
) -> float:
    """Seconds from spawning a plain QEMU to the guest's init printing its first line."""
    console = folder / "bare-console.log"
    console.unlink(missing_ok=True)
    argv = cmdline.bare_argv(
        qemu,
        accel,
        kernel.image,
        initrd,
        console,
        memory=definition.spec.memory,
        cpus=definition.spec.cpus,
        cpu_model=definition.spec.cpu_model,
        kernel_args=definition.spec.kernel_args,
    )
    deadline = Deadline(120, "bare boot to init")
    start = time.monotonic()
    proc = QemuProcess(argv, folder / "bare-stderr.log")
    try:
        watch = MarkerWatch(console, INIT_MARKER)

        def reached() -> bool:
            if proc.poll() is not None:
                raise proc.launch_error("bare QEMU exited during the benchmark")
            return watch.seen()

        # polled as often as Machine polls for its own markers, so both sides wait alike
        wait_for(reached, deadline, doing="bare boot", interval=0.01, max_interval=0.01)
        return time.monotonic() - start
    finally:
        proc.terminate(grace=1)


def testbed_boot_and_unplug(
    definition: MachineDef, kernel: Kernel, accel: Accel, folder: Path, device_id: str
) -> tuple[float, float]:
    """``boot_to_ssh_s`` and ``unplug_s`` of one testbed machine."""
    start = time.monotonic()
    with Machine(definition, kernel, folder / "machine", accel=accel) as vm:
        boot = time.monotonic() - start
        pci_id = definition.type_of(definition.spec.device(device_id)).pci_id
        before = pci.find(vm.ssh, pci_id)
        if not before:
            raise TestbedError(f"the guest does not list {device_id} ({pci_id}) after boot")
        t0 = time.monotonic()
        hotplug.unplug(vm, device_id)
        pci.wait_gone(vm.ssh, pci_id, Deadline(30, f"guest to drop {pci_id}"))
        unplug = time.monotonic() - t0
    return boot, unplug


def main(args: argparse.Namespace) -> int:
    definition = load_machine(args.machine)
    kernel = kernel_from(args)
    samples: dict[str, list[float]] = {"bare_boot_s": [], "boot_to_ssh_s": [], "unplug_s": []}
    with reaped_tempdir("p2p-testbed-bench-") as folder:
        # A machine never started: it names the QEMU binary and builds the same initramfs
        # the testbed boots, which the bare boot then uses too.
        template = Machine(definition, kernel, folder / "template", accel=accel_from(args))
        initrd = template.base_initramfs()
        qemu = template.qemu_binary
        choice = accel_mod.choose(template.requested_accel, qemu, kernel.image, initrd)
        # One untimed boot each to warm the page cache and the testbed's caches.
        bare_boot(definition, kernel, initrd, choice.accel, qemu, folder)
        testbed_boot_and_unplug(definition, kernel, choice.accel, folder, args.device)
        for run in range(args.runs):
            bare = bare_boot(definition, kernel, initrd, choice.accel, qemu, folder)
            boot, unplug = testbed_boot_and_unplug(
                definition, kernel, choice.accel, folder, args.device
            )
            samples["bare_boot_s"].append(bare)
            samples["boot_to_ssh_s"].append(boot)
            samples["unplug_s"].append(unplug)
            if not args.json:
                print(
                    f"run {run + 1}/{args.runs}: bare {bare:.2f} s, to ssh {boot:.2f} s, "
                    f"unplug {unplug:.2f} s",
                    file=sys.stderr,
                )
    medians = {k: statistics.median(v) for k, v in samples.items()}
    result: dict[str, Any] = {
        "accel": choice.accel.value,
        "accel_reason": choice.reason,
        "kernel": kernel.release,
        "machine": definition.spec.name,
        "hotplug": definition.spec.hotplug.value,
        "runs": args.runs,
        **{k: round(v, 3) for k, v in medians.items()},
        # Each testbed boot runs right after its own bare boot; the median of those paired
        # ratios is steadier on a shared machine than the ratio of the two medians.
        "ratio": round(
            statistics.median(
                b / a for a, b in zip(samples["bare_boot_s"], samples["boot_to_ssh_s"], strict=True)
            ),
            3,
        ),
        "ratio_of_medians": round(medians["boot_to_ssh_s"] / medians["bare_boot_s"], 3),
        "target_ratio": TARGET_RATIO,
        "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("accel", "kernel", "bare_boot_s", "boot_to_ssh_s", "ratio", "unplug_s"):
            print(f"{key:14} {result[key]}")
    return 0
