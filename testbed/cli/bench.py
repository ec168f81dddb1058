"""``testbed bench``: what the testbed costs a user on top of a bare QEMU boot, and unplug latency.

Every figure is measured in the same run as its baseline, runs interleaved, medians reported.

What a user waits for (the headline):

- ``exec_s``: the whole ``testbed exec -- true`` process, from spawning it to its exit: Python
  start-up, finding the kernel, building or finding the guest image, booting the machine with
  its devices and drivers, running ``true`` over SSH and shutting down;
- ``bare_s``: the floor: a plain QEMU process (no devices, no QMP, no network) booting the same
  kernel into a busybox initramfs whose init powers off at once, from spawn to exit;
- ``exec_ratio``: ``exec_s / bare_s`` per run (each exec right after its own bare boot), median
  over the runs (target: at most 1.25); ``exec_ratio_of_medians`` and
  ``exec_ratio_of_minimums`` (the fastest exec over the fastest bare run) too;
- ``exec_phases``: where the exec's time goes, medians per phase (see :data:`EXEC_PHASES`),
  and ``load_average_start`` / ``load_average`` (other work on a shared host slows both);
- ``vng_s``, ``vng_ratio`` (``--vng``): virtme-ng's ``vng --run <image> -- true`` on the same
  kernel, timed the same way, as a comparison.

Inside one process (the second line):

- ``bare_boot_s``: the plain QEMU booting the testbed's own initramfs, from spawn to the
  guest's "init reached" line on the serial console;
- ``boot_to_ssh_s``: from the testbed starting a machine (image, accelerator, keys, QEMU, QMP)
  to the first SSH command that succeeded in the guest, taken when the machine's context
  manager returns (which also waits for the guest's "ready" line); ``ratio`` as above;
- ``unplug_s``: ``device_del`` of the GPU exporter, to QMP ``DEVICE_DELETED``, to the guest
  confirming over SSH that the device left its PCI bus.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.cli.common import accel_from, add_kernel_options, kernel_from
from testbed.cli.execute import TIMINGS_ENV

if TYPE_CHECKING:
    from testbed.config.schema import Accel
    from testbed.devices.registry import Machine as MachineDef
    from testbed.kernel.image import Kernel

TARGET_RATIO = 1.25
#: A bound on each timed process; a healthy one takes seconds.
PROCESS_TIMEOUT = 180.0
#: The floor's init: power off as soon as the kernel hands over to userspace.
POWEROFF_INIT = b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="measure what a command costs against a bare QEMU boot, and unplug latency",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--runs", type=int, default=5, help="repetitions of each figure (median)")
    p.add_argument("--machine", default="default", help="machine name or YAML path")
    p.add_argument(
        "--device", default="gpu-exporter", help="device id to unplug (default: %(default)s)"
    )
    p.add_argument(
        "--vng",
        metavar="PATH",
        nargs="?",
        const="vng",
        help="also time virtme-ng's 'vng --run IMAGE -- true' (PATH: the vng program)",
    )
    p.add_argument(
        "--no-in-process",
        action="store_true",
        help="skip the in-process figures (bare_boot_s, boot_to_ssh_s, ratio, unplug_s)",
    )
    p.add_argument(
        "--snapshot",
        action="store_true",
        help="instead: boot-to-SSH of the default machine with the P2P drivers against "
        "restore-to-SSH of its saved state (testbed.qemu.snapshot), paired per run",
    )
    add_kernel_options(p)
    p.set_defaults(func=main)


# --- whole processes ------------------------------------------------------------------------


def poweroff_initramfs(dest: Path) -> Path:
    """A busybox initramfs whose ``/init`` powers the machine off: the bare floor's guest."""
    from testbed.guest.cpio import CpioWriter
    from testbed.guest.initramfs import BUSYBOX

    with dest.open("wb") as out:
        writer = CpioWriter(out)
        writer.directory("/bin")
        writer.file("/bin/busybox", BUSYBOX.read_bytes(), 0o755)
        writer.file("/init", POWEROFF_INIT, 0o755)
        writer.close()
    return dest


