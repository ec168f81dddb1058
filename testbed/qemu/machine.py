"""The machine: a QEMU guest as a context manager that always cleans up.

::

    with Machine(load_machine("default"), stock_kernel(), run_dir) as vm:
        vm.ssh.run_check("lspci -n")
        unplug(vm, "gpu-exporter")

``__enter__`` boots the guest up to a working SSH connection (or raises with the console tail
and QEMU's own words); ``__exit__`` -- on success, on an exception, on Ctrl-C -- collects the
guest's dmesg when it can, asks QEMU to quit, kills its process group if it does not, and
removes the private folder and the BAR backing files. Should the orchestrator die before that,
the reaper (:mod:`testbed.qemu.reaper`) does the killing and removing.

The run folder (``run_dir``) receives the artifacts: ``qemu-cmdline.txt``, ``console.log``,
``qmp.log``, ``qemu-stderr.log``, ``dmesg.txt``, ``kernel.json``, ``accel.txt``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from testbed.config.schema import Accel
from testbed.deadline import Deadline, wait_for
from testbed.devices.registry import Machine as MachineDef
from testbed.errors import (
    DeadlineExceeded,
    GuestError,
    GuestPanic,
    GuestUnreachable,
    LaunchError,
    MachineDied,
    TestbedError,
)
from testbed.guest import console
from testbed.guest.console import MarkerWatch, Problem
from testbed.guest.initramfs import GuestFile, ImageSpec, assemble, build_base
from testbed.kernel.image import Kernel
from testbed.qemu import accel as accel_mod
from testbed.qemu import cmdline
from testbed.qemu.process import QemuProcess, Reaper, find_qemu, new_reaped_dir

if TYPE_CHECKING:
    from testbed.guest.execout import Exited, Output
    from testbed.guest.keys import KeyPair
    from testbed.guest.ssh import SSHShell
    from testbed.qemu.qmp import QMP
    from testbed.qemu.snapshot import Saved

log = logging.getLogger(__name__)

SSH_READY_MARKER = "testbed-guest: sshd ready"
READY_MARKER = "testbed-guest: ready"
INSMOD_FAILED = "testbed-guest: insmod"
#: the driver core's words when a driver matched a device and its probe failed
#: (``call_driver_probe`` in drivers/base/dd.c, Linux 6.1)
PROBE_FAILED = re.compile(r"\S+: probe of \S+ failed with error -?\d+")
INIT_MARKER = accel_mod.INIT_MARKER
#: How long a boot may take, to the guest's "ready" line (``--boot-timeout``).
BOOT_TIMEOUT = 180.0
_BANNER_RE = re.compile(r"\] Linux version (\S+) ")
_USERNET_RE = re.compile(r"HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+10\.0\.2\.15\s+22\b")


class Machine:
    """One guest: QEMU + QMP + SSH, booted on enter, torn down on exit."""

    def __init__(
        self,
        machine: MachineDef,
        kernel: Kernel,
        run_dir: Path,
        *,
        accel: Accel | None = None,
        boot_timeout: float = BOOT_TIMEOUT,
        kernel_args: Sequence[str] = (),
        guest_modules: Sequence[Path] = (),
        guest_files: Sequence[GuestFile] = (),
        qemu: str | None = None,
        qemu_args: Sequence[str] = (),
        collect_dmesg: bool = True,
        restore: Saved | None = None,
        exec_command: str | None = None,
    ) -> None:
        self.definition = machine
        self.spec = machine.spec
        self.kernel = kernel
        self.run_dir = run_dir
        self.requested_accel = accel or machine.spec.accel
        self.boot_timeout = boot_timeout
        self.kernel_args = tuple(kernel_args)
        self.image = ImageSpec(
            kernel=kernel, extra_modules=tuple(guest_modules), extra_files=tuple(guest_files)
        )
        self.qemu_binary = qemu or find_qemu()
        self.qemu_args = tuple(qemu_args)  #: appended to QEMU's command line (experiments)
        self.accel: accel_mod.AccelChoice | None = None
        self.argv: list[str] = []
        self.private_dir: Path | None = None
        self.process: QemuProcess | None = None
        self._qmp: QMP | None = None
        self._ssh: SSHShell | None = None
        self.ssh_port: int | None = None
        self.timings: dict[str, float] = {}
        self._hotplug_seq = 0
        #: the memory backend each host-backed device uses now (re-plugs get new ones)
        self.memdevs: dict[str, str] = {}
        self.memdev_generation: dict[str, int] = {}
        self._down = False
        self._base: Path | None = None
        self._reaper = Reaper.get()
        self.client_key: KeyPair | None = None
        self.host_key: KeyPair | None = None
        #: fetch the guest's dmesg into ``run_dir`` on shutdown (one SSH command more)
        self.collect_dmesg = collect_dmesg
        #: resume this saved guest instead of booting (:mod:`testbed.qemu.snapshot`)
        self.restore = restore
        #: PCI functions whose config space a restore wrote back (QEMU did not migrate them)
        self.replayed_config: list[str] = []
        #: ``testbed exec``'s command: the guest runs it once booted and sends its output
        #: over the exec port (:meth:`run_exec`); no sshd, no SSH connection
        self.exec_command = exec_command
        if exec_command is not None:  # no sshd, no NIC: a smaller image, fewer modules
            self.image = dataclasses.replace(self.image, sshd=False, net_modules=())
        self._boot_deadline: Deadline | None = None

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Machine:
        try:
            self.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # -- accessors -------------------------------------------------------------------------

    @property
    def qmp(self) -> QMP:
        if self._qmp is None:
            if self.exec_command is not None:
                raise MachineDied("a testbed exec machine has no QMP monitor")
            raise MachineDied("the machine is not running")
        return self._qmp

    @property
    def ssh(self) -> SSHShell:
        if self._ssh is None:
            raise GuestUnreachable("the guest has no SSH connection (not booted, or shut down)")
        return self._ssh

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def backing_file(self, device_id: str) -> Path:
        """The host file behind ``device_id``'s BAR (what the guest sees through BAR2)."""
        return cmdline.backing_file(self.run_dir, self.spec.device(device_id))

    def base_initramfs(self) -> Path:
        """The cached initramfs this machine boots (before its per-run keys are appended)."""
        from testbed.guest.tools import standard_tools

        if self._base is None:
            self.image = dataclasses.replace(
                self.image, extra_files=(*standard_tools(), *self.image.extra_files)
            )
            self._base = build_base(self.image)
        return self._base

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- start -----------------------------------------------------------------------------

    @property
    def exec_output(self) -> Path:
        """The file QEMU writes the guest's exec port to (``exec_command`` machines)."""
        return self.run_dir / "exec-output.bin"

    def start(self) -> None:
        t0 = time.monotonic()
        self.timings["start"] = t0  # monotonic time stamps, for ``testbed bench``'s phases
        deadline = Deadline(self.boot_timeout, f"booting machine {self.spec.name!r}")
        self._boot_deadline = deadline
        # The run folder holds what an untrusted kernel wrote (console, BAR contents): ours
        # only. QEMU would create the BAR files 0644; created here first, they stay 0600.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        self.private_dir = new_reaped_dir("p2p-testbed-")  # mode 0700
        for dev in self.spec.devices:
            if cmdline.backing_size(self.definition, dev) is not None:
                path = cmdline.backing_file(self.run_dir, dev)
                path.unlink(missing_ok=True)
                self._reaper.remove_on_exit(path)
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

        (self.run_dir / "kernel.json").write_text(self.kernel.manifest())
        if self.restore is not None:
            self._resume(self.restore, deadline, t0)
            return
        base = self.base_initramfs()
        self.accel = accel_mod.choose(
            self.requested_accel, self.qemu_binary, self.kernel.image, base
        )
        (self.run_dir / "accel.txt").write_text(self.accel.describe() + "\n")

        if self.exec_command is not None:
            # no keys: without a host key the guest starts no sshd (rcS), and runs the command
            from testbed.guest.execout import COMMAND_FILE

            overlay = {COMMAND_FILE: (self.exec_command.encode(), 0o600)}
            dirs = {"/root": 0o700}
        else:
            from testbed.guest import keys  # cryptography: only a machine with sshd needs it

            client = keys.client_key(self.private_dir)
            host = keys.guest_host_key(self.private_dir)
            #: the guest trusts this client key and serves this host key (a restored snapshot
            #: too)
            self.client_key, self.host_key = client, host
            overlay = {
                "/etc/dropbear/host_key": (host.private.read_bytes(), 0o600),
                "/root/.ssh/authorized_keys": (client.public.encode() + b"\n", 0o600),
            }
            dirs = {"/root": 0o700, "/root/.ssh": 0o700, "/etc/dropbear": 0o700}
        initrd = assemble(base, overlay, self.private_dir / "initrd.cpio", dirs=dirs)
        launch = cmdline.Launch(
            qemu=self.qemu_binary,
            accel=self.accel.accel,
            kernel=self.kernel.image,
            initrd=initrd,
            console_log=self.console_log,
            # exec: no monitor (asyncio and the QMP client cost ~30 ms before QEMU starts)
            qmp_socket=None if self.exec_command is not None else self.private_dir / "qmp.sock",
            backing_dir=self.run_dir,
            kernel_args=self.kernel_args,
            name=f"testbed-{self.spec.name}",
            extra_args=self.qemu_args,
            exec_output=self.exec_output if self.exec_command is not None else None,
        )
        self.argv = cmdline.build_argv(self.definition, launch)
        (self.run_dir / "qemu-cmdline.txt").write_text(cmdline.shell_line(self.argv) + "\n")
        self.console_log.unlink(missing_ok=True)

        if launch.qmp_socket is None:
            self.timings["qemu_spawn"] = time.monotonic()
            self.process = QemuProcess(self.argv, self.run_dir / "qemu-stderr.log")
            return  # the guest boots and runs the command: run_exec() follows it
        from testbed.qemu.qmp import QMP

        self._qmp = QMP(self.run_dir / "qmp.log", name=self.spec.name)
        self._qmp.listen(launch.qmp_socket)
        t_spawn = self.timings["qemu_spawn"] = time.monotonic()
        self.process = QemuProcess(self.argv, self.run_dir / "qemu-stderr.log")
        proc = self.process
        try:
            self._qmp.accept(deadline.sub(30, "QEMU start-up"), self.alive)
        except TestbedError as exc:
            raise proc.launch_error(f"QEMU did not start: {exc}") from exc
        self.timings["qmp_ready"] = time.monotonic()
        try:
            self.ssh_port = self._forwarded_port()
        except MachineDied:
            proc.wait(2)  # QEMU went away under the monitor: say why if the console knows
            self.check_alive()
            raise
        # The SSH client (paramiko, ~0.1 s to import) loads here, while the guest boots, rather
        # than before QEMU starts: every command pays for what lies before the spawn.
        from testbed.guest.ssh import SSHShell

        self._wait_console(SSH_READY_MARKER, deadline)
        self.timings["sshd_seen"] = time.monotonic()
        self.timings["sshd_ready_s"] = self.timings["sshd_seen"] - t_spawn
        self._ssh = SSHShell(self.ssh_port, client.private, host.public)
        (self.private_dir / "known_hosts").write_text(self._ssh.known_hosts_line())
        self._ssh.watchdog = self.check_alive
        try:
            self._ssh.connect(deadline)
        except GuestUnreachable as exc:
            self.check_alive()
            raise GuestUnreachable(f"{exc}\n{self._console_tail()}") from exc
        self.timings["ssh_connected"] = time.monotonic()
        release = self._ssh.run_check("uname -r", timeout=deadline.cap(30)).stdout.strip()
        self.timings["boot_to_ssh_s"] = time.monotonic() - t0
        self._wait_console(READY_MARKER, deadline)
        self.timings["ready_s"] = time.monotonic() - t0
        lines = self.console_text().splitlines()
        self._check_modules_loaded(lines)
        self._check_drivers_bound(lines)
        if release != self.kernel.release:
            raise TestbedError(
                f"the guest runs kernel {release!r}, expected {self.kernel.release!r}"
            )
        log.info(
            "machine %s up in %.1f s (%s), ssh port %d",
            self.spec.name,
            self.timings["boot_to_ssh_s"],
            self.accel.accel.value,
            self.ssh_port,
        )

    def _check_modules_loaded(self, console_lines: list[str]) -> None:
        failed = [line for line in console_lines if INSMOD_FAILED in line]
        if failed:
            raise GuestError(
                "a guest module failed to load at boot:\n  "
                + "\n  ".join(failed)
                + f"\n{self._console_tail()}"
            )

    def _check_release(self, console_lines: list[str]) -> None:
        """Without SSH to ask ``uname -r``: the kernel's banner on the console names it."""
        for line in console_lines[:50]:
            match = _BANNER_RE.search(line)
            if match:
                if match.group(1) != self.kernel.release:
                    raise TestbedError(
                        f"the guest runs kernel {match.group(1)!r}, expected "
                        f"{self.kernel.release!r}"
                    )
                return

    # -- exec ------------------------------------------------------------------------------

    def run_exec(self, on_output: Callable[[Output], object], timeout: float) -> Exited:
        """Follow the command of an ``exec_command`` machine to its end: hand each chunk of
        its output to ``on_output`` as it arrives, return how it ended.

        The boot (to the guest's "command started" frame) is bounded by the boot timeout, the
        command by ``timeout``. A guest that panics, a QEMU that exits, a module that did not
        load, a malformed stream or a command that outlives ``timeout`` raise (output that
        arrived before is handed over first).
        """
        from testbed.guest.execout import ExecStreamParser, Exited, Started

        if self.exec_command is None or self._boot_deadline is None:
            raise TestbedError("run_exec: the machine was not started with exec_command")
        parser = ExecStreamParser()
        reader = _Tail(self.exec_output)
        init = MarkerWatch(self.console_log, INIT_MARKER)  # a time stamp for the phases
        boot = self._boot_deadline
        command = Deadline(timeout, "the command")  # restarted when the command starts
        next_check = 0.0
        ended: Exited | None = None

        def pump() -> Exited | None:
            nonlocal command, ended
            for event in parser.feed(reader.read()):
                if isinstance(event, Started):
                    self.timings["command_started"] = time.monotonic()
                    command = Deadline(timeout, "the command")
                    lines = self.console_text().splitlines()
                    self._check_modules_loaded(lines)
                    self._check_release(lines)
                elif isinstance(event, Exited):
                    self.timings["command_exited"] = time.monotonic()
                    ended = event
                else:
                    on_output(event)
            return ended

        def done() -> Exited | None:
            nonlocal next_check
            if "init_seen" not in self.timings and init.seen():
                self.timings["init_seen"] = time.monotonic()
            if pump() is not None:
                return ended
            if parser.started:
                command.check("running the command in the guest")
            else:
                boot.check(waiting)
            if time.monotonic() >= next_check or (
                self.process is not None and self.process.poll() is not None
            ):
                next_check = time.monotonic() + 0.1
                try:
                    self.check_alive()
                except (MachineDied, GuestPanic):
                    if pump() is not None:  # the guest wrote its end and powered off
                        return ended
                    raise
            return None

        waiting = "waiting for the guest to boot and start the command"
        try:
            return wait_for(
                done,
                Deadline(boot.remaining() + timeout + 1, "testbed exec"),  # a backstop
                doing=waiting,
                interval=0.01,
                max_interval=0.01,
            )
        except DeadlineExceeded as exc:
            if parser.started:
                raise DeadlineExceeded(
                    f"the command did not finish within {timeout:g} s in the guest "
                    f"(--timeout): {self.exec_command}"
                ) from exc
            raise GuestUnreachable(
                f"the guest did not start the command within {boot.seconds:g} s "
                f"(--boot-timeout)\n{self._console_tail()}"
            ) from exc
        finally:
            reader.close()

    def _resume(self, saved: Saved, deadline: Deadline, t0: float) -> None:
        """Start a fresh QEMU on ``saved``'s state (see :mod:`testbed.qemu.snapshot`): its
        command line with this machine's folders, its BAR contents, its keys."""
        assert self.private_dir is not None
        for name, copy in saved.bars:  # into the 0600 files created above
            shutil.copyfile(saved.folder / copy, self.run_dir / name)
        self.accel = saved.accel
        (self.run_dir / "accel.txt").write_text(self.accel.describe() + "\n")
        self.client_key, self.host_key = saved.client_key, saved.host_key
        shutil.copyfile(saved.folder / "initrd.cpio", self.private_dir / "initrd.cpio")
        shutil.copyfile(saved.folder / "console.log", self.run_dir / "console-before-save.log")
        old_run, old_private = (str(p) for p in saved.old_dirs)
        self.argv = [
            a.replace(old_private, str(self.private_dir)).replace(old_run, str(self.run_dir))
            for a in saved.argv
        ]
        self.argv += ["-incoming", f"exec:cat {shlex.quote(str(saved.state))}"]
        (self.run_dir / "qemu-cmdline.txt").write_text(cmdline.shell_line(self.argv) + "\n")
        self.console_log.unlink(missing_ok=True)
        from testbed.qemu.qmp import QMP

        self._qmp = qmp = QMP(self.run_dir / "qmp.log", name=self.spec.name)
        qmp.listen(self.private_dir / "qmp.sock")
        self.process = proc = QemuProcess(self.argv, self.run_dir / "qemu-stderr.log")
        try:
            qmp.accept(deadline.sub(30, "QEMU start-up"), self.alive)
        except TestbedError as exc:
            raise proc.launch_error(f"QEMU did not start: {exc}") from exc

        def loaded() -> bool:
            status = str(qmp.execute("query-status").get("status"))
            if status in ("inmigrate", "prelaunch"):
                return False
            if status != "paused":
                raise proc.launch_error(f"QEMU is {status!r} after loading {saved.state}")
            return True

        wait_for(loaded, deadline, doing=f"QEMU to load {saved.state}")
        qmp.execute("cont")
        self.ssh_port = self._forwarded_port()
        from testbed.guest.ssh import SSHShell

        self._ssh = SSHShell(self.ssh_port, saved.client_key.private, saved.host_key.public)
        (self.private_dir / "known_hosts").write_text(self._ssh.known_hosts_line())
        self._ssh.watchdog = self.check_alive
        self._ssh.connect(deadline)
        # the guest's clock went on from the saved moment: bring it to the host's; and devices
        # QEMU does not migrate (edu) came back at reset: give them their config space back
        from testbed.qemu.snapshot import replay_lost_config

        self.replayed_config = replay_lost_config(self._ssh, saved)
        self.timings["boot_to_ssh_s"] = self.timings["ready_s"] = time.monotonic() - t0
        log.info(
            "machine %s restored in %.1f s, ssh port %d",
            self.spec.name,
            self.timings["boot_to_ssh_s"],
            self.ssh_port,
        )

    def _check_drivers_bound(self, console_lines: list[str]) -> None:
        """Raise if a guest driver loaded but did not take its device.

        A probe that fails (a BAR the guest could not assign, say) leaves the machine as
        useless as a module that did not load. The driver core prints only some failures
        (``probe of ... failed with error``; -ENODEV and -ENXIO are debug messages), so the
        binding itself is checked in sysfs: every device whose type names a guest module
        that this machine loads must be bound to that driver.
        """
        from testbed.guest import pci

        loaded = {m.name.removesuffix(".ko").replace("-", "_") for m in self.image.extra_modules}
        expected = {
            self.definition.type_of(dev).pci_id: module
            for dev in self.spec.devices
            if (module := self.definition.type_of(dev).guest_module) in loaded
        }
        printed = [line.strip() for line in console_lines if PROBE_FAILED.search(line)]
        if not expected and not printed:
            return
        unbound = [
            f"{dev.address} [{dev.pci_id}] has driver {dev.driver or 'none'}, expected "
            f"{expected[dev.pci_id]}"
            for dev in pci.list_devices(self.ssh)
            if dev.pci_id in expected and dev.driver != expected[dev.pci_id]
        ]
        if unbound or printed:
            raise GuestError(
                "a guest driver failed to probe its device at boot:\n  "
                + "\n  ".join(unbound + printed)
                + f"\n{self._console_tail()}"
            )

    def _forwarded_port(self) -> int:
        text = self.qmp.hmp("info usernet")
        match = _USERNET_RE.search(text)
        if not match:
            raise LaunchError(
                "cannot find the forwarded SSH port in 'info usernet'",
                argv=self.argv,
                exitcode=None,
                log_tail=text,
            )
        return int(match.group(1))

    def _console_tail(self, lines: int = 25) -> str:
        tail = self.console_text().splitlines()[-lines:]
        return f"last {len(tail)} console lines ({self.console_log}):\n  " + "\n  ".join(tail)

    def _wait_console(self, marker: str, deadline: Deadline) -> None:
        watch = MarkerWatch(self.console_log, marker)
        # The console is looked at every 10 ms (the marker's latency is boot time); the full
        # health check (QMP events) every 0.1 s: polling it as often costs CPU the guest,
        # running under TCG on a loaded host, would rather have.
        next_check = 0.0

        def seen() -> bool:
            nonlocal next_check
            if time.monotonic() >= next_check:
                self.check_alive()
                next_check = time.monotonic() + 0.1
            elif self.process is not None and self.process.poll() is not None:
                self.check_alive()  # QEMU exited: say so now
            return watch.seen()

        try:
            wait_for(
                seen,
                deadline,
                doing=f"waiting for {marker!r} on the console",
                interval=0.01,
                max_interval=0.01,
            )
        except TestbedError as exc:
            if isinstance(exc, GuestPanic | MachineDied):
                raise
            raise GuestUnreachable(
                f"the guest did not print {marker!r} within {deadline.seconds:g} s "
                f"(accelerator {self.accel.describe() if self.accel else '?'})\n"
                + self._console_tail()
            ) from exc

    # -- health ----------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise if QEMU exited or the guest panicked (a GUEST_PANICKED event)."""
        if self._qmp is not None and not self._down and self.alive():
            self._qmp.poll_events()
        if self.panicked():
            raise GuestPanic("the guest kernel panicked (GUEST_PANICKED)\n" + self._panic_excerpt())
        if self.process is not None and self.process.poll() is not None and not self._down:
            early = console.check(self.console_text()).of(Problem.PANIC)
            if early:
                # panic=-1 + reboot=shutdown: a panic before pvpanic was loaded ends QEMU; so
                # does any panic on an exec machine (panic=exit-failure, no QMP to report it)
                when = "" if self._qmp is None else " before the pvpanic driver was loaded"
                raise GuestPanic(
                    f"the guest kernel panicked{when} (QEMU exited with code "
                    f"{self.process.poll()}); console ({self.console_log}):\n  "
                    + "\n  ".join(early[0].excerpt)
                )
            raise MachineDied(
                f"QEMU exited with code {self.process.poll()}\n"
                f"  QEMU said: {self.process.log_tail(5)}\n{self._console_tail()}"
            )

    def panicked(self) -> bool:
        """Whether QEMU reported GUEST_PANICKED (the guest is then paused, not running)."""
        return self._qmp is not None and any(
            e.get("event") == "GUEST_PANICKED" for e in self._qmp.events
        )

    def _panic_excerpt(self) -> str:
        lines = self.console_text().splitlines()
        for i, line in enumerate(lines):
            if "Kernel panic - not syncing" in line or "Oops" in line or "BUG:" in line:
                return "\n".join(lines[max(0, i - 5) : i + 40])
        return self._console_tail()

    # -- stop ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop everything and remove private files. Idempotent; never raises on cleanup."""
        if self._down:
            return
        self._down = True
        if self._ssh is not None:
            if self.collect_dmesg:
                self._collect_dmesg(self._ssh)
            self._ssh.close()
            self._ssh = None
        if self.process is not None:
            if self._qmp is not None and self.process.poll() is None:
                try:
                    self._qmp.execute("quit", timeout=3)
                except (TestbedError, OSError) as exc:
                    log.debug("QMP quit: %s", exc)
                self.process.wait(3)
            self.process.terminate(grace=2)
        if self._qmp is not None:
            self._qmp.close()
        for dev in self.spec.devices:
            path = cmdline.backing_file(self.run_dir, dev)
            if cmdline.backing_size(self.definition, dev) is not None:
                path.unlink(missing_ok=True)
                self._reaper.forget_path(path)
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self._reaper.forget_path(self.private_dir)

    def _collect_dmesg(self, ssh: SSHShell) -> None:
        if self._qmp is not None and self.alive():
            try:
                self._qmp.poll_events()
            except (TestbedError, OSError) as exc:
                log.debug("no QMP events: %s", exc)
        if self.panicked():
            log.debug("no dmesg collected: the guest panicked (see the console log)")
            return
        try:
            dmesg = ssh.run("dmesg", timeout=10).stdout
            (self.run_dir / "dmesg.txt").write_text(dmesg)
        except (TestbedError, OSError) as exc:
            log.debug("no dmesg collected: %s", exc)

    def info(self) -> dict[str, Any]:
        """What a developer needs to reach the running guest."""
        assert self.private_dir is not None
        return {
            "ssh": self.ssh.ssh_command(self.private_dir / "known_hosts"),
            "qmp_socket": str(self.private_dir / "qmp.sock"),
            "console_log": str(self.console_log),
            "run_dir": str(self.run_dir),
        }


class _Tail:
    """Reads what was appended to a file since the last read (the file may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def read(self, limit: int = 1 << 20) -> bytes:
        if self._file is None:
            try:
                self._file = self.path.open("rb")
            except FileNotFoundError:
                return b""
        return bytes(self._file.read(limit))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
