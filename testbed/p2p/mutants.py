"""Planted bugs in the P2P drivers, and what the suite makes of them: its power, measured.

The catalogue is ``qemu-devices/p2p/mutants/NN-name.patch``: one planted bug per failure mode
of the contract (DEVELOPERS.md, "What the suite checks"). Each file starts with a header of
``Key: value`` fields (a value may continue on indented lines), then a unified diff against
``qemu-devices/p2p/`` (paths ``a/exporter/p2p_exporter.c``)::

    Claim: 6 (unplug waits): every p2p_map is balanced by one p2p_unmap
    Plants: p2p_unmap keeps its record and the importer's device reference
    Caught-by: the clean-state check before the next test

    diff --git a/exporter/p2p_exporter.c b/exporter/p2p_exporter.c
    ...

``Claim`` and ``Plants`` are required; ``Caught-by`` says which tests are meant to catch it
(documentation: the run reports which did). For each mutant, ``testbed mutants`` copies the
driver sources to a temporary folder (never touching the checkout), applies the patch, builds
the drivers (cached by content, like the real ones), runs the suite against that build and
records which tests failed. A mutant is *caught* when at least one test that passes on the
unmutated drivers fails; a patch that no longer applies, or a build that fails, has a status
of its own and is never counted as caught.

This module is the pure part (catalogue, statuses, the matrix) plus the two steps that touch
files (:func:`apply`, :func:`parse_junit`); :mod:`testbed.cli.mutants` runs builds and suites.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.errors import ConfigError, TestbedError

_NAME = re.compile(r"^\d{2}-[a-z0-9][a-z0-9-]*$")
_FIELD = re.compile(r"^(?P<key>[A-Z][A-Za-z-]*):\s*(?P<value>.*)$")
FIELDS = ("Claim", "Plants", "Caught-by")
REQUIRED = ("Claim", "Plants")
APPLY_TIMEOUT = 60.0


def catalogue_dir() -> Path:
    """``qemu-devices/p2p/mutants/``: the planted-bug patches, next to the drivers."""
    return paths.devices_dir() / "p2p" / "mutants"


@dataclass(frozen=True)
class Mutant:
    """One planted bug: its name (the file's stem), what it breaks, and the patch."""

    name: str
    path: Path
    claim: str  #: the claim or failure mode of the contract it plants a bug in
    plants: str  #: what the bug is
    caught_by: str  #: which tests are meant to catch it (documentation)
    diff: str  #: the unified diff, from its first ``diff``/``---`` line


def parse_mutant(path: Path, text: str | None = None) -> Mutant:
    """Parse one catalogue file; a malformed one is a :class:`ConfigError` naming the line."""
    if text is None:
        text = path.read_text()
    name = path.stem
    if not _NAME.match(name):
        raise ConfigError(
            "a mutant's file name must be NN-name.patch (two digits, lower-case words); rename it",
            path=path,
        )
    fields: dict[str, str] = {}
    key: str | None = None
    lines = text.splitlines()
    diff_at = None
    for n, line in enumerate(lines, start=1):
        if line.startswith(("diff ", "--- ")):
            diff_at = n
            break
        if not line.strip():
            key = None
            continue
        if line[0].isspace() and key is not None:
            fields[key] += " " + line.strip()
            continue
        match = _FIELD.match(line)
        if match is None or match["key"] not in FIELDS:
            raise ConfigError(
                f"expected a header field ({', '.join(FIELDS)}: ...) before the diff, got {line!r}",
                path=path,
                line=n,
            )
        key = match["key"]
        if key in fields:
            raise ConfigError(f"header field {key} given twice", path=path, line=n, key=key)
        fields[key] = match["value"].strip()
    if diff_at is None or not any(line.startswith("@@") for line in lines[diff_at:]):
        raise ConfigError(
            "no unified diff (a '--- a/...' line and '@@' hunks) after the header", path=path
        )
    for required in REQUIRED:
        if not fields.get(required):
            raise ConfigError(
                f"header field {required} is missing or empty: say which "
                f"{'claim or failure mode' if required == 'Claim' else 'bug'} this plants",
                path=path,
                line=1,
                key=required,
            )
    return Mutant(
        name=name,
        path=path,
        claim=fields["Claim"],
        plants=fields["Plants"],
        caught_by=fields.get("Caught-by", ""),
        diff="\n".join(lines[diff_at - 1 :]) + "\n",
    )


def catalogue(folder: Path | None = None, only: Sequence[str] = ()) -> tuple[Mutant, ...]:
    """Every ``*.patch`` of ``folder`` (default: :func:`catalogue_dir`), in name order;
    with ``only``, just the mutants whose name or number is listed."""
    folder = catalogue_dir() if folder is None else folder
    files = sorted(folder.glob("*.patch"))
    if not files:
        raise ConfigError("no mutants (*.patch) in the catalogue folder", path=folder)
    mutants = tuple(parse_mutant(p) for p in files)
    if not only:
        return mutants
    wanted = [m for m in mutants if m.name in only or m.name[:2] in only]
    known = {m.name for m in mutants}
    unknown = [o for o in only if o not in known and o not in {n[:2] for n in known}]
    if unknown:
        raise ConfigError(
            f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            path=folder,
        )
    return tuple(wanted)


class Status(enum.Enum):
    """What became of one mutant; only CAUGHT counts in the suite's favour."""

    CAUGHT = "caught"
    SURVIVED = "SURVIVED"  #: every test passed: the suite is blind to this bug
    NOT_APPLYING = "does not apply"  #: the patch no longer fits the drivers: update it
    NOT_COMPILING = "does not compile"  #: the patched drivers do not build: fix the patch
    NO_RESULT = "no result"  #: the suite ran but reported nothing (crashed, timed out)


@dataclass(frozen=True)
class Outcome:
    mutant: str
    status: Status
    caught_by: tuple[str, ...] = ()  #: tests that failed on the mutant and pass without it
    detail: str = ""  #: why it did not apply or compile, or what the suite said
    seconds: float = 0.0


def judge(
    mutant: str,
    failed: Iterable[str] | None,
    baseline_failed: Iterable[str] = (),
    *,
    seconds: float = 0.0,
    detail: str = "",
) -> Outcome:
    """The outcome of a suite run on ``mutant``: ``failed`` are the tests that failed or
    errored (None: the suite reported nothing). A test that also fails without the mutant
    proves nothing and is not counted."""
    if failed is None:
        return Outcome(mutant, Status.NO_RESULT, (), detail, seconds)
    blind = set(baseline_failed)
    caught = tuple(sorted(t for t in set(failed) if t not in blind))
    return Outcome(mutant, Status.CAUGHT if caught else Status.SURVIVED, caught, detail, seconds)


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 only when every mutant was caught; 1 otherwise (survivor, stale or broken patch)."""
    return 0 if outcomes and all(o.status is Status.CAUGHT for o in outcomes) else 1


def short_test(nodeid: str) -> str:
    """``tests/p2p/test_claims.py::test_claim4_x[default]`` -> ``test_claim4_x[default]``."""
    return nodeid.rsplit("::", maxsplit=1)[-1]


def _status_cell(o: Outcome) -> str:
    n = len(o.caught_by)
    return o.status.value + (f" ({n} test{'s' if n > 1 else ''})" if n else "")


def matrix(outcomes: Sequence[Outcome]) -> str:
    """A table: one row per mutant, one column per test that caught any mutant (``X``: it
    failed on that mutant), then the status; and a total line."""
    tests = sorted({t for o in outcomes for t in o.caught_by})
    columns = [f"T{i + 1}" for i in range(len(tests))]
    statuses = [_status_cell(o) for o in outcomes]
    name_w = max([len("mutant"), *(len(o.mutant) for o in outcomes)])
    status_w = max([len("status"), *(len(s) for s in statuses)])
    head = ["mutant".ljust(name_w), *columns, "status".ljust(status_w), "seconds"]
    out = ["  ".join(head).rstrip()]
    for o, status in zip(outcomes, statuses, strict=True):
        cells = [
            ("X" if t in o.caught_by else ".").ljust(len(c))
            for t, c in zip(tests, columns, strict=True)
        ]
        row = [o.mutant.ljust(name_w), *cells, status.ljust(status_w), f"{o.seconds:.0f}"]
        out.append("  ".join(row).rstrip())
    out.append("")
    out += [f"{c:>4} = {short_test(t)}" for c, t in zip(columns, tests, strict=True)]
    caught = sum(o.status is Status.CAUGHT for o in outcomes)
    out.append(f"{caught}/{len(outcomes)} mutants caught")
    for o in outcomes:
        if o.status is not Status.CAUGHT:
            out.append(f"{o.mutant}: {o.status.value}" + (f": {o.detail}" if o.detail else ""))
    return "\n".join(out)


# -- the steps that touch files -----------------------------------------------------------


class MutantDoesNotApply(TestbedError):
    """A catalogue patch does not apply to the current drivers (message: git's reason)."""


def apply(mutant: Mutant, tree: Path) -> None:
    """Apply ``mutant`` to ``tree``, a copy of ``qemu-devices/p2p/``, with ``git apply``
    (exact context, no fuzz: a stale patch must fail, not land somewhere else)."""
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent))  # never the checkout's repo
    try:
        proc = subprocess.run(
            ["git", "apply", "-p1", "--whitespace=nowarn", "-"],
            input=mutant.diff,
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=APPLY_TIMEOUT,
        )
    except FileNotFoundError as exc:
        raise TestbedError("git not found; install it with 'apt-get install git'") from exc
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().replace(str(tree) + "/", "")
        raise MutantDoesNotApply(f"{mutant.path.name}: {reason}")


def copy_sources(src: Path, files: Iterable[Path], dest: Path) -> Path:
    """Copy ``files`` (relative to ``src``) into ``dest``; return ``dest``."""
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
    return dest


@dataclass(frozen=True)
class SuiteResult:
    tests: tuple[str, ...]  #: every test node id the run reported
    failed: tuple[str, ...]  #: those that failed or errored (setup and teardown included)


def parse_junit(path: Path) -> SuiteResult | None:
    """The tests of a pytest JUnit XML file (None when it is missing or unreadable)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    tests: list[str] = []
    failed: list[str] = []
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        module = classname.replace(".", "/") + ".py" if classname else ""
        nodeid = f"{module}::{name}" if module else name
        if nodeid not in tests:
            tests.append(nodeid)
        broke = case.find("failure") is not None or case.find("error") is not None
        if broke and nodeid not in failed:
            failed.append(nodeid)
    return SuiteResult(tuple(tests), tuple(failed))
