"""Choosing the accelerator: KVM when it really works, TCG otherwise -- never a hang.

``/dev/kvm`` existing proves little: under nested virtualisation it may open fine and the guest
then hangs in early boot. So ``auto`` *probes*: it boots the real kernel and initramfs under
KVM with a hard bound, and accepts KVM only if the guest reaches init and QMP ``query-kvm``
says KVM is enabled. Otherwise it falls back to TCG with a notice that says why. The verdict is
cached per host (QEMU binary, host kernel, /dev/kvm) for :data:`CACHE_TTL` seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed import paths
from testbed.config.schema import Accel
from testbed.deadline import Deadline, wait_for
from testbed.errors import AccelError, DeadlineExceeded, TestbedError
from testbed.guest.console import MarkerWatch
from testbed.qemu.process import QemuProcess, reaped_tempdir
from testbed.qemu.qmp import QMP

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 20.0  #: a KVM guest reaches init in ~1 s; a stuck one never does
CACHE_TTL = float(os.environ.get("TESTBED_ACCEL_CACHE_TTL", str(24 * 3600)))
INIT_MARKER = "testbed-guest: init reached"


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel  #: KVM or TCG
    reason: str  #: one line for the user and the artifacts
    probed_at: float  #: when the verdict was reached (epoch seconds)

    def describe(self) -> str:
        return f"{self.accel.value}: {self.reason}"


def _host_key(qemu: str) -> str:
    st = os.stat(qemu)
    parts = [qemu, str(st.st_size), str(st.st_mtime_ns), os.uname().release, os.uname().nodename]
    parts.append("kvm" if os.path.exists("/dev/kvm") else "nokvm")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _cache_file() -> Path:
    return paths.cache_dir() / "accel.json"


def _cached(key: str) -> AccelChoice | None:
    try:
        data = json.loads(_cache_file().read_text())[key]
        choice = AccelChoice(Accel(data["accel"]), data["reason"], float(data["probed_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if time.time() - choice.probed_at > CACHE_TTL:
        return None
    return choice


def _store(key: str, choice: AccelChoice) -> None:
    path = _cache_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    entry = asdict(choice)
    entry["accel"] = choice.accel.value
    data[key] = entry
    # a name of this process's own: two pytest-xdist workers may probe at once
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def cached_verdict(qemu: str) -> AccelChoice | None:
    """The cached probe verdict for this host and QEMU binary, if still fresh."""
    return _cached(_host_key(qemu))


def refresh(qemu: str, kernel: Path, initrd: Path) -> AccelChoice:
    """Probe now and replace the cached verdict (``testbed doctor --probe-kvm``)."""
    choice = probe(qemu, kernel, initrd)
    _store(_host_key(qemu), choice)
    return choice


def kvm_usable_node() -> str | None:
    """Why /dev/kvm cannot be used at all, or None if it can be opened."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


def choose(requested: Accel, qemu: str, kernel: Path, initrd: Path) -> AccelChoice:
    """Turn ``auto``/``kvm``/``tcg`` into KVM or TCG (see the module docstring)."""
    now = time.time()
    if requested is Accel.TCG:
        return AccelChoice(Accel.TCG, "forced by the user", now)
    if requested is Accel.KVM:
        why = kvm_usable_node()
        if why is not None:
            raise AccelError(f"--accel kvm was forced, but {why}; use --accel auto or tcg")
        return AccelChoice(Accel.KVM, "forced by the user (not probed)", now)
    why = kvm_usable_node()
    if why is not None:
        choice = AccelChoice(Accel.TCG, f"{why}; using TCG", now)
        log.warning("KVM not available (%s): guests run under TCG (slower)", why)
        return choice
    key = _host_key(qemu)
    cached = _cached(key)
    if cached is not None:
        if cached.accel is Accel.TCG:
            log.warning("using TCG (cached KVM probe verdict: %s)", cached.reason)
        return cached
    choice = probe(qemu, kernel, initrd)
    _store(key, choice)
    if choice.accel is Accel.TCG:
        log.warning(
            "KVM probe failed, falling back to TCG: %s. Force with --accel kvm or tcg.",
            choice.reason,
        )
    else:
        log.info("KVM probe succeeded: %s", choice.reason)
    return choice


def _first_error(stderr: str) -> str:
    """The line of QEMU's stderr that says what went wrong (one line, for a notice)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[-1] if lines else ""


def probe(qemu: str, kernel: Path, initrd: Path, timeout: float = PROBE_TIMEOUT) -> AccelChoice:
    """Boot ``kernel`` under KVM for at most ``timeout`` seconds and see whether it works."""
    log.info("probing KVM with a test boot (at most %g s)...", timeout)
    with reaped_tempdir("p2p-testbed-kvmprobe-") as folder:
        qmp = QMP(folder / "qmp.log", name="kvm-probe")
        proc: QemuProcess | None = None
        start = time.monotonic()
        try:
            console = folder / "console.log"
            argv = [
                qemu,
                "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "512M",
                "-nodefaults", "-no-user-config", "-display", "none",
                "-kernel", str(kernel), "-initrd", str(initrd),
                "-append", "console=ttyS0 rdinit=/init",
                "-chardev", f"file,id=console,path={console}", "-serial", "chardev:console",
                "-chardev", f"socket,id=qmp,path={folder / 'qmp.sock'}",
                "-mon", "chardev=qmp,mode=control",
            ]  # fmt: skip
            qmp.listen(folder / "qmp.sock")
            proc = QemuProcess(argv, folder / "qemu-stderr.log")
            running = proc
            deadline = Deadline(timeout, "KVM probe boot")
            watch = MarkerWatch(console, INIT_MARKER)
            try:
                qmp.accept(deadline, lambda: running.poll() is None)
                kvm = qmp.execute("query-kvm", timeout=deadline.cap(5))
                if not (isinstance(kvm, dict) and kvm.get("enabled")):
                    return AccelChoice(
                        Accel.TCG, f"QEMU reports KVM not enabled ({kvm})", time.time()
                    )
                wait_for(
                    lambda: running.poll() is not None or watch.seen(),
                    deadline,
                    doing="waiting for the KVM guest to reach init",
                )
            except DeadlineExceeded:
                return AccelChoice(
                    Accel.TCG,
                    f"a KVM guest did not reach init within {timeout:g} s (nested KVM typically "
                    "hangs in early boot)",
                    time.time(),
                )
            except TestbedError as exc:
                said = _first_error(running.log_tail(10))
                reason = (
                    f"QEMU failed under KVM: {said}" if said else f"KVM test boot failed: {exc}"
                )
                return AccelChoice(Accel.TCG, reason, time.time())
            if running.poll() is not None:
                return AccelChoice(
                    Accel.TCG,
                    f"QEMU exited during the KVM test boot: {running.log_tail(3)!r}",
                    time.time(),
                )
            took = time.monotonic() - start
            return AccelChoice(
                Accel.KVM, f"KVM test boot reached init in {took:.1f} s", time.time()
            )
        finally:
            if proc is not None:
                proc.terminate(grace=0.5)
            qmp.close()
