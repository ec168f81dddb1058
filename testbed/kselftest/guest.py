"""A kselftest in the guest: what the kernel must provide, and one bounded run of the program.

:func:`check_kernel` looks before anything boots: the options the spec needs must be set in
the kernel's ``.config`` and its modules must be in its ``modules.dep``; otherwise a
:class:`~testbed.kselftest.build.KselftestError` names the kernel and the fragment to add, at
once. :func:`run` runs the program over SSH with stderr merged into stdout (the harness's
``TH_LOG`` lines then sit before the result they explain), streaming its output so that a
guest that panics, freezes or times out still leaves everything printed until then: the
parser then reports the tests that never ran as errors, with the reason the run stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from testbed import ktap, paths
from testbed.config.kernels import find_kernel_spec
from testbed.config.kselftests import KselftestSpec
from testbed.errors import ImageError, TestbedError
from testbed.guest.initramfs import GuestFile, resolve_modules
from testbed.kernel import build as kbuild
from testbed.kernel import is_path
from testbed.kernel.image import Kernel
from testbed.kselftest.build import KselftestError, Program

log = logging.getLogger(__name__)

#: where the program goes in the guest
GUEST_DIR = "/usr/local/libexec/kselftest"


@dataclass(frozen=True)
class Outcome:
    """One run of a kselftest program in a guest."""

    output: str  #: everything it printed (stdout and stderr, merged in the guest)
    exitcode: int | None  #: None: it did not finish (guest died, timeout, connection lost)
    seconds: float
    stopped: str  #: why it did not finish ("" when it did)
    suite: ktap.Suite  #: ``output`` parsed

    @property
    def finished(self) -> bool:
        return self.exitcode is not None


def request_for(selection: str | None, spec: KselftestSpec) -> kbuild.Request:
    """The build request of the named kernel ``selection`` (``--kernel``): a kselftest is
    built from the same source and series as the kernel it runs on, so only a named kernel
    (``guest-kernel-config/kernels/``) will do, or the bzImage of one the testbed built (its
    cache entry records the request: how regress and bisect hand their kernels on)."""
    if selection is not None and is_path(selection):
        # a built kernel's image handed on as a file (testbed regress and bisect do that for
        # each side and series prefix): its cache entry records the request
        recorded = kbuild.request_of_image(Path(selection))
        if recorded is not None:
            return recorded
    if selection is None or selection == "stock" or is_path(selection):
        raise KselftestError(
            f"kselftest {spec.name} is built from the kernel's own source, which "
            f"--kernel {selection or 'stock'} does not come with; fix: use a named kernel "
            f"whose fragments include {spec.fragment}, e.g. --kernel hmm"
        )
    kernel_spec = find_kernel_spec(paths.kernel_config_dir() / "kernels", selection)
    return kbuild.request_for(kernel_spec)


def _config_value(config: dict[str, str], option: str) -> str:
    return config.get(option, "not set")


def check_kernel(spec: KselftestSpec, kernel: Kernel, label: str) -> tuple[Path, ...]:
    """The host ``.ko`` files (in load order) the guest must insmod for ``spec`` on
    ``kernel``; raises naming ``label`` (the ``--kernel`` given) and the fix if the kernel
    cannot run it."""
    fix = (
        f"fix: add {spec.fragment} to the fragments of "
        f"guest-kernel-config/kernels/{label}.yaml (as kernels/hmm.yaml does), or run it on "
        "--kernel hmm"
    )
    config: dict[str, str] = {}
    dotconfig = kernel.build / ".config" if kernel.build is not None else None
    if dotconfig is not None and dotconfig.is_file():
        for line in dotconfig.read_text(errors="replace").splitlines():
            name, sep, value = line.partition("=")
            if sep and name.startswith("CONFIG_"):
                config[name] = value
    elif spec.config:
        raise KselftestError(
            f"kernel {label} has no .config to check {', '.join(spec.config)} against; {fix}"
        )
    unset = [o for o in spec.config if _config_value(config, o) not in ("y", "m")]
    if unset:
        raise KselftestError(
            f"kernel {label} ({kernel.release}) lacks "
            + ", ".join(f"{o} (is {_config_value(config, o)})" for o in unset)
            + f", which kselftest {spec.name} needs; {fix}"
        )
    if not spec.modules:
        return ()
    if kernel.modules is None:
        raise KselftestError(
            f"kernel {label} has no modules folder; kselftest {spec.name} needs "
            f"{', '.join(spec.modules)}.ko; {fix}"
        )
    try:
        rels = resolve_modules(kernel.modules, spec.modules)
    except ImageError as exc:
        raise KselftestError(f"kernel {label}: {exc}; {fix}") from exc
    return tuple(kernel.modules / rel for rel in rels)


def guest_file(program: Program) -> GuestFile:
    return GuestFile(f"{GUEST_DIR}/{program.spec.program}", program.binary, 0o755)


def run(shell_run: ShellStream, program: Program) -> Outcome:
    """Run ``program`` in the guest through ``shell_run`` (a machine's ``ssh.stream``),
    bounded by the spec's timeout; never raises for what the guest did."""
    spec = program.spec
    command = f"cd /tmp && {GUEST_DIR}/{spec.program} 2>&1"
    buf = bytearray()
    started = time.monotonic()
    code: int | None
    stopped = ""
    try:
        code = shell_run(command, buf.extend, buf.extend, timeout=spec.timeout)
    except TestbedError as exc:  # a panic, a frozen guest, the timeout: keep what it printed
        code = None
        stopped = f"{type(exc).__name__}: {exc}"
        log.warning("kselftest %s stopped: %s", spec.name, stopped)
    output = buf.decode("utf-8", "replace")
    return Outcome(output, code, time.monotonic() - started, stopped, ktap.parse(output))


class ShellStream(Protocol):
    """What :func:`run` runs the program through: ``SSHShell.stream``."""

    def __call__(
        self,
        command: str,
        on_stdout: Callable[[bytes], object],
        on_stderr: Callable[[bytes], object],
        *,
        timeout: float = ...,
    ) -> int: ...
