"""Kselftests as pytest tests: one item per test the program runs, plus one for the program.

Give pytest a kselftest file, ``guest-kernel-config/kselftests/mm/hmm-tests.yaml`` (``testbed
run --kselftest mm/hmm-tests`` does), and it collects, under the node id
``kselftest/mm/hmm-tests``:

- one item per test of the program, named ``hmm-tests.<fixture>.<variant>.<test>`` -- the
  name the program prints -- listed with the harness's ``-l`` on the host before anything
  boots, so a test a crash prevented is still reported, by name;
- ``hmm-tests``, the program itself: fails when the run did not finish (panic, freeze,
  timeout), the stream has problems (results missing against the plan, duplicates, truncated),
  the exit status says failure, or the guest's console shows an Oops, WARNING, ...

The first item that needs it boots one guest (the suite's machine, the spec's kernel
arguments and modules), runs the program once and parses its output
(:mod:`testbed.ktap`); every item then reports its own result: passed, failed (with the
diagnostics the program printed for it), skipped with the ``# SKIP`` reason as the message,
or an error (setup) when the output holds no result for it. The raw output
(``<program>.tap``), the console and the outcome are kept in the artifact folder
``kselftest-<dir>-<program>/`` whatever the result. A kernel that cannot run the program
(option or module missing) fails every item at once with the fix, before any boot.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import ktap
from testbed.config.kselftests import KselftestSpec, load_kselftest
from testbed.devices.registry import load_machine
from testbed.errors import TestbedError
from testbed.guest.console import ConsoleTail
from testbed.kselftest import guest
from testbed.kselftest.build import KselftestError, Program, build_program
from testbed.pytest_plugin.settings import from_config
from testbed.pytest_plugin.state import FACTS, SessionFacts
from testbed.qemu.machine import Machine

#: the folder kselftest files live in (``<it>/<dir>/<program>.yaml``)
FOLDER = "kselftests"
#: node ids start with this (JUnit classname ``kselftest.mm.hmm-tests``)
NODE_PREFIX = "kselftest"


def is_kselftest_file(path: Path) -> bool:
    return path.suffix == ".yaml" and path.parent.parent.name == FOLDER


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A kselftest file named on the command line becomes a :class:`KselftestFile`."""
    if is_kselftest_file(file_path) and parent.session.isinitpath(file_path):
        node = f"{NODE_PREFIX}/{file_path.parent.name}/{file_path.stem}"
        collector: KselftestFile = KselftestFile.from_parent(parent, path=file_path, nodeid=node)
        return collector
    return None


class KselftestFailure(Exception):
    """A test the program reported ``not ok`` (or an error for it); the message is the
    report, no traceback (what the guest printed is the evidence)."""


class KselftestFile(pytest.File):
    """The program: builds it, lists its tests, runs it once for all of them."""

    spec: KselftestSpec
    program: Program

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outcome: guest.Outcome | KselftestError | None = None
        self.console_summary = ""

    def collect(self) -> Iterator[pytest.Item]:
        self.spec = load_kselftest(self.path)
        settings = from_config(self.config)
        self.program = build_program(self.spec, guest.request_for(settings.kernel_image, self.spec))
        for number, test in enumerate(self.program.tests, 1):
            yield KselftestCase.from_parent(
                self, name=f"{self.spec.program}.{test}", test=test, number=number
            )
        yield KselftestProgram.from_parent(self, name=self.spec.program)

    @property
    def artifacts(self) -> Path:
        return from_config(self.config).artifacts / self.nodeid.replace("/", "-")

    def outcome(self) -> guest.Outcome:
        """The run (done by the first item that asks; every item gets the same)."""
        if self._outcome is None:
            try:
                self._outcome = self._run()
            except TestbedError as exc:
                self._outcome = KselftestError(f"kselftest {self.spec.name} did not run: {exc}")
            except Exception as exc:  # a bug or the host: still one attempt, not one per item
                self._outcome = KselftestError(
                    f"kselftest {self.spec.name} did not run: {type(exc).__name__}: {exc}"
                )
        if isinstance(self._outcome, KselftestError):
            raise KselftestFailure(str(self._outcome))
        return self._outcome

    def _run(self) -> guest.Outcome:
        settings = from_config(self.config)
        kernel = settings.kernel()
        label = settings.kernel_image or "stock"
        modules = guest.check_kernel(self.spec, kernel, label)
        folder = self.artifacts
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, mode=0o700)
        machine = Machine(
            load_machine(settings.machine),
            kernel,
            folder / "guest",
            accel=settings.accel,
            boot_timeout=settings.boot_timeout,
            kernel_args=self.spec.kernel_args,
            guest_modules=modules,
            guest_files=[guest.guest_file(self.program)],
        )
        with machine as vm:
            facts = self.config.stash.setdefault(FACTS, SessionFacts())
            facts.kernels.add(kernel.describe())
            if vm.accel is not None:
                facts.accels.add(vm.accel.describe())
            outcome = guest.run(vm.ssh.stream, self.program)
        report = ConsoleTail(machine.console_log).check_new()
        self.console_summary = "" if report.ok else report.summary()
        (folder / f"{self.spec.program}.tap").write_text(outcome.output)
        (folder / "outcome.json").write_text(
            json.dumps(
                {
                    "kselftest": self.spec.name,
                    "kernel": kernel.describe(),
                    "binary": str(self.program.binary),
                    "exitcode": outcome.exitcode,
                    "seconds": round(outcome.seconds, 2),
                    "stopped": outcome.stopped,
                    "counts": {s.value: n for s, n in outcome.suite.counts().items()},
                    "problems": [str(p) for p in outcome.suite.all_problems()],
                    "console": self.console_summary,
                },
                indent=2,
            )
            + "\n"
        )
        return outcome


