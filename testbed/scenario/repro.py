"""``repro.yaml``: everything needed to replay a failing run, and shrinking it first.

A failing campaign run writes, into its kept folder::

    repro.yaml            the minimal scenario that still fails, with the context below
    original.yaml         the scenario as the campaign generated it

``repro.yaml`` holds the seed and run number, the failures seen, the kernel's identity
(release, origin and the image's sha256), the machine, the QEMU command line, the run's
measured timings, how often the minimal scenario failed when re-run (``rate``), and the
scenario itself. It loads strictly like any scenario file (:func:`load`).

Shrinking (:func:`shrink`) is greedy and bounded: drop one step at a time (last first),
then set each delay to zero, then halve each app's DMA list; a candidate is kept when it
still fails *the same way* (:func:`signature`) in two tries in a row. Only candidates that
are valid scenarios are tried (dropping an app's start would orphan the steps that name
it). The campaign then re-runs the smallest kept scenario to state its failure rate, and
falls back to a larger kept one if that rate is below two in three.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from testbed.config.loader import compose_file, load_dataclass
from testbed.errors import ConfigError
from testbed.kernel.image import Kernel
from testbed.scenario import loader
from testbed.scenario.model import App, Scenario, Step, Wait

#: Failure classes, by a phrase the verdict or step messages always contain.
_CLASSES = (
    ("late-dma", "after the exporter's remove zapped"),
    ("remove-gave-up", "gave up waiting for an importer"),
    ("unhealthy", "is not healthy"),
    ("unplug-bound", "over its bound"),
    ("unplug-outcome", "expected it to"),
    ("bytes-after-unplug", "after its unplug completed"),
    ("module-refs", "module use counts"),
    ("slab", "slab grew"),
    ("app-error", "failed with"),
)


def signature(failures: Iterable[str]) -> frozenset[str]:
    """The classes of ``failures`` (``late-dma``, ``unhealthy``, ...); ``other`` if none."""
    out = set()
    for text in failures:
        found = [name for name, phrase in _CLASSES if phrase in text]
        out.update(found or ["other"])
    return frozenset(out)


@dataclass(frozen=True)
class Repro:
    """The context of a failing run; :attr:`scenario` is what ``testbed repro`` replays."""

    scenario: Scenario
    seed: int | None = None
    run: int | None = None
    failures: tuple[str, ...] = ()
    kernel: dict[str, str] = field(default_factory=dict)
    machine: str = ""
    qemu_cmdline: str = ""
    timings: dict[str, str] = field(default_factory=dict)
    rate: str = ""  #: "3/3": how often the minimal scenario failed when re-run
    original: str = ""  #: file name of the scenario before shrinking
    source: str = field(default="", compare=False, repr=False)


def kernel_identity(kernel: Kernel) -> dict[str, str]:
    digest = hashlib.sha256(kernel.image.read_bytes()).hexdigest()
    return {
        "release": kernel.release,
        "origin": kernel.origin,
        "image": str(kernel.image),
        "image-sha256": digest,
    }


def write(path: Path, repro: Repro) -> None:
    """Write ``repro`` as YAML (the scenario last, as a file of its own would read)."""
    data = loader.to_data(repro)
    data["scenario"] = data.pop("scenario")
    header = (
        "# Replay: testbed repro " + str(path) + "  (--repeat N: how often; --keep: poke at it)\n"
    )
    path.write_text(header + loader.dump_data(data))


def load(path: Path) -> Repro:
    """A ``repro.yaml``, or a plain scenario file (then only its scenario is known)."""
    node = compose_file(path)
    keys = {k.value for k, _ in node.value} if isinstance(node, yaml.MappingNode) else set()
    if "scenario" in keys and "steps" not in keys:
        repro = load_dataclass(Repro, path)
        loader.check(repro.scenario)
        return repro
    return Repro(scenario=loader.load(path))


def _valid(scenario: Scenario) -> bool:
    try:
        loader.check(scenario)
    except ConfigError:
        return False
    return True


def _candidates(s: Scenario) -> Iterator[Scenario]:
    """Smaller variants of ``s``, the most promising first."""
    steps = list(s.steps)
    for i in reversed(range(len(steps))):
        if len(steps) > 1:
            yield dataclasses.replace(s, steps=tuple(steps[:i] + steps[i + 1 :]))
    for i, step in enumerate(steps):
        if step.wait is not None and step.wait.seconds > 0:
            wait = dataclasses.replace(step.wait, seconds=0.0)
            yield dataclasses.replace(s, steps=_replace(steps, i, Step(wait=wait)))
    for i, step in enumerate(steps):
        app = step.app
        if app is None:
            continue
        dmas = [c for c in app.then if c.startswith("dma-")]
        if len(dmas) > 1:
            keep = dmas[: (len(dmas) + 1) // 2]
            then = tuple(c for c in app.then if not c.startswith("dma-") or c in keep)
            new = dataclasses.replace(app, then=then)
            yield dataclasses.replace(s, steps=_replace(steps, i, Step(app=new)))


def _replace(steps: list[Step], i: int, step: Step) -> tuple[Step, ...]:
    return (*steps[:i], step, *steps[i + 1 :])


def shrink(
    scenario: Scenario,
    fails: Callable[[Scenario], bool],
    *,
    budget: int = 25,
    confirm: int = 2,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[list[Scenario], int]:
    """Smaller and smaller variants of ``scenario`` that still ``fail``, and the number of
    candidates tried.

    ``fails`` runs a candidate once and says whether it failed the same way. A candidate is
    kept only if it fails ``confirm`` times in a row (a race that shows one time in two
    would otherwise shrink into a scenario that hardly fails). At most ``budget``
    candidates are tried. The list starts with ``scenario`` and ends with the smallest kept
    variant, so a caller can fall back to a larger one if the smallest fails too rarely.
    """
    tried = 0
    kept = [scenario]
    progress = True
    while progress and tried < budget:
        progress = False
        for candidate in _candidates(kept[-1]):
            if not _valid(candidate):
                continue
            if tried >= budget:
                break
            tried += 1
            if all(fails(candidate) for _ in range(confirm)):
                say(f"shrunk to {len(candidate.steps)} steps: {describe(candidate)}")
                kept.append(candidate)
                progress = True
                break
    return kept, tried


def describe(scenario: Scenario) -> str:
    """One line: the step kinds with their main argument."""
    parts = []
    for step in scenario.steps:
        action = step.action
        arg = ""
        if isinstance(action, App):
            n = sum(1 for c in action.then if c.startswith("dma-"))
            arg = f"{action.name}, {n} DMA" if n else action.name
        elif isinstance(action, Wait):
            bits = [f"{action.op}#{action.count}"] if action.op else []
            bits += [action.guest_event or action.qmp_event or ""]
            bits += [f"+{action.seconds:g}s"] if action.seconds else []
            arg = " ".join(b for b in bits if b)
        else:
            arg = str(getattr(action, "device", "") or getattr(action, "app", "") or "")
        parts.append(f"{step.kind}({arg})" if arg else step.kind)
    return " -> ".join(parts)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60]
