"""Running many scenarios fast: a pool of booted guests, artifacts, progress, shrinking.

A campaign runs its scenarios in plan order. Guests are pooled by boot configuration
(machine + kernel arguments, :attr:`~testbed.scenario.model.Scenario.boot_key`): a run that
leaves its guest clean hands it to the next run with the same configuration, which is what
makes a campaign fast (a TCG boot costs ~10 s on a busy 2-core host, a run ~5 s). A run that
fails, or leaves the guest unusable, costs the guest: it is shut down, and its console, QMP
log and command line are copied into the run's folder.

Each run has a folder ``run-NNN-<kind>/`` under the campaign's; a passing run's folder is
removed, a failing run's is kept with ``original.yaml``, ``run.log``, the guest's artifacts
and ``repro.yaml`` (:mod:`testbed.scenario.repro`), after the scenario was shrunk.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from testbed.config.schema import Accel
from testbed.devices.registry import load_machine
from testbed.errors import TestbedError
from testbed.kernel.image import Kernel
from testbed.p2p.payload import Payload
from testbed.qemu.machine import Machine
from testbed.scenario import loader, repro
from testbed.scenario.model import Scenario
from testbed.scenario.runner import Runner, RunResult

GUEST_ARTIFACTS = ("console.log", "qmp.log", "qemu-cmdline.txt", "dmesg.txt", "kernel.json")


class Pool:
    """Booted guests by boot configuration; at most ``live`` at once (oldest goes first)."""

    def __init__(
        self,
        kernel: Kernel,
        payload: Payload,
        folder: Path,
        *,
        accel: Accel | None = None,
        live: int = 2,
    ) -> None:
        self.kernel = kernel
        self.payload = payload
        self.folder = folder
        self.accel = accel
        self.live = live
        self.guests: dict[tuple[str, tuple[str, ...]], tuple[Machine, Runner]] = {}
        self.boots = 0
        self.boot_seconds = 0.0

    def get(self, scenario: Scenario) -> tuple[Machine, Runner]:
        key = scenario.boot_key
        if key in self.guests:
            vm, runner = self.guests.pop(key)
            if vm.alive():
                self.guests[key] = (vm, runner)  # most recently used last
                return vm, runner
            vm.shutdown()
        while len(self.guests) >= self.live:
            self.discard(next(iter(self.guests)))
        self.boots += 1
        run_dir = self.folder / f"guest-{self.boots:03d}"
        shutil.rmtree(run_dir, ignore_errors=True)
        vm = Machine(
            load_machine(scenario.machine),
            self.kernel,
            run_dir,
            accel=self.accel,
            kernel_args=scenario.kernel_args,
            **self.payload.machine_kwargs(),
        )
        t = time.monotonic()
        try:
            vm.start()
        except BaseException:
            vm.shutdown()
            raise
        self.boot_seconds += time.monotonic() - t
        runner = Runner(vm)
        self.guests[key] = (vm, runner)
        return vm, runner

    def discard(self, key: tuple[str, tuple[str, ...]], keep_in: Path | None = None) -> None:
        """Shut the guest down; copy its artifacts into ``keep_in`` first if given."""
        vm, _ = self.guests.pop(key)
        vm.shutdown()  # collects dmesg first
        if keep_in is not None:
            keep_in.mkdir(parents=True, exist_ok=True)
            for name in GUEST_ARTIFACTS:
                if (vm.run_dir / name).is_file():
                    shutil.copy2(vm.run_dir / name, keep_in / name)
        shutil.rmtree(vm.run_dir, ignore_errors=True)

    def close(self) -> None:
        for key in list(self.guests):
            self.discard(key)


class Progress:
    """Runs done, passes, failures, runs/min, elapsed, remaining: one line that updates on a
    terminal, a plain line per run otherwise."""

    def __init__(self, total: int, out: TextIO | None = None) -> None:
        self.total = total
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.start = time.monotonic()
        self.done = self.passes = self.failures = 0

    @staticmethod
    def _clock(seconds: float) -> str:
        m, s = divmod(int(seconds), 60)
        return f"{m}:{s:02d}"

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed * 60 if elapsed > 0 else 0.0

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        remaining = (self.total - self.done) * elapsed / self.done if self.done else 0.0
        return (
            f"[{self.done}/{self.total}] {self.passes} passed, {self.failures} failed | "
            f"{self.rate():.1f} runs/min | elapsed {self._clock(elapsed)} | "
            f"remaining ~{self._clock(remaining)}"
        )

    def update(self, result: RunResult) -> None:
        self.done += 1
        if result.passed:
            self.passes += 1
        else:
            self.failures += 1
        verdict = "PASS" if result.passed else "FAIL"
        what = f"{result.scenario.name} {verdict} {result.seconds:.1f}s"
        if self.tty:
            self.out.write(f"\r\033[K{self.line()} | {what}")
            if not result.passed:
                self.out.write(f"\n  {result.failures[0][:200]}\n")
        else:
            self.out.write(f"{self.line()} | {what}\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(("\n" if self.tty else "") + text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


@dataclass
class CampaignReport:
    runs: int = 0
    passes: int = 0
    failed: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    boots: int = 0
    boot_seconds: float = 0.0

    @property
    def runs_per_minute(self) -> float:
        return self.runs / self.seconds * 60 if self.seconds else 0.0


@dataclass(frozen=True)
class Options:
    seed: int | None = None
    shrink: bool = True
    shrink_budget: int = 20
    rate_runs: int = 3  #: how often the minimal scenario is re-run to state its rate
    max_failures: int | None = None  #: stop the campaign after this many failing runs
    keep_guest: bool = False  #: never shut a guest down after a run (``repro --keep``)


class Campaign:
    """Runs scenarios on a :class:`Pool`; see the module docstring."""

    def __init__(self, pool: Pool, folder: Path, options: Options, progress: Progress) -> None:
        self.pool = pool
        self.folder = folder
        self.options = options
        self.progress = progress

    def run_one(self, scenario: Scenario, keep_in: Path | None = None) -> RunResult:
        """One run on a pooled guest; a guest left unusable is discarded (artifacts copied
        into ``keep_in`` when the run failed and it is given)."""
        try:
            _, runner = self.pool.get(scenario)
        except TestbedError as exc:
            return RunResult(scenario, (f"the guest did not boot: {exc}",), 0.0, 0)
        try:
            result = runner.run(scenario)
        except TestbedError as exc:  # the guest broke before the run could start or finish
            result = RunResult(scenario, (f"the run could not proceed: {exc}",), 0.0, 0)
        if not result.reusable and not self.options.keep_guest:
            self.pool.discard(scenario.boot_key, keep_in if not result.passed else None)
        return result

    def run(self, scenarios: list[Scenario], *, numbers: list[int] | None = None) -> CampaignReport:
        report = CampaignReport()
        t0 = time.monotonic()
        for i, scenario in enumerate(scenarios):
            n = numbers[i] if numbers else i + 1
            folder = self.folder / f"run-{n:03d}-{repro.slug(scenario.name)}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "original.yaml").write_text(loader.dump(scenario))
            result = self.run_one(scenario, keep_in=folder)
            (folder / "run.log").write_text(result.report() + "\n\n" + "\n".join(result.log) + "\n")
            report.runs += 1
            self.progress.update(result)
            if result.passed:
                report.passes += 1
                shutil.rmtree(folder, ignore_errors=True)
                continue
            report.failed.append(folder)
            self.write_repro(folder, scenario, result, n)
            if self.options.max_failures and len(report.failed) >= self.options.max_failures:
                self.progress.note(f"  stopping after {len(report.failed)} failing run(s)")
                break
        report.seconds = time.monotonic() - t0
        report.boots, report.boot_seconds = self.pool.boots, self.pool.boot_seconds
        return report

    def fails_like(self, original: RunResult) -> Callable[[Scenario], bool]:
        wanted = repro.signature(original.failures)

        def fails(candidate: Scenario) -> bool:
            result = self.run_one(candidate)
            return bool(repro.signature(result.failures) & wanted) and not result.passed

        return fails

    def write_repro(self, folder: Path, scenario: Scenario, result: RunResult, n: int) -> None:
        kept, tried = [scenario], 0
        if self.options.shrink:
            self.progress.note(f"  shrinking {scenario.name} ({len(scenario.steps)} steps) ...")
            kept, tried = repro.shrink(
                scenario,
                self.fails_like(result),
                budget=self.options.shrink_budget,
                say=lambda line: self.progress.note("    " + line),
            )
        fails = self.fails_like(result)
        runs = self.options.rate_runs
        minimal, failed = kept[-1], 0
        for candidate in reversed(kept):  # smallest first; fall back if it fails too rarely
            minimal = candidate
            failed = sum(fails(candidate) for _ in range(runs))
            if not runs or 3 * failed >= 2 * runs or candidate is scenario:
                break
            self.progress.note(
                f"    {len(candidate.steps)} steps fail only {failed}/{runs}; trying a larger one"
            )
        rate = f"{failed}/{runs}" if runs else ""
        if self.options.shrink or runs:
            self.progress.note(
                f"  minimal: {len(minimal.steps)} steps ({repro.describe(minimal)}), fails "
                f"{rate}, {tried} candidates tried; {folder / 'repro.yaml'}"
            )
        cmdline = folder / "qemu-cmdline.txt"
        data = repro.Repro(
            scenario=minimal,
            seed=self.options.seed,
            run=n,
            failures=result.failures,
            kernel=repro.kernel_identity(self.pool.kernel),
            machine=scenario.machine,
            qemu_cmdline=cmdline.read_text().strip() if cmdline.is_file() else "",
            timings={k: f"{v:g}" for k, v in result.timings.items()},
            rate=rate,
            original="original.yaml",
        )
        repro.write(folder / "repro.yaml", data)


def with_params(scenarios: list[Scenario], params: dict[str, str]) -> list[Scenario]:
    """The scenarios with ``params`` added to each one's module parameters."""
    if not params:
        return scenarios
    return [dataclasses.replace(s, params={**s.params, **params}) for s in scenarios]
