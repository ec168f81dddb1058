"""Scenario files (testbed.scenario.loader / model): strict loading, cross-checks, round trip.

Every rejected file must raise :class:`ConfigError` naming the file, the line and the key;
the documents are in ``tests/data/scenario/`` and the line numbers below are theirs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed import paths
from testbed.errors import ConfigError, UnknownNameError
from testbed.scenario import loader
from testbed.scenario.model import (
    P2PCTL_COMMANDS,
    STEP_KINDS,
    Aer,
    App,
    Module,
    Outcome,
    P2pctl,
    Reset,
    Unplug,
    Wait,
    importer_refs,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "scenario"
SCENARIOS = paths.PROJECT_ROOT / "scenarios"


def error(name: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loader.load(DATA / name)
    return info.value


def test_every_kind_loads_with_its_arguments() -> None:
    s = loader.load(DATA / "good.yaml")
    assert s.machine == "native-hotplug"
    assert s.kernel_args == ("acpiphp.disable=1",)
    assert s.params == {"p2p_exporter.unplug_wait_ms": "1500"}
    kinds = [step.kind for step in s.steps]
    assert kinds[:5] == ["app", "wait", "unplug", "reset", "aer"]
    app = s.steps[0].action
    assert isinstance(app, App) and not app.hold
    assert app.commands == ("create", "mmap", "reg", "dma-write len=2048")
    assert s.steps[1].action == Wait(seconds=0.05, app="s", op="dma-write", count=1)
    unplug = s.steps[2].action
    assert isinstance(unplug, Unplug) and unplug.expect is Outcome.TIMES_OUT
    assert unplug.bound == 3.0
    assert s.steps[3].action == Reset()
    assert s.steps[4].action == Aer(device="importer", error="SDN")
    assert s.verdict.unplug_timeouts == 1 and s.verdict.slab_growth == 2 << 20
    assert s.source == f"{DATA / 'good.yaml'}:1"


def test_held_app_runs_hold_between_setup_and_then() -> None:
    assert App(setup=("create",), then=("touch",)).commands == ("create", "hold", "touch")


@pytest.mark.parametrize(
    ("name", "line", "key", "words"),
    [
        ("unknown_step.yaml", 4, "steps[1].frobnicate", "unknown key; known keys here: aer, app"),
        ("unknown_key.yaml", 5, "steps[0].unplug.timeout", "known keys here: bound, device"),
        ("wrong_type.yaml", 3, "steps[0].wait.seconds", "expected a number, got 'soon'"),
        ("two_kinds.yaml", 3, "steps[0]", "exactly one kind"),
        ("bad_param.yaml", 1, None, "p2p_exporter.NAME"),
        ("hold_in_app.yaml", 3, "steps[0].app", "use hold: true and a go step"),
        ("unknown_command.yaml", 3, "steps[0].app", "'munmpa' (in 'munmpa') is not a p2pctl"),
        ("bad_counter.yaml", 4, "steps[0].expect", "optional comparison"),
        ("no_steps.yaml", 1, None, "at least one step"),
        ("module_two_ops.yaml", 3, "steps[0].module", "exactly one of load, unload and reload"),
        ("module_bad_expect.yaml", 5, "steps[1].module", "expect must be one of ok, EAGAIN"),
        ("module_unknown_key.yaml", 3, "steps[0].module.args", "known keys here: expect, load"),
        ("module_params_on_unload.yaml", 3, "steps[0].module", "params go with load or reload"),
    ],
)
def test_rejected_files_name_file_line_and_key(
    name: str, line: int, key: str | None, words: str
) -> None:
    err = error(name)
    assert err.path == DATA / name
    assert err.line == line, str(err)
    assert str(err).startswith(f"{DATA / name}:{line}: "), str(err)
    if key is not None:
        assert err.key == key, str(err)
    assert words in str(err)


def test_unknown_device_lists_the_machines_devices() -> None:
    err = error("unknown_device.yaml")
    assert isinstance(err, UnknownNameError)
    assert (err.line, err.key) == (5, "steps[1].unplug.device")
    assert err.known == ("gpu-exporter", "importer")


def test_unknown_importer_names_file_line_key_and_the_machines_importers() -> None:
    err = error("unknown_importer.yaml")
    assert isinstance(err, UnknownNameError)
    assert (err.line, err.key) == (5, "steps[0].app.then")
    assert err.known == ("importer", "importer2")
    assert "unknown importer (imp=) 'importer3'" in str(err)
    # a device that exists but is no importer, on a machine with one importer
    err = error("importer_on_one_importer_machine.yaml")
    assert isinstance(err, UnknownNameError)
    assert (err.line, err.key, err.known) == (4, "steps[0].p2pctl.commands", ("importer",))


def test_importer_refs_in_first_use_order() -> None:
    commands = ("create; mmap; reg imp=importer2", "reg", "dma-write imp=importer imp=importer2")
    assert importer_refs(commands) == ["importer2", "importer"]
    with pytest.raises(ValueError, match=r"importer \(imp=\) '2x' must start with a letter"):
        P2pctl(commands=("reg imp=2x",))


def test_unknown_machine_points_at_the_machine_key() -> None:
    err = error("unknown_machine.yaml")
    assert isinstance(err, UnknownNameError)
    assert (err.line, err.key) == (1, "machine")
    assert "default" in err.known


def test_an_app_must_be_started_before_a_step_names_it() -> None:
    err = error("unknown_app.yaml")
    assert (err.line, err.key) == (3, "steps[0].go.app")
    assert "no app 'user' was started by an earlier step" in str(err)


def test_step_kinds_are_the_documented_ones() -> None:
    assert set(STEP_KINDS) == {
        "app", "go", "finish", "kill", "p2pctl", "evict", "unplug", "plug",
        "reset", "aer", "wait", "params", "module", "fault", "expect",
    }  # fmt: skip


def test_module_steps_load_unload_reload_with_params_and_expectations() -> None:
    s = loader.load(SCENARIOS / "modules" / "unload-reload-drivers.yaml")
    modules = [step.action for step in s.steps if isinstance(step.action, Module)]
    assert [(m.op, m.name, m.expect) for m in modules[:3]] == [
        ("unload", "p2p_exporter", "EAGAIN"),
        ("unload", "p2p_importer", "EAGAIN"),
        ("load", "p2p_importer", "EEXIST"),
    ]
    assert Module(load="p2p_importer", params={"dma_timeout_ms": "4000"}).params
    assert ("reload", "p2p_exporter", "ok") in [(m.op, m.name, m.expect) for m in modules]
    with pytest.raises(ValueError, match="module name 'P2P-importer'"):
        Module(load="P2P-importer")
    with pytest.raises(ValueError, match="a name and a plain value"):
        Module(load="p2p_importer", params={"lazy_unmap": "1 evil=2"})


@pytest.mark.parametrize(
    "path",
    [DATA / "good.yaml", *sorted(SCENARIOS.glob("**/*.yaml"))],
    ids=lambda p: p.name,
)
def test_dump_loads_back_to_an_equal_scenario(path: Path) -> None:
    scenario = loader.load(path)
    text = loader.dump(scenario)
    assert loader.load_text(text) == scenario
    assert loader.dump(loader.load_text(text)) == text


def test_p2pctl_commands_are_the_ones_p2pctl_runs() -> None:
    """The loader's list and p2pctl's dispatch (``strcmp(op, "...")`` in ``run()``) agree."""
    source = (paths.PROJECT_ROOT / "qemu-devices/p2p/p2pctl/p2pctl.c").read_text()
    run = source[source.index("static void run(const struct cmd *c)") :]
    assert set(re.findall(r'strcmp\(op, "([a-z-]+)"\)', run)) == P2PCTL_COMMANDS


def test_app_and_p2pctl_commands_are_checked_word_by_word() -> None:
    App(setup=("create size=64K; mmap", "mprotect prot=r", "mremap len=4K", "fork dma=1"))
    P2pctl(commands=("munmap map=1", "stats"))
    with pytest.raises(ValueError, match=r"'mmapp' .* is not a p2pctl command"):
        App(setup=("create; mmapp len=4K",))
    with pytest.raises(ValueError, match=r"'frob' .* is not a p2pctl command"):
        P2pctl(commands=("frob",))
