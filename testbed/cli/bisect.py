"""``testbed bisect``: which patch of a series makes a test fail.

Prefix k is the base kernel plus the series' first k patches. Bisect runs the selection
(``--test EXPR``, a pytest ``-k`` expression, ``--repeat N`` times) on the base (prefix 0)
and on the full series first: if the base already fails or the full series passes, there is
nothing to find and it says so. Then it halves the interval, building each prefix it needs
(the cache and the incremental ``O=`` tree: a prefix costs what its changed files cost) and
names the first failing patch: its subject and diff stat, the failing test's output and its
artifact folder. A prefix on which a test fails only some of the N runs is reported as
flaky, with the interval still open: never guessed at.

  testbed bisect --series guest-kernel-config/patches/demo-buggy-unmap \\
      --test test_claim4_evict_last_page --repeat 2

Writes ``summary.json`` (the outcome, each prefix tried with its verdict, build and runs)
and one folder per prefix and run under ``--out`` (default ``testbed-artifacts/bisect``).

Exit status: 0 the culprit is named; 3 the base already fails; 4 the full series passes;
5 a prefix was flaky (undecided); 2 an error (a prefix that does not build, a run that
reported no results, a selection that matches no test).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.cli.regress import add_selection_options, run_args

if TYPE_CHECKING:
    from testbed.regress.results import CaseResult, Rates
    from testbed.regress.runner import Obtained, Run

DEFAULT_OUT = Path("testbed-artifacts") / "bisect"
EXIT_CULPRIT = 0
EXIT_BASE_FAILS = 3
EXIT_FULL_PASSES = 4
EXIT_FLAKY = 5
#: lines of the failing test's output printed (all of it is in the run's JUnit file)
OUTPUT_LINES = 60


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bisect",
        help="find the first patch of a series at which a test starts failing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--series", required=True, type=Path, metavar="DIR", help="the patch series folder"
    )
    p.add_argument(
        "--test",
        required=True,
        metavar="EXPR",
        help="the tests to judge each prefix by (a pytest -k expression)",
    )
    p.add_argument(
        "--base",
        default="base",
        metavar="KERNEL",
        help="the kernel the series applies to: a name or kernel YAML (default: %(default)s)",
    )
    add_selection_options(p, keyword=False)  # --test is the selection
    p.set_defaults(func=main)


@dataclass(frozen=True)
class Tried:
    """One prefix: its kernel, runs and the rates they gave."""

    prefix: int
    obtained: Obtained
    runs: tuple[Run, ...]
    rates: dict[str, Rates]


def _exit(outcome: str) -> int:
    return {
        "culprit": EXIT_CULPRIT,
        "base-fails": EXIT_BASE_FAILS,
        "full-passes": EXIT_FULL_PASSES,
        "flaky": EXIT_FLAKY,
    }[outcome]


def _failing_case(tried: Tried) -> tuple[str, CaseResult, Run] | None:
    """The first test that failed on ``tried``, one of its failed results and that run."""
    from testbed.regress.results import State

    for test, rate in tried.rates.items():
        if rate.state in (State.FAIL, State.FLAKY):
            for run in tried.runs:
                case = (run.cases or {}).get(test)
                if case is not None and case.outcome.broke:
                    return test, case, run
    return None


def main(args: argparse.Namespace) -> int:
    from testbed.errors import ConfigError, KernelError
    from testbed.kernel import series as kseries
    from testbed.regress import runner, search
    from testbed.regress.results import RegressError, rates, short

    started = time.monotonic()
    out = (args.out or DEFAULT_OUT).absolute()
    ser = kseries.load_series(args.series)
    base_request = runner.request_for_name(args.base)
    if base_request is None:
        raise ConfigError(
            f"--base must be a kernel built from source (a name or YAML), not {args.base!r}"
        )
    if base_request.series is not None:
        print(f"bisect: note: --base {args.base} has a series of its own; the prefixes replace it")
    selection = runner.Selection(args.test, args.machine, run_args(args))
    n = len(ser.patches)
    print(
        f"bisect: {ser.name}: {n} patches on {args.base}; selection -k {args.test!r}, "
        f"{args.repeat} run(s) per prefix",
        flush=True,
    )
    tried: dict[int, Tried] = {}

    def oracle(k: int) -> search.Verdict:
        label = f"{ser.name}[:{k}]" if k else args.base
        request = runner.with_series(base_request, runner.prefix(ser, k), label)
        print(f"bisect: prefix {k}/{n} ({label}): kernel [{request.key()}]", flush=True)
        try:
            obtained = runner.obtain_request(request, label)
        except KernelError as exc:  # a patch that does not apply or a prefix that does not build
            raise RegressError(
                f"prefix {k}/{n} ({label}) cannot be built, so it cannot be judged: {exc}\n"
                "  fix: make every prefix of the series build (each patch must stand on the "
                "ones before it)"
            ) from exc
        how = "built" if obtained.built else "from the cache"
        print(f"bisect: prefix {k}/{n}: {how} in {obtained.seconds:.0f} s", flush=True)
        runs = runner.run_repeats(
            obtained.kernel,
            selection,
            out / f"prefix-{k}",
            args.repeat,
            label=f"prefix {k}",
            timeout=args.run_timeout,
        )
        broken = [r for r in runs if r.cases is None]
        if broken:
            raise RegressError(f"prefix {k}: a run reported no results: {broken[0].note}")
        tried[k] = Tried(k, obtained, tuple(runs), rates(runner.completed(runs)))
        verdict = search.judge(tried[k].rates)
        detail = ", ".join(f"{short(t)} {r.rate()}" for t, r in tried[k].rates.items())
        print(f"bisect: prefix {k}/{n}: {verdict.value.upper()} ({detail})", flush=True)
        return verdict

    result = search.bisect(n, oracle)
    wall = time.monotonic() - started
    print()
    lines: list[str] = []
    if result.outcome is search.Outcome.CULPRIT:
        assert result.culprit is not None
        patch = ser.patches[result.culprit - 1]
        lines += [
            f"bisect: the first failing patch is {result.culprit}/{n}: {patch.name}",
            f"    {search.subject(patch)}",
            search.format_diffstat(search.diffstat(patch)),
            f"  prefix {result.good} passes, prefix {result.culprit} fails",
        ]
        failing = _failing_case(tried[result.culprit])
        if failing is not None:
            test, case, run = failing
            lines += [
                f"bisect: failing test: {test} ({tried[result.culprit].rates[test].rate()})",
                f"  artifacts: {run.artifact_folder(test)}",
                "  message: " + case.message.replace("\n", "\n    "),
                "  output:",
                *("    " + ln for ln in case.output.splitlines()[:OUTPUT_LINES]),
            ]
    elif result.outcome is search.Outcome.BASE_FAILS:
        lines.append(
            f"bisect: the base ({args.base}) already fails the selection: no patch of "
            f"{ser.name} is to blame"
        )
        failing = _failing_case(tried[0])
        if failing is not None:
            lines.append(
                f"  failing: {failing[0]}, artifacts: {failing[2].artifact_folder(failing[0])}"
            )
    elif result.outcome is search.Outcome.FULL_PASSES:
        lines.append(
            f"bisect: the full series ({n} patches) passes the selection: nothing to bisect"
        )
    else:
        assert result.flaky is not None
        flaky = tried[result.flaky]
        detail = ", ".join(f"{short(t)} {r.rate()}" for t, r in flaky.rates.items())
        lines.append(
            f"bisect: prefix {result.flaky} is FLAKY ({detail}): undecided; the culprit is in "
            f"patches {result.good + 1}..{result.bad if result.bad is not None else n} -- "
            "rerun with a larger --repeat"
        )
    builds = [t for t in tried.values() if t.obtained.built]
    tried_text = []
    for step in result.steps:
        got = tried[step.prefix].obtained
        how = "built" if got.built else "cache"
        tried_text.append(f"{step.prefix} {step.verdict.value} ({how} {got.seconds:.0f} s)")
    lines.append("bisect: prefixes tried: " + ", ".join(tried_text))
    lines.append(
        f"bisect: {len(builds)} kernel build(s), {len(tried) - len(builds)} from the cache; "
        f"wall time {wall:.0f} s"
    )
    print("\n".join(lines))
    code = _exit(result.outcome.value)
    summary = {
        "schema": "p2p-testbed/bisect/1",
        "outcome": result.outcome.value,
        "exit_code": code,
        "series": str(ser.path),
        "patches": [p.name for p in ser.patches],
        "culprit": result.culprit,
        "culprit_patch": ser.patches[result.culprit - 1].name if result.culprit else None,
        "culprit_subject": search.subject(ser.patches[result.culprit - 1])
        if result.culprit
        else None,
        "flaky_prefix": result.flaky,
        "good": result.good,
        "bad": result.bad,
        "steps": [
            {
                "prefix": s.prefix,
                "verdict": s.verdict.value,
                "built": tried[s.prefix].obtained.built,
                "build_seconds": round(tried[s.prefix].obtained.seconds, 1),
                "kernel": str(tried[s.prefix].obtained.kernel.image.parent),
                "tests": {t: r.as_json() for t, r in tried[s.prefix].rates.items()},
                "runs": [r.as_json() for r in tried[s.prefix].runs],
            }
            for s in result.steps
        ],
        "builds": len(builds),
        "from_cache": len(tried) - len(builds),
        "repeat": args.repeat,
        "selection": selection.as_json(),
        "wall_seconds": round(wall, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"bisect: summary {out / 'summary.json'}; exit {code}")
    return code
