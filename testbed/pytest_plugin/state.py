"""What the plugin remembers per test item and per session (pytest stash keys)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed.guest.console import ConsoleTail
from testbed.qemu.machine import Machine


@dataclass
class Watched:
    """A machine whose console a test is answerable for."""

    label: str
    machine: Machine
    tail: ConsoleTail


@dataclass
class SessionFacts:
    """Collected for the end-of-run summary."""

    kernels: set[str] = field(default_factory=set)
    accels: set[str] = field(default_factory=set)
    p2p_paths: set[str] = field(default_factory=set)  #: "vm_ops"/"compat", as guests reported
    kept: list[Path] = field(default_factory=list)


WATCHED = pytest.StashKey[list[Watched]]()
ARTIFACTS = pytest.StashKey[Path]()
FAILED = pytest.StashKey[bool]()
FACTS = pytest.StashKey[SessionFacts]()


def watch(item: pytest.Item, label: str, machine: Machine, *, from_now: bool) -> None:
    """Make ``item`` answerable for ``machine``'s console (from now, or from its start)."""
    tail = ConsoleTail(machine.console_log)
    if from_now:
        tail.mark()
    item.stash.setdefault(WATCHED, []).append(Watched(label, machine, tail))
    facts = item.config.stash.setdefault(FACTS, SessionFacts())
    facts.kernels.add(machine.kernel.describe())
    if machine.accel is not None:
        facts.accels.add(machine.accel.describe())


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def folder_name(nodeid: str) -> str:
    """A readable, filesystem-safe folder name for a test id.

    ``/``, ``::``, ``[`` and ``]`` are how test ids are built and become ``-``; if any other
    character had to be replaced (a space in a parameter, say), or the name is long, a hash of
    the id is appended so that two tests never share -- and wipe -- one folder.
    """
    readable = nodeid.replace("::", "--")
    name = _UNSAFE.sub("-", readable).strip("-")
    lossy = _UNSAFE.search(re.sub(r"[/\[\]]", "", readable)) is not None
    if lossy or len(name) > 120:
        digest = hashlib.sha256(nodeid.encode()).hexdigest()[:10]
        name = f"{name[:109]}-{digest}"
    return name
