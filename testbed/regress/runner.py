"""The acting part of regress and bisect: kernels (built or from the cache) and ``testbed run``
children.

A side of a comparison is a kernel: a name from ``guest-kernel-config/kernels/``, a kernel
YAML file, ``stock``, or "base + this series" (a series folder). Named and series kernels go
through :mod:`testbed.kernel.build` (the cache, the incremental ``O=`` tree, ccache); whether
each was built now or taken from the cache is recorded, so a report can say how many builds
a comparison or a bisection cost.

The selection runs as ``testbed run --kernel IMAGE --modules DIR --build DIR`` in a child
process per side and per repeat, bounded by a timeout, with its own ``--junit`` file and
``--artifacts`` folder and its output in ``run.log`` beside them: a crash, hang or Ctrl-C in
one run cannot take the others' results with it, and each run's artifacts stay apart.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.config.kernels import find_kernel_spec, load_kernel_spec
from testbed.kernel import build as kbuild
from testbed.kernel import series as kseries
from testbed.kernel.image import Kernel
from testbed.regress.results import CaseResult, RegressError, parse_junit, short

log = logging.getLogger(__name__)

#: default bound on one ``testbed run`` child (the whole suite takes ~4 min under TCG)
RUN_TIMEOUT = 1800.0
#: how long a child has to clean up after SIGTERM before it is killed
TERM_GRACE = 60.0


@dataclass(frozen=True)
class Obtained:
    """A kernel for one side, and what it cost."""

    label: str  #: what the user named (``base``, ``demo-buggy-unmap[:3]``)
    kernel: Kernel
    built: bool  #: built now (False: taken from the cache, or not a built kernel)
    seconds: float


def request_for_name(selection: str) -> kbuild.Request | None:
    """The build request a kernel name or YAML path stands for (None: ``stock`` or an image
    path, which are not built)."""
    if selection == "stock":
        return None
    path = Path(selection)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return kbuild.request_for(load_kernel_spec(path))
    if "/" in selection or path.exists():
        return None
    spec = find_kernel_spec(paths.kernel_config_dir() / "kernels", selection)
    return kbuild.request_for(spec)


def with_series(request: kbuild.Request, ser: kseries.Series | None, name: str) -> kbuild.Request:
    """``request`` (a kernel without a series, usually ``base``) with ``ser`` instead."""
    return dataclasses.replace(request, name=name, series=ser)


def prefix(ser: kseries.Series, k: int) -> kseries.Series | None:
    """The first ``k`` patches of ``ser`` (None for ``k == 0``: the base alone)."""
    if k == 0:
        return None
    return kseries.Series(f"{ser.name}[:{k}]", ser.path, ser.patches[:k])


def obtain_request(request: kbuild.Request, label: str) -> Obtained:
    """Build ``request`` or take it from the cache, timed."""
    started = time.monotonic()
    hit = kbuild.cached(request)
    kernel = hit if hit is not None else kbuild.build(request)
    return Obtained(label, kernel, hit is None, time.monotonic() - started)


def obtain(selection: str) -> Obtained:
    """The kernel ``selection`` names (see the module doc), built if need be."""
    request = request_for_name(selection)
    if request is not None:
        return obtain_request(request, selection)
    from testbed.kernel import kernel_under_test

    started = time.monotonic()
    return Obtained(selection, kernel_under_test(selection), False, time.monotonic() - started)


def kernel_args(kernel: Kernel) -> list[str]:
    """``testbed run`` options that select exactly ``kernel``."""
    argv = ["--kernel", str(kernel.image)]
    if kernel.modules is not None:
        argv += ["--modules", str(kernel.modules)]
    if kernel.build is not None:
        argv += ["--build", str(kernel.build)]
    return argv


@dataclass(frozen=True)
class Selection:
    """What runs on every side: ``-k``, ``--machine`` and any other ``testbed run`` options."""

    keyword: str | None = None
    machine: str | None = None
    run_args: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        out = []
        if self.keyword:
            out += ["-k", self.keyword]
        if self.machine:
            out += ["--machine", self.machine]
        return out + list(self.run_args)

    def as_json(self) -> dict[str, object]:
        return {"keyword": self.keyword, "machine": self.machine, "run_args": list(self.run_args)}


@dataclass(frozen=True)
class Run:
    """One ``testbed run`` child: where its files are and how it ended."""

    folder: Path  #: holds ``junit.xml``, ``run.log``, ``command.txt`` and ``artifacts/``
    exit: int | None  #: None: killed at the timeout
    seconds: float
    cases: dict[str, CaseResult] | None  #: None: no readable JUnit (crashed, timed out)
    note: str = ""

    @property
    def junit(self) -> Path:
        return self.folder / "junit.xml"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    def artifact_folder(self, test: str) -> Path:
        """Where ``test``'s console, dmesg and QMP log are in this run: its own folder, else
        its module's shared guest's (``test_claims-shared-guest``), else the run's."""
        if not self.artifacts.is_dir():
            return self.artifacts
        stem = short(test).replace("[", "-").replace("]", "").rstrip("-")
        module = Path(test.split("::", 1)[0]).stem
        for pattern in (f"*{stem}*", f"{module}-*"):
            found = sorted(p for p in self.artifacts.glob(pattern) if p.is_dir())
            if found:
                return found[0]
        return self.artifacts

    def as_json(self) -> dict[str, object]:
        return {
            "junit": str(self.junit),
            "artifacts": str(self.artifacts),
            "exit": self.exit,
            "seconds": round(self.seconds, 1),
            "note": self.note,
        }


