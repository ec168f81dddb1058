"""Guest-side fault injection in scenarios and campaigns, without a guest: the ``fault`` step's
schema and debugfs writes, the loader's ``fail=1`` cross-check, which kinds a kernel config
allows, and the campaign kinds ``failslab`` / ``fail-page-alloc``."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import paths
from testbed.errors import ConfigError
from testbed.scenario import faults, loader
from testbed.scenario.model import Fault, FaultKind
from testbed.scenario.runner import fault_unavailable, fault_writes

DATA = Path(__file__).resolve().parent.parent / "data" / "scenario"
CONFIGS = paths.PROJECT_ROOT / "guest-kernel-config"


def test_arming_writes_task_filter_and_the_drawn_attributes() -> None:
    slab = fault_writes(Fault(FaultKind.FAILSLAB, probability=50, interval=2, times=-1))
    assert slab == {
        "task-filter": "Y",
        "ignore-gfp-wait": "N",
        "verbose": "1",
        "space": "0",
        "interval": "2",
        "times": "-1",
        "probability": "50",
    }
    pages = fault_writes(Fault(FaultKind.FAIL_PAGE_ALLOC))
    assert pages["min-order"] == "0" and pages["ignore-gfp-highmem"] == "N"
    assert list(pages)[-1] == "probability", "probability last: armed once the rest is set"
    assert fault_writes(Fault(FaultKind.FAILSLAB, disarm=True)) == {
        "probability": "0",
        "times": "0",
    }


def test_fault_schema_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="percentage"):
        Fault(FaultKind.FAILSLAB, probability=101)
    with pytest.raises(ValueError, match="times must be >= 1, or -1"):
        Fault(FaultKind.FAILSLAB, times=0)
    with pytest.raises(ValueError, match="interval must be >= 1"):
        Fault(FaultKind.FAILSLAB, interval=0)


def test_a_kernel_without_the_files_gets_an_error_naming_the_configs() -> None:
    text = fault_unavailable(FaultKind.FAIL_PAGE_ALLOC, "6.1.0-57-cloud-amd64")
    assert "/sys/kernel/debug/fail_page_alloc" in text and "CONFIG_FAIL_PAGE_ALLOC" in text
    assert "guest-kernel-config/debug.config" in text and "--kernel faults" in text


def test_fail_marks_need_a_fault_step_in_the_scenario() -> None:
    with pytest.raises(ConfigError) as info:
        loader.load(DATA / "fail_without_fault.yaml")
    err = info.value
    assert (err.line, err.key) == (4, "steps[0].p2pctl.commands")
    assert "no fault step arms failslab or fail_page_alloc" in str(err)


def test_injection_kinds_follow_the_kernel_config() -> None:
    assert faults.injection_kinds("# CONFIG_FAULT_INJECTION is not set\n") == ()
    both = "CONFIG_FAULT_INJECTION=y\nCONFIG_FAILSLAB=y\nCONFIG_FAIL_PAGE_ALLOC=y\n"
    assert faults.injection_kinds(both) == ()  # no debugfs files: nothing to steer
    both += "CONFIG_FAULT_INJECTION_DEBUG_FS=y\n"
    assert faults.injection_kinds(both) == ("failslab", "fail-page-alloc")
    slab_only = both.replace("CONFIG_FAIL_PAGE_ALLOC=y", "# CONFIG_FAIL_PAGE_ALLOC is not set")
    assert faults.injection_kinds(slab_only) == ("failslab",)
    # the two fragments that provide it request every option the kinds need
    for fragment in ("faults.config", "debug.config"):
        text = (CONFIGS / fragment).read_text()
        assert faults.injection_kinds(text) == faults.INJECTION_FAULTS, fragment


def test_injection_scenarios_arm_mark_force_a_remap_and_allow_enomem() -> None:
    plan = faults.plan(5, 12, list(faults.INJECTION_FAULTS))
    for s in plan:
        assert loader.load_text(loader.dump(s)) == s
        first = s.steps[0].fault
        assert first is not None and not first.disarm
        app = s.steps[1].app
        assert app is not None and all(c.endswith(" fail=1") for c in app.then if "dma" in c)
        assert any(st.evict or st.unplug for st in s.steps), "something must force a remap"
        finish = s.steps[-1].finish
        assert finish is not None and "ENOMEM" in finish.allow_errors
    assert {s.steps[0].fault.kind for s in plan if s.steps[0].fault} == set(FaultKind)


def test_default_plans_are_unchanged_by_the_injection_kinds() -> None:
    """The stock kernel's plan (what ``--plan`` prints without --kernel) draws no new kind."""
    assert all(step.fault is None for s in faults.plan(7, 40) for step in s.steps)


def test_cli_refuses_injection_kinds_on_the_stock_kernel(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --kernel the plan is the stock kernel's, which has no fault injection: asking
    for it is exit 2 with the configs that provide it (no kernel is looked up or built)."""
    from testbed.cli import main

    assert main(["campaign", "--seed", "1", "--runs", "2", "--plan", "--faults", "failslab"]) == 2
    err = capsys.readouterr().err
    assert "--faults failslab: the kernel (stock) has no fault injection" in err
    assert "faults.config" in err and "debug.config" in err
