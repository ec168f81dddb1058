"""``testbed kernel build|bench|update``: build named guest kernels, time the build cache,
look up the stock kernel.

``build [NAME...]`` builds the named kernels of ``guest-kernel-config/kernels/`` (default:
``base``) and prints, per kernel, its release and cache folder; an unchanged request returns
from the cache at once. ``bench`` times a cold build (empty cache and ccache, in a temporary
cache root), a cached no-op (``testbed kernel build`` as a new process) and a rebuild after
one patch of a series changed. ``update`` asks apt which Debian stock kernel is current,
fetches it into the cache if it is new, and records it, so that later commands use it without
asking apt (see :mod:`testbed.kernel.stock`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testbed import paths
from testbed.config.kernels import find_kernel_spec, kernel_names
from testbed.kernel import build as kbuild
from testbed.kernel import series as kseries

DEFAULT = "base"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "kernel",
        help="build guest kernels from source + patch series + config fragments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ksub = p.add_subparsers(dest="kernel_command", required=True)
    names = ", ".join(kernel_names(paths.kernel_config_dir() / "kernels"))
    b: argparse.ArgumentParser = ksub.add_parser(
        "build", help="build named kernels (cached)", description=f"Known kernels: {names}."
    )
    b.add_argument("names", nargs="*", metavar="NAME", help=f"default: {DEFAULT}")
    b.add_argument("-j", "--jobs", type=int, help="make -j (default: the number of CPUs)")
    b.add_argument("--json", action="store_true", help="print the results as JSON lines")
    b.set_defaults(func=main_build)
    bench: argparse.ArgumentParser = ksub.add_parser(
        "bench",
        help="time a cold build, a cached no-op and a one-patch-changed rebuild",
        description="Build NAME cold in a temporary cache (no ccache, nothing unpacked), then "
        "time 'testbed kernel build NAME' on the built cache, then add a one-line patch to "
        "the series, build, change that patch and time the rebuild.",
    )
    bench.add_argument("name", nargs="?", default=DEFAULT, metavar="NAME")
    bench.add_argument("-j", "--jobs", type=int)
    bench.add_argument(
        "--warm",
        action="store_true",
        help="skip the cold build: use the normal cache (faster; the cold figure is left out)",
    )
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.set_defaults(func=main_bench)
    update = ksub.add_parser(
        "update",
        help="ask apt for the current Debian stock kernel, fetch it if new, remember it",
    )
    update.add_argument(
        "--flavour",
        default=None,
        help="Debian kernel flavour (default: cloud-amd64; also amd64, rt-amd64)",
    )
    update.set_defaults(func=update_main)


def main_build(args: argparse.Namespace) -> int:
    folder = paths.kernel_config_dir() / "kernels"
    specs = [find_kernel_spec(folder, n) for n in (args.names or [DEFAULT])]  # typos first
    for spec in specs:
        t0 = time.monotonic()
        request = kbuild.request_for(spec)
        kernel = kbuild.build(request, jobs=args.jobs)
        seconds = time.monotonic() - t0
        if args.json:
            print(
                json.dumps(
                    {
                        "name": spec.name,
                        "release": kernel.release,
                        "image": str(kernel.image),
                        "key": request.key(),
                        "seconds": round(seconds, 2),
                    }
                )
            )
        else:
            print(f"{spec.name}: {kernel.release} in {seconds:.1f} s, {kernel.image.parent}")
    return 0


# --- bench ----------------------------------------------------------------------------------

_TOUCHED = "drivers/pci/p2pdma.c"


def bench_patch(stamp: str) -> bytes:
    """A one-line patch adding a global to ``drivers/pci/p2pdma.c`` (code, not a comment, so
    ccache cannot serve it): the stand-in for "one patch of the series changed"."""
    return (
        "Subject: [PATCH] testbed bench: one changed line\n\n---\n"
        f"--- a/{_TOUCHED}\n+++ b/{_TOUCHED}\n"
        "@@ -11,6 +11,7 @@\n"
        ' #define pr_fmt(fmt) "pci-p2pdma: " fmt\n'
        " #include <linux/ctype.h>\n"
        " #include <linux/dma-map-ops.h>\n"
        f'+const char testbed_bench_stamp[] = "{stamp}";\n'
        " #include <linux/pci-p2pdma.h>\n"
        " #include <linux/module.h>\n"
        " #include <linux/slab.h>\n"
    ).encode()


def with_bench_patch(request: kbuild.Request, folder: Path, stamp: str) -> kbuild.Request:
    data = bench_patch(stamp)
    (folder / "9999-testbed-bench.patch").write_bytes(data)
    patch = kseries.Patch(
        "9999-testbed-bench.patch", folder / "9999-testbed-bench.patch", 1, data, 0
    )
    old = request.series.patches if request.series else ()
    ser = kseries.Series("bench", folder, (*old, patch))
    return dataclasses.replace(request, name=f"{request.name}-bench", series=ser)


def _timed_cli_build(name: str, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from testbed.cli import main; sys.exit(main())",
            "kernel",
            "build",
            name,
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=kbuild.BUILD_TIMEOUT,
    )
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"testbed kernel build {name} failed:\n{proc.stderr}")
    return seconds


def main_bench(args: argparse.Namespace) -> int:
    spec = find_kernel_spec(paths.kernel_config_dir() / "kernels", args.name)
    figures: dict[str, float | str | None] = {
        "kernel": spec.name,
        "jobs": args.jobs or os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="testbed-kbench-") as tmp:
        saved = os.environ.get("XDG_CACHE_HOME")
        if not args.warm:
            # a cache root of our own: nothing unpacked, no work tree, empty ccache
            os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        try:
            request = kbuild.request_for(spec)
            t0 = time.monotonic()
            kbuild.build(request, jobs=args.jobs)
            figures["cold_s" if not args.warm else "first_s"] = round(time.monotonic() - t0, 1)
            figures["noop_s"] = round(_timed_cli_build(spec.name, dict(os.environ)), 2)
            folder = Path(tmp) / "series"
            folder.mkdir()
            # a patch added (not timed), then that patch changed (timed); the stamps are new
            # each run, so neither build can come from the cache or from ccache
            stamp = str(time.time_ns())
            one = with_bench_patch(request, folder, f"one-{stamp}")
            two = with_bench_patch(request, folder, f"two-{stamp}")
            kbuild.build(one, jobs=args.jobs)
            t0 = time.monotonic()
            kbuild.build(two, jobs=args.jobs)
            figures["one_patch_changed_s"] = round(time.monotonic() - t0, 1)
            for bench_request in (one, two):  # throw-away entries: do not let them pile up
                shutil.rmtree(kbuild.entry_dir(bench_request), ignore_errors=True)
            # the work tree keeps the bench patch until the next build syncs it away
        finally:
            if saved is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = saved
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"kernel {spec.name}, make -j{figures['jobs']}:")
        if "cold_s" in figures:
            print(f"  cold build (empty cache and ccache):   {figures['cold_s']:>7} s")
        print(f"  cached no-op ('testbed kernel build'): {figures['noop_s']:>7} s")
        print(f"  one patch changed, rebuild:            {figures['one_patch_changed_s']:>7} s")
    return 0


def update_main(args: argparse.Namespace) -> int:
    from testbed.kernel import stock

    flavour = args.flavour or stock.DEFAULT_FLAVOUR
    before = {k.image for k in stock.cached(flavour)}
    kernel = stock.update(flavour)
    state = "already cached" if kernel.image in before else "fetched"
    print(f"current stock kernel ({flavour}): {kernel.describe()}; {state}")
    print(f"  image: {kernel.image}")
    return 0