def run_argv(kernel: Kernel, selection: Selection, folder: Path) -> list[str]:
    """The child's command line: this Python, the ``testbed`` CLI, ``run`` and its options."""
    return [
        sys.executable,
        "-c",
        "import sys; from testbed.cli import main; sys.exit(main())",
        "run",
        *kernel_args(kernel),
        "--junit",
        str(folder / "junit.xml"),
        "--artifacts",
        str(folder / "artifacts"),
        *selection.argv(),
    ]


def run_once(
    kernel: Kernel, selection: Selection, folder: Path, timeout: float = RUN_TIMEOUT
) -> Run:
    """Run the selection on ``kernel`` once, in a child, bounded by ``timeout`` (then SIGTERM,
    which ``testbed run`` answers by cleaning up and writing its JUnit file, then SIGKILL)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "junit.xml").unlink(missing_ok=True)
    shutil.rmtree(folder / "artifacts", ignore_errors=True)  # an earlier run's would mislead
    argv = run_argv(kernel, selection, folder)
    (folder / "command.txt").write_text(" ".join(argv) + "\n")
    started = time.monotonic()
    code: int | None
    note = ""
    with (folder / "run.log").open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=paths.data_root(), env=dict(os.environ)
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=TERM_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = None
            note = f"stopped after the run timeout ({timeout:g} s)"
        except BaseException:
            proc.send_signal(signal.SIGTERM)  # Ctrl-C: let it shut its guests down
            try:
                proc.wait(timeout=TERM_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    seconds = time.monotonic() - started
    try:
        cases: dict[str, CaseResult] | None = parse_junit(folder / "junit.xml")
    except RegressError as exc:
        cases = None
        note = "; ".join(n for n in (note, str(exc)) if n)
    if cases is not None and not cases:
        cases, note = None, "; ".join(n for n in (note, "no tests ran") if n)
    if cases is None:
        note += f"; see {folder / 'run.log'}"
    return Run(folder, code, seconds, cases, note)


def run_repeats(
    kernel: Kernel,
    selection: Selection,
    folder: Path,
    repeat: int,
    *,
    label: str,
    timeout: float = RUN_TIMEOUT,
) -> list[Run]:
    """``repeat`` runs into ``folder/run-1``, ``folder/run-2``, ..., one line each."""
    runs: list[Run] = []
    for i in range(1, repeat + 1):
        run = run_once(kernel, selection, folder / f"run-{i}", timeout)
        runs.append(run)
        failed = sum(c.outcome.broke for c in run.cases.values()) if run.cases is not None else None
        what = f"{failed}/{len(run.cases)} failed" if run.cases is not None else run.note
        print(f"  {label} run {i}/{repeat}: {what} in {run.seconds:.0f} s", flush=True)
    return runs


def completed(runs: Sequence[Run]) -> list[dict[str, CaseResult]]:
    return [r.cases for r in runs if r.cases is not None]
