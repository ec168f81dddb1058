"""Scenario files: strict loading, cross-checks, and writing them back.

Loading goes through :mod:`testbed.config.loader`, so an unknown key, a wrong type or an
unknown step kind is a :class:`~testbed.errors.ConfigError` naming the file, the line and
the dotted key (``steps[2].unplug.device``). After that the scenario is checked against
its machine: a device id no device of the machine has, or an app a step names before any
``app`` step started it, is an error at that step's line.

:func:`dump` writes a scenario back as YAML that loads to an equal scenario (fields at
their defaults are left out), which is how campaigns print plans and write ``repro.yaml``.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

import yaml

from testbed.config.loader import Size, load_dataclass, load_dataclass_text
from testbed.devices.registry import Machine, load_machine
from testbed.errors import ConfigError, UnknownNameError
from testbed.scenario.model import App, Fault, P2pctl, Scenario, importer_refs

#: The device type whose instances ``imp=`` names (qemu-devices/importer/).
IMPORTER_TYPE = "importer"


def _where(source: str) -> tuple[str | None, int | None]:
    path, _, line = source.rpartition(":")
    return (path or None), (int(line) if line.isdigit() else None)


def _command_lists(action: object) -> list[tuple[str, tuple[str, ...]]]:
    """The p2pctl command lists of a step, by field name (for error keys)."""
    if isinstance(action, App):
        return [("setup", action.setup), ("then", action.then)]
    if isinstance(action, P2pctl):
        return [("commands", action.commands)]
    return []


def check(scenario: Scenario, machine: Machine | None = None) -> Machine:
    """Check names across steps; returns the scenario's machine. Raises ConfigError."""
    path, line = _where(scenario.source)
    try:
        machine = machine or load_machine(scenario.machine)
    except UnknownNameError as exc:
        raise UnknownNameError(
            "machine", scenario.machine, exc.known, path=path, line=line, key="machine"
        ) from None
    device_ids = [d.id for d in machine.spec.devices]
    importer_ids = [d.id for d in machine.spec.devices if d.type == IMPORTER_TYPE]
    apps: set[str] = set()
    has_fault = any(isinstance(step.action, Fault) for step in scenario.steps)
    for i, step in enumerate(scenario.steps):
        action = step.action
        key = f"steps[{i}].{step.kind}"
        spath, sline = _where(getattr(action, "source", "") or step.source)
        device = getattr(action, "device", None)
        if isinstance(device, str) and device not in device_ids:
            raise UnknownNameError(
                "device", device, device_ids, path=spath, line=sline, key=f"{key}.device"
            )
        for field_name, commands in _command_lists(action):
            if not has_fault and any(
                w.startswith("fail=") and w != "fail=0" for c in commands for w in c.split()
            ):
                raise ConfigError(
                    "fail=1 marks a command for fault injection, but no fault step arms "
                    "failslab or fail_page_alloc (add one, e.g. - fault: {kind: failslab})",
                    path=spath,
                    line=sline,
                    key=f"{key}.{field_name}",
                )
            for name in importer_refs(commands):
                if name not in importer_ids:
                    raise UnknownNameError(
                        "importer (imp=)",
                        name,
                        importer_ids,
                        path=spath,
                        line=sline,
                        key=f"{key}.{field_name}",
                    )
        if isinstance(action, App):
            apps.add(action.name)
            continue
        app = getattr(action, "app", None)
        if isinstance(app, str) and app not in apps:
            raise ConfigError(
                f"no app {app!r} was started by an earlier step"
                + (f" (started so far: {', '.join(sorted(apps))})" if apps else ""),
                path=spath,
                line=sline,
                key=f"{key}.app",
            )
        for bar in getattr(action, "bar", ()):
            if bar.app not in apps:
                raise ConfigError(
                    f"no app {bar.app!r} was started by an earlier step",
                    path=spath,
                    line=sline,
                    key=f"{key}.bar.app",
                )
    return machine


def load(path: Path) -> Scenario:
    """Load and check the scenario file ``path``."""
    scenario = load_dataclass(Scenario, path)
    check(scenario)
    return scenario


def load_text(text: str, path: str = "<string>") -> Scenario:
    scenario = load_dataclass_text(Scenario, text, path)
    check(scenario)
    return scenario


def to_data(obj: Any) -> Any:
    """Plain YAML data for a scenario dataclass, defaults and ``source`` left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if f.name == "source":
                continue
            value = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
                continue
            out[f.name.replace("_", "-")] = to_data(value)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Size):
        return obj.human()
    if isinstance(obj, tuple | list):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _dict_value(v) for k, v in obj.items()}
    return obj


def _dict_value(value: str) -> Any:
    """Values of ``dict[str, str]`` fields went through YAML as text; keep them readable."""
    if value in ("on", "off"):
        return value == "on"
    return value


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style for short lists of words."""


def _list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(v, str | int | float) for v in data) and len(str(data)) < 90
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list)


def dump(scenario: Scenario) -> str:
    """YAML text for ``scenario`` that :func:`load_text` reads back to an equal one."""
    return dump_data(to_data(scenario))


def dump_data(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
