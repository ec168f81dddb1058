"""Run a scenario's steps against a booted :class:`~testbed.qemu.machine.Machine` and judge it.

::

    with Machine(load_machine(s.machine), kernel, run_dir, **payload.machine_kwargs()) as vm:
        result = Runner(vm).run(s)
        assert result.passed, result.report()

One runner serves one machine for as many runs as stay healthy: each run is judged on the
console lines it caused, its own counters and its own slice of the drivers' timeline, and
:attr:`RunResult.reusable` says whether the guest is back to a clean state (both devices
bound, no app, no live mapping or MR) so a campaign can run the next scenario on it.

A step that fails (a :class:`~testbed.errors.TestbedError` or a failed expectation) ends the
step sequence; the run is then still judged as a whole (:mod:`testbed.scenario.verdict`), and
every app still running is killed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from testbed.config.schema import Hotplug
from testbed.deadline import Deadline, wait_for
from testbed.devices import hotplug
from testbed.errors import GuestCommandError, TestbedError, UnplugTimeout
from testbed.guest import console, pci
from testbed.p2p import ctl, debugfs
from testbed.p2p.host import read_bar
from testbed.qemu.machine import READY_MARKER, Machine
from testbed.scenario import loader, verdict
from testbed.scenario.apps import AppProcess
from testbed.scenario.model import (
    Aer,
    App,
    Evict,
    Expect,
    Fault,
    FaultKind,
    Finish,
    Go,
    Kill,
    Module,
    Outcome,
    P2pctl,
    Params,
    Plug,
    Reset,
    Scenario,
    Step,
    Unplug,
    Wait,
    importer_refs,
    parse_check,
)

log = logging.getLogger(__name__)

MODULES = ("p2p_exporter", "p2p_importer")
EXPORTER_TYPE = "gpu-exporter"
IMPORTER_TYPE = loader.IMPORTER_TYPE


class StepFailed(TestbedError):
    """An expectation of a step did not hold."""


#: Where a kernel with CONFIG_FAULT_INJECTION_DEBUG_FS puts each capability's knobs.
FAULT_DEBUGFS = "/sys/kernel/debug"


def fault_unavailable(kind: FaultKind, release: str) -> str:
    """The error for a scenario that asks for ``kind`` on a kernel without it."""
    return (
        f"fault {kind.value}: the kernel under test ({release}) has no "
        f"{FAULT_DEBUGFS}/{kind.value}: it needs CONFIG_FAULT_INJECTION, "
        f"CONFIG_{kind.value.upper()} and CONFIG_FAULT_INJECTION_DEBUG_FS. Run with "
        "--kernel faults (guest-kernel-config/faults.config: 'testbed kernel build faults') "
        "or a kernel built with guest-kernel-config/debug.config"
    )


def fault_writes(action: Fault) -> dict[str, str]:
    """What to write into ``/sys/kernel/debug/<kind>/`` to arm (or disarm) ``action``.

    Always with ``task-filter``: only tasks whose ``/proc/<pid>/make-it-fail`` is 1 (p2pctl,
    for a command marked ``fail=1``) see failures. ``ignore-gfp-wait`` off, so sleeping
    allocations (GFP_KERNEL, all of the drivers') are candidates too; for pages also
    highmem and order 0. ``verbose`` 1: one line per injected failure, no stack dump.
    """
    if action.disarm:
        return {"probability": "0", "times": "0"}
    out = {
        "task-filter": "Y",
        "ignore-gfp-wait": "N",
        "verbose": "1",
        "space": str(action.space),
        "interval": str(action.interval),
        "times": str(action.times),
        "probability": str(action.probability),
    }
    if action.kind is FaultKind.FAIL_PAGE_ALLOC:
        out = {"ignore-gfp-highmem": "N", "min-order": "0", **out}
    return out


@dataclass(frozen=True)
class UnplugRecord:
    device: str
    bound: float
    expected: Outcome
    seconds: float
    outcome: Outcome


@dataclass(frozen=True)
class RunResult:
    """What one run did and how it was judged."""

    scenario: Scenario
    failures: tuple[str, ...]
    seconds: float
    steps_done: int
    timings: dict[str, float] = field(default_factory=dict)
    reusable: bool = False
    log: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    def report(self) -> str:
        head = f"scenario {self.scenario.name}: {'PASS' if self.passed else 'FAIL'}"
        head += f" ({self.seconds:.1f} s, {self.steps_done}/{len(self.scenario.steps)} steps)"
        return "\n".join([head, *(f"  - {f}" for f in self.failures)])


class Runner:
    """Runs scenarios on one machine (see the module docstring)."""

    def __init__(self, vm: Machine, *, say: Callable[[str], None] | None = None) -> None:
        self.vm = vm
        self.say = say or log.info
        self.tail = console.ConsoleTail(vm.console_log)  # the first run also answers for boot

    # -- helpers ---------------------------------------------------------------------------

    def _device_pci_id(self, device_id: str) -> str:
        spec = self.vm.spec.device(device_id)
        return self.vm.definition.type_of(spec).pci_id

    def _is_exporter(self, device_id: str) -> bool:
        return self.vm.spec.device(device_id).type == EXPORTER_TYPE

    def _exporter_ids(self) -> list[str]:
        return [d.id for d in self.vm.spec.devices if d.type == EXPORTER_TYPE]

    def _importer_ids(self) -> list[str]:
        return [d.id for d in self.vm.spec.devices if d.type == IMPORTER_TYPE]

    def _address(self, device_id: str) -> str | None:
        """The guest's PCI address of ``device_id`` now (QMP), None while it is unplugged."""
        return hotplug.guest_address(self.vm, device_id)

    def _importers(self, commands: tuple[str, ...], explicit: str | None) -> tuple[str, ...]:
        """``-i NAME=PATH`` specs for p2pctl: the machine's first importer (the default), then
        every importer ``commands`` name with ``imp=``. Nothing on a one-importer machine whose
        commands name none (p2pctl's default node), or when the app gave its own ``importer``.

        Each device's node is found through its PCI address (``misc/p2p-importerN`` under it in
        sysfs): probe order, not the machine file, numbers the nodes. A device unplugged now
        gets a path that does not exist, so a command that uses it fails ``ENOENT``.
        """
        named = importer_refs(commands)
        ids = self._importer_ids()
        if explicit is not None or not ids or (len(ids) == 1 and not named):
            return ()
        specs = []
        for device_id in dict.fromkeys([ids[0], *named]):
            node = f"/dev/absent-{device_id}"
            address = self._address(device_id)
            if address is not None:
                listing = self.vm.ssh.run(f"ls /sys/bus/pci/devices/{address}/misc").stdout
                found = [w for w in listing.split() if w.startswith("p2p-importer")]
                if found:
                    node = f"/dev/{found[0]}"
            specs.append(f"{device_id}={node}")
        self._note(f"importers: {' '.join(specs)}")
        return tuple(specs)

    def _bar_hash(self, device_id: str) -> str:
        return hashlib.sha256(self.vm.backing_file(device_id).read_bytes()).hexdigest()

    # -- one run ---------------------------------------------------------------------------

    def run(self, scenario: Scenario) -> RunResult:
        t0 = time.monotonic()
        self.apps: dict[str, AppProcess] = {}
        self.unplugs: list[UnplugRecord] = []
        self.failures: list[str] = []
        self.lines: list[str] = []
        self.timings: dict[str, float] = {}
        self.reset_done = False
        #: exporter id -> BAR file hash taken when its unplug completed
        self.bar_after_unplug: dict[str, str] = {}
        self._current = scenario
        self.qmp_since = len(self.vm.qmp.events)  # a wait for a QMP event looks from here
        shell = self.vm.ssh
        before_refs = verdict.module_refs(shell.run_check("cat /proc/modules").stdout, MODULES)
        before_slab = verdict.parse_meminfo(shell.run_check("cat /proc/meminfo").stdout)
        before_timeouts = debugfs.exporter_stats(shell).get("unplug_timeouts", 0)
        run_start_ns = ctl.p2pctl(shell, "mark name=run").op("mark").t_ns
        self.saved_params: dict[str, str] = {}  # what the run changed, to put back
        self.armed: dict[FaultKind, Fault] = {}  # fault injection the run armed
        self._set_params(scenario.params)

        done = 0
        for i, step in enumerate(scenario.steps):
            label = f"step {i + 1} ({step.kind})"
            t = time.monotonic()
            try:
                self.vm.check_alive()
                self._step(step)
            except (TestbedError, AssertionError) as exc:
                self.failures.append(f"{label}: {exc}")
                self._note(f"{label}: FAILED: {exc}")
                break
            self._note(f"{label}: ok in {time.monotonic() - t:.2f} s")
            done += 1

        try:
            self._finish_apps()
            if not self.reset_done and not self.vm.panicked():
                self._disarm_faults()
            self._judge(scenario, run_start_ns, before_refs, before_slab, before_timeouts, done)
        except (TestbedError, AssertionError) as exc:
            self.failures.append(f"judging the run: {exc}")
        reusable = False
        if not self.failures:
            try:
                self._restore(self.saved_params)
                reusable = self._clean()
            except (TestbedError, AssertionError) as exc:
                self._note(f"guest not reusable: {exc}")
        return RunResult(
            scenario,
            tuple(self.failures),
            time.monotonic() - t0,
            done,
            dict(self.timings),
            reusable,
            tuple(self.lines),
        )

    def _note(self, line: str) -> None:
        self.lines.append(line)
        log.debug("%s", line)

    # -- steps -----------------------------------------------------------------------------

    def _step(self, step: Step) -> None:
        action = step.action
        shell = self.vm.ssh
        if isinstance(action, App):
            imps = self._importers((*action.setup, *action.then), action.importer)
            proc = AppProcess(shell, action, imps)
            proc.start(Deadline(60, f"starting app {action.name}"))
            self.apps[action.name] = proc
        elif isinstance(action, Go):
            self.apps[action.app].go()
        elif isinstance(action, Finish):
            self._finish(action)
        elif isinstance(action, Kill):
            self.apps[action.app].kill(action.signal)
        elif isinstance(action, P2pctl):
            imps = self._importers(action.commands, None)
            run = ctl.p2pctl(shell, *action.commands, importers=imps, timeout=action.timeout)
            self._note(str(run))
            if action.expect_ok:
                run.expect_ok()
        elif isinstance(action, Evict):
            self._evict(action)
        elif isinstance(action, Unplug):
            self._unplug(action)
        elif isinstance(action, Plug):
            self._plug(action)
        elif isinstance(action, Reset):
            self._reset(action)
        elif isinstance(action, Aer):
            port = self.vm.spec.device(action.device).port_id
            reply = self.vm.qmp.hmp(f"pcie_aer_inject_error {port} {action.error}")
            if reply.strip() and not reply.startswith("OK"):  # "OK id: rp-... root bus: ..."
                raise StepFailed(f"pcie_aer_inject_error {port} {action.error}: {reply.strip()}")
        elif isinstance(action, Wait):
            self._wait(action)
        elif isinstance(action, Params):
            self._set_params(action.values)
        elif isinstance(action, Module):
            self._module(action)
        elif isinstance(action, Fault):
            self._fault(action)
        elif isinstance(action, Expect):
            self._expect(action)
        else:  # pragma: no cover - the model has no other kinds
            raise AssertionError(f"unknown step {step.kind}")

    def _finish(self, action: Finish) -> None:
        proc = self.apps[action.app]
        run = proc.finish(Deadline(action.timeout, f"app {action.app}"))
        self._note(str(run))
        if action.expect_ok:
            run.expect_ok()
        bad = verdict.unexpected_errors(action.app, proc.paired(), action.allow_errors)
        if bad:
            raise StepFailed("; ".join(bad))

    def _finish_apps(self) -> None:
        """End every app still running: give each 20 s, then kill it."""
        for name, proc in self.apps.items():
            if proc.final is not None:
                continue
            if not proc.exited():
                if proc.app.hold:
                    proc.go()
                try:
                    proc.finish(Deadline(20, f"app {name}"))
                    continue
                except TestbedError:
                    self.failures.append(f"app {name} did not exit within 20 s; killed")
                    self.vm.ssh.run(f"kill -KILL $(cat {proc.pidfile})")
            proc.finish(Deadline(10, f"app {name} after SIGKILL"))

    def _evict(self, action: Evict) -> None:
        handle = action.handle
        proc = self.apps[action.app] if action.app is not None else None
        if proc is not None:
            handle = proc.object_handle()
            if handle is None:
                raise StepFailed(f"app {action.app} has no object to evict (yet)")
        try:
            debugfs.evict(self.vm.ssh, int(handle or 0))
        except GuestCommandError as exc:
            # The app may have exited (its object went with it): a timing, not a failure.
            if proc is None or "No such file" not in exc.stderr or not proc.exited():
                raise
            self._note(f"evict: app {action.app} had already exited; its object is gone")

    def _unplug(self, action: Unplug) -> None:
        path = self.vm.spec.hotplug
        bound = action.bound
        if bound is None:
            v = self._current.verdict
            bound = v.unplug_bound_native if path is Hotplug.NATIVE else v.unplug_bound_acpi
        t = time.monotonic()
        timeout = bound if action.expect is Outcome.TIMES_OUT else max(bound, 5.0) * 2
        try:
            result = hotplug.unplug(self.vm, action.device, timeout=timeout)
            outcome, seconds = Outcome.COMPLETES, result.seconds
        except UnplugTimeout:
            outcome, seconds = Outcome.TIMES_OUT, time.monotonic() - t
        self.unplugs.append(UnplugRecord(action.device, bound, action.expect, seconds, outcome))
        self.timings[f"unplug_{action.device}_s"] = round(seconds, 3)
        if outcome is Outcome.COMPLETES and self._is_exporter(action.device):
            self.bar_after_unplug[action.device] = self._bar_hash(action.device)
        if outcome is not action.expect:
            raise StepFailed(
                f"unplug of {action.device} on the {path.value} path: expected it to "
                f"{action.expect.value.replace('-', ' ')} within {bound:g} s, it "
                f"{outcome.value.replace('-', ' ')} ({seconds:.2f} s)"
            )
        if seconds > bound + (0.5 if outcome is Outcome.TIMES_OUT else 0.0):
            raise StepFailed(
                f"unplug of {action.device} took {seconds:.2f} s, over its bound of {bound:g} s "
                f"on the {path.value} path"
            )

    def _plug(self, action: Plug) -> None:
        self._check_bar_unchanged(action.device)
        hotplug.plug(self.vm, action.device)
        pci_id = self._device_pci_id(action.device)
        deadline = Deadline(30, f"{action.device} to be bound after the plug")
        # by address: a machine may have two devices of one type, the other one bound all along
        address = self._address(action.device)
        wait_for(
            lambda: any(
                d.driver and address in (None, d.address) for d in pci.find(self.vm.ssh, pci_id)
            ),
            deadline,
            doing=f"waiting for a driver to bind {action.device} ({pci_id} at {address})",
            interval=0.1,
        )

    def _check_bar_unchanged(self, device_id: str) -> None:
        old = self.bar_after_unplug.pop(device_id, None)
        if old is not None and self._bar_hash(device_id) != old:
            self.failures.append(
                f"bytes landed in {device_id}'s BAR file after its unplug completed "
                f"({self.vm.backing_file(device_id)})"
            )

    def _reset(self, action: Reset) -> None:
        deadline = Deadline(action.timeout, "the guest to come back after system_reset")
        before = self.vm.console_text().count(READY_MARKER)
        self.apps.clear()  # their processes died with the guest
        # The testbed boots QEMU with -no-reboot (a guest reboot ends QEMU); for this reset
        # the guest must come back instead, then the usual behaviour returns.
        self.vm.qmp.execute("set-action", {"reboot": "reset"})
        self.vm.qmp.execute("system_reset")
        self.vm.ssh.close()

        def booted() -> bool:  # the boot's last marker printed once more
            self.vm.check_alive()
            return self.vm.console_text().count(READY_MARKER) > before

        wait_for(
            booted,
            deadline,
            doing="waiting for the guest to boot again",
            interval=0.05,
        )
        self.vm.qmp.execute("set-action", {"reboot": "shutdown"})
        self.vm.ssh.connect(deadline)
        self.reset_done = True
        self.timings["reset_s"] = round(deadline.elapsed, 3)

    def _wait(self, action: Wait) -> None:
        deadline = Deadline(action.timeout, "a wait step's event")
        if action.app is not None and action.op is not None:
            proc, op = self.apps[action.app], action.op
            wait_for(
                lambda: proc.count(op) >= action.count or (proc.exited() and "ended"),
                deadline,
                doing=f"app {action.app} printing {op} #{action.count}",
                interval=0.01,
                max_interval=0.05,
            )
        if action.guest_event is not None:
            text = action.guest_event
            wait_for(
                lambda: any(e.text.startswith(text) for e in debugfs.events(self.vm.ssh)),
                deadline,
                doing=f"a driver event starting {text!r}",
            )
        if action.qmp_event is not None:
            name = action.qmp_event
            self.vm.qmp.wait_event(
                lambda e: e.get("event") == name,
                deadline,
                since=self.qmp_since,
                alive=self.vm.alive,
            )
        if action.seconds:
            time.sleep(action.seconds)  # the point of the step: a delay the scenario chose

    def _fault(self, action: Fault) -> None:
        folder = f"{FAULT_DEBUGFS}/{action.kind.value}"
        shell = self.vm.ssh
        if not shell.run(f"test -d {folder}").ok:
            raise StepFailed(fault_unavailable(action.kind, self.vm.kernel.release))
        before = self.armed.pop(action.kind, None)
        if before is not None and before.times > 0:  # count what the last arming injected
            left = shell.run_check(f"cat {folder}/times").stdout.strip()
            key = f"{action.kind.value}_injected"
            self.timings[key] = self.timings.get(key, 0) + before.times - int(left)
        shell.run_check(
            "; ".join(f"echo {v} > {folder}/{k}" for k, v in fault_writes(action).items())
        )
        if not action.disarm:
            self.armed[action.kind] = action

    def _disarm_faults(self) -> None:
        """Disarm what the run left armed (``timings`` then say how many failures each
        capability injected under a ``times`` limit)."""
        for kind in list(self.armed):
            self._fault(Fault(kind, disarm=True))

    def _module_file(self, name: str) -> str:
        """The guest's ``<name>.ko``: the testbed's own modules first, then the kernel's."""
        found = self.vm.ssh.run(
            f"ls /lib/modules/testbed/{name}.ko 2>/dev/null || "
            f"find /lib/modules -name {name}.ko 2>/dev/null"
        ).stdout.split()
        if not found:
            raise StepFailed(
                f"module {name}: no {name}.ko in the guest (looked in /lib/modules/testbed and "
                "/lib/modules); the guest has the P2P drivers and the modules its boot needs"
            )
        return found[0]

    def _module(self, action: Module) -> None:
        """Unload and/or load with p2pctl's rmmod/insmod, which report the kernel's errno;
        the first part that fails is the outcome, compared with ``expect``."""
        commands = []
        if action.op in ("unload", "reload"):
            commands.append(f"rmmod name={action.name}")
        if action.op in ("load", "reload"):
            params = ",".join(f"{k}={v}" for k, v in action.params.items())
            file = self._module_file(action.name)
            commands.append(f"insmod file={file}" + (f" params={params}" if params else ""))
        run = ctl.p2pctl(self.vm.ssh, *commands, timeout=60)
        self._note(str(run))
        failed = [s for s in run.steps if not s.ok]
        outcome = (failed[0].error or "E?") if failed else "ok"
        if outcome != action.expect:
            raise StepFailed(
                f"module {action.op} {action.name}: expected {action.expect}, got {outcome}"
                + (f" ({failed[0].get('msg')})" if failed else "")
            )

    def _set_params(self, values: dict[str, str]) -> None:
        """Write module parameters, remembering the values they had before the run."""
        for key in values:
            if key not in self.saved_params:
                module, name = key.split(".", 1)
                path = f"/sys/module/{module}/parameters/{name}"
                self.saved_params[key] = self.vm.ssh.run_check(f"cat {path}").stdout.strip()
        self._write_params(values)

    def _write_params(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            module, name = key.split(".", 1)
            path = f"/sys/module/{module}/parameters/{name}"
            self.vm.ssh.run_check(f"echo {value} > {path}")

    def _counters(self) -> dict[str, int]:
        shell = self.vm.ssh
        out = {f"exporter.{k}": v for k, v in debugfs.exporter_stats(shell).items()}
        out.update({f"importer.{k}": v for k, v in debugfs.importer_stats(shell).items()})
        return out

    def _expect(self, action: Expect) -> None:
        problems = []
        if action.counters:
            counters = self._counters()
            for key, text in action.counters.items():
                op, want = parse_check(text)
                if key not in counters:
                    problems.append(f"no counter {key} (known: {', '.join(sorted(counters))})")
                elif not verdict.compare(op, counters[key], want):
                    problems.append(f"{key} is {counters[key]}, expected {op} {want}")
        for bar in action.bar:
            base = self.apps[bar.app].object_offset()
            if base is None:
                problems.append(f"app {bar.app} created no object")
                continue
            data = read_bar(self.vm, base + bar.offset, bar.length, self._exporter_ids()[0])
            if data != bytes([bar.byte]) * bar.length:
                problems.append(
                    f"BAR bytes at {bar.app}+{bar.offset:#x} ({bar.length} B) are not all "
                    f"{bar.byte:#04x}: {data[:16].hex()}..."
                )
        for device_id, flag in action.present.items():
            address = self._address(device_id)  # two devices of one type: tell them apart
            present = address is not None and any(
                d.address == address for d in pci.find(self.vm.ssh, self._device_pci_id(device_id))
            )
            if present != (flag == "on"):
                problems.append(f"{device_id} is {'present' if present else 'absent'}")
        if action.healthy:
            report = console.check(self.vm.console_log)
            if not report.ok:
                problems.append(report.summary())
        if problems:
            raise StepFailed("; ".join(problems))

    # -- the whole run ---------------------------------------------------------------------

    def _judge(
        self,
        scenario: Scenario,
        run_start_ns: int,
        before_refs: dict[str, int],
        before_slab: dict[str, int],
        before_timeouts: int,
        steps_done: int,
    ) -> None:
        v = scenario.verdict
        health = self.tail.check_new()
        if v.healthy and not health.ok:
            self.failures.append(f"the guest is not healthy: {health.summary()}")
        if self.vm.panicked():
            return
        shell = self.vm.ssh
        events = [e for e in debugfs.events(shell) if e.t_ns >= run_start_ns]
        if v.late_bytes:
            for name, proc in self.apps.items():
                for late in verdict.late_dmas(name, proc.paired(), events):
                    evidence = ""
                    base = proc.object_offset()
                    if base is not None and late.pattern is not None and self._exporter_ids():
                        data = read_bar(
                            self.vm, base + late.offset, late.length, self._exporter_ids()[0]
                        )
                        if data == bytes([late.pattern & 0xFF]) * late.length:
                            evidence = (
                                f"; its {late.length} bytes of {late.pattern:#04x} are in the "
                                "BAR file"
                            )
                    self.failures.append(late.describe() + evidence)
            for device_id in list(self.bar_after_unplug):
                self._check_bar_unchanged(device_id)
        if v.remove_waits:
            self.failures.extend(verdict.unmaps_after_remove(events))
        if self.reset_done:
            self._note("counters, module references and slab not compared: the guest reset")
            return
        timeouts = debugfs.exporter_stats(shell).get("unplug_timeouts", 0) - before_timeouts
        if timeouts > v.unplug_timeouts:
            stale = [
                line.strip()
                for line in self.vm.console_text().splitlines()
                if "did not p2p_unmap" in line
            ]
            self.failures.append(
                f"the exporter's remove gave up waiting for an importer {timeouts} time(s) "
                f"(allowed {v.unplug_timeouts}): an importer kept a mapping of a BAR that was "
                "released" + (f"; {stale[-1]}" if stale else "")
            )
        if v.module_refs:
            after = verdict.module_refs(shell.run_check("cat /proc/modules").stdout, MODULES)
            if after != before_refs:
                self.failures.append(f"module use counts changed: {before_refs} -> {after}")
        after_slab = verdict.parse_meminfo(shell.run_check("cat /proc/meminfo").stdout)
        growth = after_slab.get("Slab", 0) - before_slab.get("Slab", 0)
        self.timings["slab_growth_kib"] = growth / 1024
        if growth > v.slab_growth:
            self.failures.append(
                f"slab grew by {growth >> 10} KiB in this run (bound {v.slab_growth >> 10} KiB)"
            )

    def _restore(self, params: dict[str, str]) -> None:
        """Undo what the steps left behind: module parameters, devices still unplugged."""
        if not self.reset_done:
            self._write_params(params)
        gone: list[str] = []
        for rec in self.unplugs:
            if rec.outcome is Outcome.COMPLETES and rec.device not in gone:
                gone.append(rec.device)
        for device_id in gone:
            if self._address(device_id) is None:  # QEMU no longer has it
                self._note(f"restoring: plugging {device_id} back")
                self._plug(Plug(device_id))

    def _bound(self) -> dict[str, int]:
        """How many devices of each PCI id have a driver, from one listing (one command)."""
        counts: dict[str, int] = {}
        for d in pci.list_devices(self.vm.ssh):
            if d.driver:
                counts[d.pci_id] = counts.get(d.pci_id, 0) + 1
        return counts

    def _clean(self) -> bool:
        """Whether the guest is back to where a new run can start."""
        shell = self.vm.ssh
        wanted: dict[str, int] = {}
        for dev in self.vm.spec.devices:
            pci_id = self._device_pci_id(dev.id)
            wanted[pci_id] = wanted.get(pci_id, 0) + 1
        bound = self._bound()
        for pci_id, n in wanted.items():
            if bound.get(pci_id, 0) < n:
                self._note(f"not reusable: {n - bound.get(pci_id, 0)} x {pci_id} not bound")
                return False
        if shell.run("pidof p2pctl").stdout.strip():
            return False
        counters = self._counters()
        if counters.get("exporter.imports") or counters.get("importer.mrs"):
            self._note(f"not reusable: live mappings or MRs: {counters}")
            return False
        shell.run("rm -f /tmp/scn-*")
        return True
