"""Campaign logic without a guest: seeded plans, shrinking, signatures, progress, repro files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.scenario import faults, loader, repro
from testbed.scenario.campaign import Progress, with_params
from testbed.scenario.model import App, Scenario, Step, Unplug, Wait
from testbed.scenario.runner import RunResult


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    a = [loader.dump(s) for s in faults.plan(7, 20)]
    b = [loader.dump(s) for s in faults.plan(7, 20)]
    c = [loader.dump(s) for s in faults.plan(8, 20)]
    assert a == b
    assert a != c
    assert faults.plan(7, 5) == faults.plan(7, 20)[:5], "a longer plan extends a shorter one"


def test_every_planned_scenario_is_valid_and_round_trips() -> None:
    kinds = set()
    for s in faults.plan(1, 60):
        loader.check(s)
        assert loader.load_text(loader.dump(s)) == s
        kinds.add(s.description.split()[1])
    assert kinds == set(faults.FAULTS)


def test_faults_are_injected_during_a_dma() -> None:
    for s in faults.plan(3, 30):
        app, wait = s.steps[0].app, s.steps[1].wait
        assert app is not None and not app.hold
        assert wait is not None and wait.app == app.name and wait.op == "dma-write"
        dmas = [c for c in app.then if c.startswith("dma-write")]
        assert 1 <= wait.count < len(dmas), "the fault comes while DMAs remain"
        assert 0 <= wait.seconds <= 2 * faults.EDU_WINDOW_S


def test_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'bogus'; known: unplug-exporter"):
        faults.plan(1, 1, ["bogus"])


def test_with_params_adds_module_parameters() -> None:
    (s,) = with_params(faults.plan(1, 1), {"p2p_exporter.plant_race_ms": "300"})
    assert s.params == {"p2p_exporter.plant_race_ms": "300"}


STREAM = App(
    name="s",
    hold=False,
    setup=("create", "mmap", "reg"),
    then=tuple(f"dma-write off={i * 0x1000:#x} len=512 pattern={i}" for i in range(8)),
)


def _scenario() -> Scenario:
    return Scenario(
        name="x",
        steps=(
            Step(app=STREAM),
            Step(wait=Wait(app="s", op="dma-write", count=2, seconds=0.1)),
            Step(unplug=Unplug("importer")),
            Step(wait=Wait(seconds=0.2)),
            Step(unplug=Unplug("gpu-exporter")),
        ),
    )


def test_shrink_keeps_only_what_the_failure_needs() -> None:
    """The fake failure needs the stream (with >= 2 DMAs) and the exporter's unplug."""
    tried: list[Scenario] = []

    def fails(s: Scenario) -> bool:
        tried.append(s)
        apps = [st.app for st in s.steps if st.app]
        unplugs = [st.unplug.device for st in s.steps if st.unplug]
        dmas = sum(c.startswith("dma-") for c in apps[0].then) if apps else 0
        return "gpu-exporter" in unplugs and dmas >= 2

    kept, n = repro.shrink(_scenario(), fails, budget=50, confirm=1)
    minimal = kept[-1]
    assert kept[0] == _scenario() and len(kept) > 2
    assert [st.kind for st in minimal.steps] == ["app", "unplug"]
    app = minimal.steps[0].app
    assert app is not None and sum(c.startswith("dma-") for c in app.then) == 2
    assert n == len(tried) and all(loader.check(s) for s in tried), "only valid candidates run"


def test_shrink_respects_its_budget() -> None:
    kept, n = repro.shrink(_scenario(), lambda s: False, budget=3)
    assert n == 3 and kept == [_scenario()]


def test_shrink_keeps_a_candidate_only_if_it_fails_every_confirming_try() -> None:
    """A flaky candidate (fails every other try) is not kept with confirm=2."""
    calls = iter([True, False] * 50)
    kept, _ = repro.shrink(_scenario(), lambda s: next(calls), budget=10, confirm=2)
    assert kept == [_scenario()]


def test_signature_classes() -> None:
    assert repro.signature(
        ["app s: 'dma-write' started 5 ms after the exporter's remove zapped"]
    ) == {"late-dma"}
    assert repro.signature(["something new"]) == {"other"}


def test_repro_file_round_trips(tmp_path: Path) -> None:
    data = repro.Repro(
        scenario=_scenario(),
        seed=3,
        run=4,
        failures=("f1",),
        kernel={"release": "6.1", "image-sha256": "ab"},
        machine="default",
        qemu_cmdline="qemu-system-x86_64 -m 1G",
        timings={"unplug_importer_s": "0.1"},
        rate="3/3",
        original="original.yaml",
    )
    path = tmp_path / "repro.yaml"
    repro.write(path, data)
    assert path.read_text().startswith(f"# Replay: testbed repro {path}")
    assert repro.load(path) == data
    scenario_only = tmp_path / "s.yaml"
    scenario_only.write_text(loader.dump(_scenario()))
    assert repro.load(scenario_only) == repro.Repro(scenario=_scenario())


def test_repro_file_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "repro.yaml"
    path.write_text("seed: 3\nscenario: {name: x, steps: [{plug: {device: gpu0}}]}\n")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        repro.load(path)


def test_progress_prints_a_plain_line_per_run_when_not_a_tty() -> None:
    out = io.StringIO()
    progress = Progress(4, out)
    s = _scenario()
    progress.update(RunResult(s, (), 5.0, 5))
    progress.update(RunResult(s, ("boom",), 5.0, 2))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("[2/4] 1 passed, 1 failed | ")
    assert "runs/min | elapsed 0:00 | remaining ~0:00 | x FAIL 5.0s" in lines[1]


def test_cli_plan_is_the_same_twice_and_differs_by_seed(capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.cli import main

    plans = []
    for seed in ("7", "7", "8"):
        assert main(["campaign", "--seed", seed, "--runs", "20", "--plan"]) == 0
        plans.append(capsys.readouterr().out)
    assert plans[0] == plans[1] and plans[0] != plans[2]
    assert plans[0].count("\nname: s7-r0") == 20