def _case_text(case: ktap.Case) -> str:
    lines = [f"{'ok' if case.ok else 'not ok'} {case.number} {case.name}".rstrip()]
    if case.directive or case.reason:
        lines[0] += f" # {case.directive or ''} {case.reason}".rstrip()
    if case.ok is None:
        lines = [case.reason]
    if case.diagnostics:
        lines.append("what the program printed before it:")
        lines += [f"  {d}" for d in case.diagnostics]
    return "\n".join(lines)


class _Item(pytest.Item):
    parent: KselftestFile

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: keeps a program's items together (one guest) in shards and on xdist workers
        self.testbed_group = self.parent.nodeid
        self.user_properties.append(("kselftest", self.parent.spec.name))
        self.user_properties.append(("machine", from_config(self.config).machine))

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | Any:
        if isinstance(excinfo.value, KselftestFailure):
            folder = self.parent.artifacts
            return f"{excinfo.value}\n(artifacts: {folder})"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


class KselftestCase(_Item):
    """One test of the program: its result as the program printed it."""

    def __init__(self, *args: Any, test: str, number: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.test = test
        self.number = number
        self.case: ktap.Case | None = None

    def setup(self) -> None:
        outcome = self.parent.outcome()
        case = outcome.suite.find(self.test)
        if case is None:  # no result line: the stream stopped before it (found by number)
            missing = next(
                (c for c in outcome.suite.results if c.number == self.number and c.ok is None),
                None,
            )
            why = missing.reason if missing else "no result for this test in the output"
            if outcome.stopped:
                why += f"; the run stopped: {outcome.stopped}"
            extra = "\n".join(f"  {d}" for d in missing.diagnostics) if missing else ""
            raise KselftestFailure(
                f"{self.test}: {why}" + (f"\nafter the last result:\n{extra}" if extra else "")
            )
        if case.status is ktap.Status.ERROR:
            raise KselftestFailure(_case_text(case))
        self.case = case

    def runtest(self) -> None:
        case = self.case
        assert case is not None
        if case.status is ktap.Status.SKIP:
            pytest.skip(case.reason)
        if case.status is ktap.Status.XFAIL:
            pytest.xfail(case.reason)
        if case.status is ktap.Status.FAIL:
            raise KselftestFailure(_case_text(case))


class KselftestProgram(_Item):
    """The program as a whole: finished, a clean stream, a passing exit status, a quiet
    console."""

    def runtest(self) -> None:
        parent = self.parent
        outcome = parent.outcome()
        problems = [str(p) for p in outcome.suite.all_problems()]
        listed = set(parent.program.tests)
        extra = [c.name for c in outcome.suite.results if c.ok is not None and c.name not in listed]
        if extra:
            problems.append(f"results for tests the -l listing does not have: {extra}")
        if outcome.stopped:
            problems.append(f"the run did not finish: {outcome.stopped}")
        elif outcome.exitcode not in (0, 4):  # KSFT_PASS, KSFT_SKIP
            problems.append(f"exit status {outcome.exitcode} (kselftest: failure)")
        if parent.console_summary:
            problems.append(f"the guest console shows: {parent.console_summary}")
        if problems:
            counts = ", ".join(f"{n} {s.value}" for s, n in outcome.suite.counts().items() if n)
            raise KselftestFailure(
                f"{parent.spec.name} ({counts}, {outcome.seconds:.1f} s):\n  "
                + "\n  ".join(problems)
            )
