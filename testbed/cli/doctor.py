"""``testbed doctor``: what is installed, whether KVM works, which kernels are cached."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import paths
from testbed.errors import TestbedError

REQUIRED_QEMU_DEVICES = ("ivshmem-plain", "edu", "pcie-root-port", "pvpanic-pci", "virtio-net-pci")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor",
        help="check the host: tools, QEMU devices, KVM, cached kernels",
        description="Report what the testbed needs and whether this host has it. Exits 1 if "
        "something required is missing.",
    )
    p.add_argument(
        "--probe-kvm",
        action="store_true",
        help="run the bounded KVM test boot now instead of reporting the cached verdict",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=main)


def _run(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"<{exc}>"
    return (proc.stdout + proc.stderr).strip()


def _tool(name: str, path: str | None, package: str, version_args: list[str] | None) -> Check:
    found = path if path and os.path.exists(path) else shutil.which(name)
    if not found:
        return Check(name, False, "not found", f"apt-get install {package} (or run ci/setup.sh)")
    detail = found
    if version_args is not None:
        first = _run([found, *version_args]).splitlines()
        detail += f" ({first[0]})" if first else ""
    return Check(name, True, detail)


def checks(probe_kvm: bool) -> list[Check]:
    from testbed.guest.initramfs import BUSYBOX, DROPBEAR
    from testbed.kernel import build as kbuild
    from testbed.kernel import stock
    from testbed.qemu import accel

    out = [
        Check("python", sys.version_info >= (3, 11), sys.version.split()[0], "Python >= 3.11"),
        _tool("qemu-system-x86_64", None, "qemu-system-x86", ["--version"]),
        _tool("busybox", str(BUSYBOX), "busybox-static", None),
        _tool("dropbear", str(DROPBEAR), "dropbear-bin", None),
        _tool("gcc", None, "gcc", ["--version"]),
        _tool("make", None, "make", ["--version"]),
        _tool("apt-get", None, "apt", None),
        _tool("dpkg-deb", None, "dpkg", None),
        _tool("depmod", None, "kmod", None),
        _tool("ccache", None, "ccache", None),
        _tool("patch", None, "patch", None),
        _kernel_source(),
    ]
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        devices = _run([qemu, "-device", "help"])
        missing = [d for d in REQUIRED_QEMU_DEVICES if f'"{d}"' not in devices]
        out.append(
            Check(
                "qemu devices",
                not missing,
                "missing: " + ", ".join(missing) if missing else ", ".join(REQUIRED_QEMU_DEVICES),
                "a QEMU build with these devices (Debian's qemu-system-x86 has them)",
            )
        )
    node = accel.kvm_usable_node()
    if node is not None:
        out.append(Check("kvm", True, f"not usable ({node}); guests run under TCG"))
    elif probe_kvm and qemu:
        out.append(_probe(qemu))
    else:
        cached = accel.cached_verdict(qemu) if qemu else None
        detail = (
            f"cached verdict: {cached.describe()}"
            if cached
            else "not probed yet (the first boot probes; or run 'testbed doctor --probe-kvm')"
        )
        out.append(Check("kvm", True, "/dev/kvm present; " + detail))
    kernels = stock.cached()
    out.append(
        Check(
            "stock kernel",
            True,
            "; ".join(k.describe() for k in kernels)
            if kernels
            else "none cached (fetched on first use)",
        )
    )
    built = kbuild.built()
    out.append(
        Check(
            "built kernels",
            True,
            "; ".join(k.describe() for k in built)
            if built
            else "none yet ('testbed kernel build NAME', or --kernel NAME builds on first use)",
        )
    )
    out.append(Check("cache", True, f"{paths.cache_dir()} ({_size(paths.cache_dir())})"))
    return out


def _kernel_source() -> Check:
    from testbed.kernel import source

    try:
        return Check("kernel source", True, str(source.newest_debian_source()))
    except TestbedError as exc:
        return Check("kernel source", False, str(exc), "apt-get install linux-source-6.12")


def _probe(qemu: str) -> Check:
    from testbed.kernel import stock
    from testbed.qemu import accel

    try:
        from testbed.guest.initramfs import ImageSpec, build_base

        kernel = stock.stock_kernel()
        initrd = build_base(ImageSpec(kernel=kernel))
        verdict = accel.refresh(qemu, kernel.image, initrd)
    except TestbedError as exc:
        return Check("kvm", False, f"probe could not run: {exc}")
    return Check("kvm", True, f"probe: {verdict.describe()}")


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{total / 1e6:.0f} MB"


def main(args: argparse.Namespace) -> int:
    results = checks(args.probe_kvm)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=1))
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            mark = "ok " if r.ok else "MISSING"
            print(
                f"{mark:7} {r.name:{width}}  {r.detail}"
                + (f"\n{'':7} {'':{width}}  fix: {r.fix}" if not r.ok and r.fix else "")
            )
    return 0 if all(r.ok for r in results) else 1
