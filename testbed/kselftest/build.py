"""Build a kselftest program static from the source of the kernel under test, and list it.

The program is compiled from the very tree the named kernel was built from (its work tree in
``kbuild/work/``, with the kernel's patch series applied: :func:`testbed.kernel.build.
source_tree`), the way the facts file measured it::

    cd <src> && gcc -O2 -I. -Itools/include -static -o OUT \
        tools/testing/selftests/mm/hmm-tests.c -lrt -lpthread -lm

and cached under ``~/.cache/p2p-testbed/kselftests/<key>/<program>``. The key hashes the
source's identity, every patch of the series, the compiler's version, the spec's file and
libraries and this module's recipe version -- not the kernel's config fragments, which do not
change the program -- so an unchanged input never rebuilds and another series always does.

A kselftest_harness.h program lists its tests with ``-l`` without running any: the host runs
the static binary with ``-l`` (and only then; a program without the harness is refused), which
gives every test's name before the guest boots, so a crash mid-run still reports each test it
prevented by name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.config.kselftests import KselftestSpec
from testbed.errors import DependencyError, KernelError
from testbed.kernel import build as kbuild

log = logging.getLogger(__name__)

#: bump when the compile command changes in a way that changes the binary
RECIPE_VERSION = 2
BUILD_TIMEOUT = 600.0
LIST_TIMEOUT = 30.0
#: what ``-l`` prints first (kselftest_harness.h, test_harness_list_tests)
_LIST_HEADER = ("#", "FIXTURE", "VARIANT", "TEST")
_LIST_RULE = "-" * 80


class KselftestError(KernelError):
    """A kselftest cannot be built, listed or run on this kernel (names the kernel and fix)."""


@dataclass(frozen=True)
class Program:
    """A built kselftest program and the tests it runs, in the order it runs them."""

    spec: KselftestSpec
    binary: Path
    tests: tuple[str, ...]
    key: str
    build_seconds: float  #: 0.0 when it came from the cache


def cache_key(spec: KselftestSpec, request: kbuild.Request) -> str:
    h = hashlib.sha256()
    parts = [
        f"recipe {RECIPE_VERSION}",
        request.source.identity,
        request.compiler,
        spec.file,
        " ".join(spec.libraries),
    ]
    for patch in request.series.patches if request.series else ():
        parts.append(f"{patch.name} {patch.strip} {hashlib.sha256(patch.data).hexdigest()}")
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


def compile_argv(spec: KselftestSpec, out: Path) -> list[str]:
    """The gcc command, run in the source tree: static, the tree's own headers first (the
    tested driver's uapi). Relative paths, so the harness's ``file:line`` in a failure reads
    ``tools/testing/selftests/...``, not a cache folder."""
    return [
        "gcc",
        "-O2",
        "-I.",
        "-Itools/include",
        "-static",
        "-o",
        str(out),
        spec.file,
        *(f"-l{lib}" for lib in spec.libraries),
    ]


def build_program(spec: KselftestSpec, request: kbuild.Request) -> Program:
    """The program ``spec`` names, built from ``request``'s source (or from the cache)."""
    key = cache_key(spec, request)
    folder = paths.cache_dir() / "kselftests" / key
    binary = folder / spec.program
    started = time.monotonic()
    built = False
    if not binary.is_file():
        with paths.cache_writes(folder, f"kselftest {spec.name}"):
            folder.mkdir(parents=True, exist_ok=True)
        with paths.cache_lock(folder / ".lock", f"kselftest {spec.name}"):
            if not binary.is_file():
                _compile(spec, request, folder, binary)
                built = True
    else:
        paths.mark_used(folder)
    seconds = round(time.monotonic() - started, 1) if built else 0.0
    return Program(spec, binary, list_tests(binary, spec), key, seconds)


def _compile(spec: KselftestSpec, request: kbuild.Request, folder: Path, binary: Path) -> None:
    with kbuild.source_tree(request) as src:
        source = src / spec.file
        if not source.is_file():
            raise KselftestError(
                f"{spec.source}: {spec.file} is not in the source of kernel {request.name} "
                f"({request.source.label}); fix: correct 'file', or use a newer kernel source"
            )
        if "kselftest_harness.h" not in source.read_text(errors="replace"):
            raise KselftestError(
                f"{spec.source}: {spec.file} does not use kselftest_harness.h; only harness "
                "programs are supported (their tests are listed with -l before the guest runs)"
            )
        fd, partial = tempfile.mkstemp(dir=folder, prefix=f".{spec.program}-")
        os.close(fd)
        argv = compile_argv(spec, Path(partial))
        log.info("building kselftest %s from %s", spec.name, request.describe())
        try:
            proc = subprocess.run(
                argv,
                cwd=src,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except FileNotFoundError as exc:
            raise DependencyError("gcc not found; run ci/setup.sh") from exc
        except subprocess.TimeoutExpired as exc:
            Path(partial).unlink(missing_ok=True)
            raise KselftestError(f"building {spec.name} took over {BUILD_TIMEOUT:g} s") from exc
        (folder / "build.log").write_text(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            Path(partial).unlink(missing_ok=True)
            tail = "\n    ".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise KselftestError(
                f"building kselftest {spec.name} failed (exit {proc.returncode}):\n    {tail}\n"
                f"  command: {' '.join(argv)}\n  fix: static libc (libc6-dev) and the tree's "
                "headers are needed; see the first error above"
            )
        Path(partial).chmod(0o755)
        os.replace(partial, binary)


def parse_listing(text: str) -> tuple[str, ...]:
    """Test names (``fixture[.variant].test``, in run order) from a harness program's ``-l``
    output: one block per fixture (``%-20s %-25s %s`` rows: its variants and tests side by
    side, separated by a rule); a program runs every variant x every test of a fixture."""
    names: list[str] = []
    fixture = ""
    variants: list[str] = []
    tests: list[str] = []

    def flush() -> None:
        for variant in variants or [""]:
            names.extend(f"{fixture}.{variant}.{t}" if variant else f"{fixture}.{t}" for t in tests)

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if tuple(line.split()) == _LIST_HEADER:
            continue
        if line.strip() == _LIST_RULE:
            flush()
            fixture, variants, tests = "", [], []
            continue
        f, v, t = line[:20].strip(), line[21:46].strip(), line[47:].strip()
        if f"{f:<20} {v:<25} {t}".rstrip() != line.rstrip():
            raise KselftestError(
                f"line {number} of the -l listing is not in kselftest_harness.h's columns "
                f"(a name longer than its column?): {line!r}"
            )
        if f:
            if fixture:
                flush()
                variants, tests = [], []
            fixture = f
        if v:
            variants.append(v)
        if t:
            tests.append(t)
    if fixture:
        flush()
    return tuple(names)


def list_tests(binary: Path, spec: KselftestSpec) -> tuple[str, ...]:
    """Run ``binary -l`` on the host (it lists, it runs nothing) and parse the listing."""
    try:
        proc = subprocess.run(
            [str(binary), "-l"], capture_output=True, text=True, timeout=LIST_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KselftestError(
            f"listing the tests of {spec.name} ({binary} -l) failed: {exc}"
        ) from exc
    names = parse_listing(proc.stderr)
    if not names:
        raise KselftestError(
            f"{binary} -l listed no tests (exit {proc.returncode}); stderr:\n{proc.stderr[-2000:]}"
        )
    return names