def timed_process(
    argv: list[str], log: Path, what: str, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Monotonic time of spawning ``argv`` and seconds to its exit; raises unless it exits
    with status 0."""
    from testbed.errors import TestbedError

    start = time.monotonic()
    with log.open("wb") as out:
        try:
            proc = subprocess.run(
                argv,
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=PROCESS_TIMEOUT,
                env=None if env is None else {**os.environ, **env},
            )
        except subprocess.TimeoutExpired as exc:
            raise TestbedError(f"{what} did not finish within {PROCESS_TIMEOUT:g} s") from exc
        except OSError as exc:
            raise TestbedError(f"cannot run {what}: {argv[0]}: {exc.strerror}") from exc
    took = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n  ".join(log.read_text(errors="replace").splitlines()[-15:])
        raise TestbedError(f"{what} exited with {proc.returncode}: {' '.join(argv)}\n  {tail}")
    return start, took


#: The phases of one ``testbed exec`` as its user waits for them, each named after the time
#: stamp that ends it (``testbed exec`` writes its stamps when TESTBED_EXEC_TIMINGS is set).
#: All are seen from the host: the guest's own clock is calibrated under TCG against a timer
#: the loaded host delays, so its printk times can be off by a second.
EXEC_PHASES = (
    ("main", "start_imports_s"),  # interpreter start-up, imports, option parsing
    ("qemu_spawn", "before_qemu_s"),  # kernel lookup, payload, image, accelerator
    ("init_seen", "qemu_to_init_s"),  # QEMU start, firmware, kernel load and boot, to init
    ("sshd_seen", "init_to_sshd_s"),  # --ssh: NIC modules, sshd start
    ("ssh_connected", "ssh_connect_s"),  # --ssh: TCP, kex, auth
    ("command_started", "init_to_command_s"),  # start-up script, modules, drivers
    ("command_exited", "command_s"),
    ("down", "shutdown_s"),  # QMP quit, QEMU exit, folders removed
    ("exit", "process_exit_s"),  # interpreter teardown
)


def exec_phases(stamps: dict[str, float], spawn: float, took: float) -> dict[str, float]:
    """Seconds per phase of one ``testbed exec`` from its time stamps (host monotonic clock;
    ``vm_`` ones from the machine). Phases whose stamps are missing are left out; the phases
    add up to ``took``."""
    points = {k.removeprefix("vm_"): v for k, v in stamps.items() if not k.startswith("guest_")}
    points["exit"] = spawn + took
    phases: dict[str, float] = {}
    last = spawn
    for key, name in EXEC_PHASES:
        if key in points:
            phases[name] = round(max(0.0, points[key] - last), 3)
            last = max(last, points[key])
    return phases


def testbed_argv(args: argparse.Namespace) -> list[str]:
    """The ``testbed`` command as a user runs it: the console script next to this Python."""
    script = Path(sys.executable).parent / "testbed"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import sys; from testbed.cli import main; sys.exit(main())"]


def exec_argv(args: argparse.Namespace) -> list[str]:
    argv = [*testbed_argv(args), "exec", "--machine", args.machine]
    for option in ("kernel", "modules", "build", "accel"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option}", str(value)]
    return [*argv, "--", "true"]


def bare_poweroff_argv(
    definition: MachineDef, kernel: Kernel, initrd: Path, accel: Accel, qemu: str, folder: Path
) -> list[str]:
    from testbed.qemu import cmdline

    return [
        *cmdline.bare_argv(
            qemu,
            accel,
            kernel.image,
            initrd,
            folder / "bare-console.log",
            memory=definition.spec.memory,
            cpus=definition.spec.cpus,
            cpu_model=definition.spec.cpu_model,
            kernel_args=definition.spec.kernel_args,
        ),
        "-no-reboot",
    ]


def vng_argv(vng: str, kernel: Kernel) -> list[str]:
    return [vng, "--run", str(kernel.image), "--", "true"]


# --- inside one process -----------------------------------------------------------------------


def bare_boot(
    definition: MachineDef, kernel: Kernel, initrd: Path, accel: Accel, qemu: str, folder: Path
) -> float:
    """Seconds from spawning a plain QEMU to the guest's init printing its first line."""
    from testbed.deadline import Deadline, wait_for
    from testbed.guest.console import MarkerWatch
    from testbed.qemu import cmdline
    from testbed.qemu.machine import INIT_MARKER
    from testbed.qemu.process import QemuProcess

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
    from testbed.deadline import Deadline
    from testbed.devices import hotplug
    from testbed.errors import TestbedError
    from testbed.guest import pci
    from testbed.qemu.machine import Machine

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


# --- the benchmark ----------------------------------------------------------------------------


def _paired_ratio(base: list[float], other: list[float]) -> float:
    return round(statistics.median(b / a for a, b in zip(base, other, strict=True)), 3)


def snapshot_bench(args: argparse.Namespace) -> dict[str, Any]:
    """``--snapshot``: per run, one boot of ``args.machine`` with the P2P drivers, then one
    restore of the state saved from the first boot; both timed from ``Machine.start`` to a
    working SSH session. Medians and the median of the paired ratios."""
    from testbed.deadline import Deadline
    from testbed.devices.registry import load_machine
    from testbed.p2p.payload import payload
    from testbed.qemu import snapshot
    from testbed.qemu.machine import Machine
    from testbed.qemu.process import reaped_tempdir

    definition = load_machine(args.machine)
    kernel = kernel_from(args)
    drivers = payload(kernel).machine_kwargs()
    common: dict[str, Any] = {
        "accel": accel_from(args),
        "qemu_args": snapshot.SNAPSHOT_QEMU_ARGS,
        "collect_dmesg": False,
        **drivers,
    }
    boots: list[float] = []
    restores: list[float] = []
    with reaped_tempdir("p2p-testbed-bench-") as folder:
        saved: snapshot.Saved | None = None
        for run in range(args.runs + 1):  # the first round is untimed: warms the caches
            with Machine(definition, kernel, folder / f"boot-{run}", **common) as vm:
                boot = vm.timings["boot_to_ssh_s"]
                if saved is None:
                    (folder / "state").mkdir()
                    saved = snapshot.save(vm, folder / "state", Deadline(120, "saving the guest"))
            again = folder / f"restore-{run}"
            with Machine(definition, kernel, again, restore=saved, **common) as restored:
                restore = restored.timings["boot_to_ssh_s"]
            if run == 0:
                continue
            boots.append(boot)
            restores.append(restore)
            if not args.json:
                print(f"run {run}/{args.runs}: boot_to_ssh {boot:.2f} s, restore_to_ssh "
                      f"{restore:.2f} s", file=sys.stderr)  # fmt: skip
    return {
        "kernel": kernel.release,
        "machine": definition.spec.name,
        "runs": args.runs,
        "boot_to_ssh_s": round(statistics.median(boots), 3),
        "restore_to_ssh_s": round(statistics.median(restores), 3),
        "snapshot_speedup": _paired_ratio(restores, boots),
        "samples": {"boot_to_ssh_s": boots, "restore_to_ssh_s": restores},
    }


def main(args: argparse.Namespace) -> int:
    if args.snapshot:
        snap = snapshot_bench(args)
        if args.json:
            print(json.dumps(snap))
        else:
            print(
                f"kernel {snap['kernel']}, {args.runs} runs (medians): boot_to_ssh "
                f"{snap['boot_to_ssh_s']:.2f} s, restore_to_ssh {snap['restore_to_ssh_s']:.2f}"
                f" s, restore is {snap['snapshot_speedup']:.1f}x faster"
            )
        return 0
    from testbed.devices.registry import load_machine
    from testbed.errors import DependencyError
    from testbed.qemu import accel as accel_mod
    from testbed.qemu.machine import Machine
    from testbed.qemu.process import reaped_tempdir

    definition = load_machine(args.machine)
    kernel = kernel_from(args)
    vng = None
    if args.vng:
        vng = shutil.which(args.vng)
        if vng is None:
            raise DependencyError(f"--vng: {args.vng!r} not found (pip install virtme-ng)")
    keys = ["bare_s", "exec_s"] + (["vng_s"] if vng else [])
    if not args.no_in_process:
        keys += ["bare_boot_s", "boot_to_ssh_s", "unplug_s"]
    samples: dict[str, list[float]] = {k: [] for k in keys}
    load_at_start = os.getloadavg()
    # registered with the reaper: a SIGKILL mid-benchmark leaves no folder behind
    with reaped_tempdir("p2p-testbed-bench-") as folder:
        # A machine never started: it names the QEMU binary and builds the same initramfs
        # the testbed boots, which the in-process bare boot then uses too.
        template = Machine(definition, kernel, folder / "template", accel=accel_from(args))
        initrd = template.base_initramfs()
        qemu = template.qemu_binary
        choice = accel_mod.choose(template.requested_accel, qemu, kernel.image, initrd)
        floor = bare_poweroff_argv(
            definition, kernel, poweroff_initramfs(folder / "poweroff.cpio"), choice.accel,
            qemu, folder,
        )  # fmt: skip
        if args.accel is None:
            args.accel = choice.accel.value  # the exec children use the same verdict
        whole = {"bare_s": floor, "exec_s": exec_argv(args)}
        if vng:
            whole["vng_s"] = vng_argv(vng, kernel)

        stamps_file = folder / "exec-timings.json"
        phases: list[dict[str, float]] = []

        def one_round() -> dict[str, float]:
            got: dict[str, float] = {}
            for key, argv in whole.items():
                env = {TIMINGS_ENV: str(stamps_file)} if key == "exec_s" else None
                spawn, got[key] = timed_process(argv, folder / f"{key}.log", key, env)
                if key == "exec_s":
                    stamps = json.loads(stamps_file.read_text())
                    phases.append(exec_phases(stamps, spawn, got[key]))
            if not args.no_in_process:
                got["bare_boot_s"] = bare_boot(
                    definition, kernel, initrd, choice.accel, qemu, folder
                )
                got["boot_to_ssh_s"], got["unplug_s"] = testbed_boot_and_unplug(
                    definition, kernel, choice.accel, folder, args.device
                )
            return got

        one_round()  # untimed: warms the page cache and the testbed's caches
        phases.clear()
        for run in range(args.runs):
            got = one_round()
            for key, value in got.items():
                samples[key].append(value)
            if not args.json:
                print(
                    f"run {run + 1}/{args.runs}: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in got.items()),
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
        # Each figure is taken right after its own bare boot; the median of those paired
        # ratios is steadier on a shared machine than the ratio of the two medians.
        "exec_ratio": _paired_ratio(samples["bare_s"], samples["exec_s"]),
        "exec_ratio_of_medians": round(medians["exec_s"] / medians["bare_s"], 3),
        # the fastest of each: what the two cost when the host let them run (other jobs on a
        # shared host only ever add time), a figure steadier under load than the medians
        "exec_ratio_of_minimums": round(min(samples["exec_s"]) / min(samples["bare_s"]), 3),
        "target_ratio": TARGET_RATIO,
    }
    if vng:
        result["vng_ratio"] = _paired_ratio(samples["bare_s"], samples["vng_s"])
        result["exec_vs_vng"] = _paired_ratio(samples["exec_s"], samples["vng_s"])
    if not args.no_in_process:
        result["ratio"] = _paired_ratio(samples["bare_boot_s"], samples["boot_to_ssh_s"])
        result["ratio_of_medians"] = round(medians["boot_to_ssh_s"] / medians["bare_boot_s"], 3)
    result["exec_phases"] = {
        name: round(statistics.median(p.get(name, 0.0) for p in phases), 3)
        for name in dict.fromkeys(n for p in phases for n in p)
    }
    # other work on the host slows the guest: 1/5/15-minute load averages, at start and end
    result["load_average_start"] = [round(x, 2) for x in load_at_start]
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["samples"] = {k: [round(x, 3) for x in v] for k, v in samples.items()}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accel {result['accel']}, kernel {result['kernel']}, {args.runs} runs (medians)")
        line = f"whole process: exec {result['exec_s']:.2f} s, bare {result['bare_s']:.2f} s"
        line += f", exec_ratio {result['exec_ratio']:.3f} (target <= {TARGET_RATIO})"
        line += f"; fastest of each: {result['exec_ratio_of_minimums']:.3f}"
        if vng:
            line += f"; vng {result['vng_s']:.2f} s, vng_ratio {result['vng_ratio']:.3f}"
        print(line)
        print(
            "exec phases:   "
            + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in result["exec_phases"].items())
            + f" (s, medians; load average {result['load_average'][0]:.1f})"
        )
        if not args.no_in_process:
            print(
                f"in process:    boot_to_ssh {result['boot_to_ssh_s']:.2f} s, bare_boot "
                f"{result['bare_boot_s']:.2f} s, ratio {result['ratio']:.3f}; unplug "
                f"{result['unplug_s']:.2f} s"
            )
    return 0
