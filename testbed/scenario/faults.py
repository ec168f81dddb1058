"""Fault kinds and the seeded generator of campaign scenarios.

:func:`plan` turns ``(seed, runs)`` into scenarios with one :class:`random.Random` seeded
once, drawing in a fixed order, so the same seed gives the same scenarios in the same order
on any machine (Python's Mersenne Twister and its ``random()``/``choice``/``randint`` are
stable across versions for int seeds). Every scenario starts a DMA stream (an app that maps
an exporter object, registers it with the importer and runs a few synchronous DMAs, each
writing its own pattern at its own offset) and then injects its fault *relative to a
measured event*: after the stream printed its ``k``-th DMA result, i.e. while the next DMA
is in flight, plus a delay inside edu's ~100 ms transfer window (a 2 KiB DMA is two such
transfers).

Fault kinds (:data:`FAULTS`):

``unplug-exporter`` / ``unplug-importer``
    hot-unplug one device during the stream;
``unplug-both``
    both, in a drawn order, a drawn delay apart;
``replug``
    unplug, plug and at once unplug again: the "guest is busy" window after a plug;
``evict``
    evict the stream's object from outside while it DMAs, sometimes followed by an unplug
    of the exporter;
``kill``
    SIGKILL the process holding the mappings during a DMA, sometimes then unplug;
``aer``
    PCIe AER ``SDN`` (surprise down) on the exporter's root port during the stream;
``no-ack``
    a guest without ACPI hotplug (``acpiphp.disable=1``): the unplug must fail within its
    bound, and ``system_reset`` completes it.

Each is drawn on the ACPI path, or on native PCIe hotplug (``native-hotplug``) with
probability :data:`NATIVE_SHARE`, except ``no-ack``, which is ACPI's.

Guest-side fault injection (:data:`INJECTION_FAULTS`), only on a kernel that has it
(:func:`injection_kinds` reads its config; ``--kernel faults`` or a ``debug.config`` build):

``failslab`` / ``fail-page-alloc``
    arm the capability with task-filter, a drawn probability, interval and limit; the
    stream's DMAs are marked ``fail=1``, and an eviction or the exporter's unplug during the
    stream makes them map again, so ``p2p_map`` and the remap run while kmalloc or
    alloc_pages fail. ``ENOMEM`` is then an allowed, clean outcome.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from testbed.scenario.model import (
    Aer,
    App,
    Evict,
    Fault,
    FaultKind,
    Finish,
    Kill,
    Outcome,
    Plug,
    Reset,
    Scenario,
    Step,
    Unplug,
    Wait,
)

FAULTS = (
    "unplug-exporter",
    "unplug-importer",
    "unplug-both",
    "replug",
    "evict",
    "kill",
    "aer",
    "no-ack",
)
#: How often each kind is drawn (no-ack reboots the guest twice: rare).
WEIGHTS = {
    "unplug-exporter": 4,
    "unplug-importer": 2,
    "unplug-both": 2,
    "replug": 1,
    "evict": 2,
    "kill": 2,
    "aer": 1,
    "no-ack": 1,
}
#: Kinds that need the kernel's fault-injection debugfs files (see :func:`injection_kinds`).
INJECTION_FAULTS = ("failslab", "fail-page-alloc")
ALL_FAULTS = FAULTS + INJECTION_FAULTS
WEIGHTS.update({"failslab": 2, "fail-page-alloc": 2})
#: kernel options each injection kind needs (besides CONFIG_FAULT_INJECTION_DEBUG_FS)
INJECTION_OPTIONS = {"failslab": "CONFIG_FAILSLAB", "fail-page-alloc": "CONFIG_FAIL_PAGE_ALLOC"}
NATIVE_SHARE = 0.15
EXPORTER, IMPORTER = "gpu-exporter", "importer"
#: edu moves a piece of at most 2 KiB in two transfers of ~100 ms of virtual time each.
EDU_WINDOW_S = 0.1


def injection_kinds(config: str) -> tuple[str, ...]:
    """The injection kinds a kernel with this ``.config`` text supports."""
    options = {line.split("=", 1)[0] for line in config.splitlines() if line.strip().endswith("=y")}
    if "CONFIG_FAULT_INJECTION_DEBUG_FS" not in options:
        return ()
    return tuple(k for k in INJECTION_FAULTS if INJECTION_OPTIONS[k] in options)


def _stream(rng: random.Random, name: str = "stream", fail: bool = False) -> tuple[App, int]:
    """A DMA stream app and its number of DMAs (``fail``: each marked ``fail=1``)."""
    count = rng.randint(3, 8)
    length = rng.choice((512, 2048))
    mark = " fail=1" if fail else ""
    dmas = tuple(
        f"dma-write off={i * 0x1000:#x} len={length} pattern={0x10 + i:#x}{mark}"
        for i in range(count)
    )
    # the pause keeps the mappings alive for a fault that comes after the last DMA
    app = App(
        name=name,
        hold=False,
        setup=("create size=64K", "mmap", "reg"),
        then=(*dmas, "sleep ms=500", "dereg"),
    )
    return app, count


def _during_dma(rng: random.Random, app: str, count: int) -> Step:
    """Wait until the stream printed its k-th DMA (the next one is in flight), plus a delay
    inside edu's transfer window."""
    k = rng.randint(1, max(1, count - 2))
    delay = round(rng.uniform(0.0, 2 * EDU_WINDOW_S), 3)
    return Step(wait=Wait(app=app, op="dma-write", count=k, seconds=delay))


def _delay(rng: random.Random) -> Step:
    return Step(wait=Wait(seconds=round(rng.uniform(0.0, 0.3), 3)))


def scenario(rng: random.Random, kind: str, name: str) -> Scenario:
    """One scenario of fault ``kind``, drawn from ``rng``."""
    if kind not in ALL_FAULTS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(ALL_FAULTS)}")
    machine = "default"
    if kind != "no-ack" and rng.random() < NATIVE_SHARE:
        machine = "native-hotplug"
    injection = kind in INJECTION_FAULTS
    steps: list[Step] = []
    if injection:
        fault_kind = FaultKind.FAILSLAB if kind == "failslab" else FaultKind.FAIL_PAGE_ALLOC
        steps.append(
            Step(
                fault=Fault(
                    fault_kind,
                    probability=rng.choice((25, 50, 100)),
                    interval=rng.randint(1, 3),
                    times=rng.choice((1, 2, -1)),
                )
            )
        )
    app, count = _stream(rng, fail=injection)
    steps += [Step(app=app), _during_dma(rng, app.name, count)]
    kernel_args: tuple[str, ...] = ()
    if kind == "unplug-exporter":
        steps.append(Step(unplug=Unplug(EXPORTER)))
    elif kind == "unplug-importer":
        steps.append(Step(unplug=Unplug(IMPORTER)))
    elif kind == "unplug-both":
        first, second = rng.choice(((EXPORTER, IMPORTER), (IMPORTER, EXPORTER)))
        steps += [Step(unplug=Unplug(first)), _delay(rng), Step(unplug=Unplug(second))]
    elif kind == "replug":
        device = rng.choice((EXPORTER, IMPORTER))
        steps += [
            Step(unplug=Unplug(device)),
            Step(plug=Plug(device)),
            Step(unplug=Unplug(device)),
        ]
    elif kind == "evict":
        steps.append(Step(evict=Evict(app=app.name)))
        if rng.random() < 0.5:
            steps += [_delay(rng), Step(unplug=Unplug(EXPORTER))]
    elif kind == "kill":
        steps.append(Step(kill=Kill(app=app.name, signal="KILL")))
        if rng.random() < 0.5:
            steps += [_delay(rng), Step(unplug=Unplug(rng.choice((EXPORTER, IMPORTER))))]
    elif kind == "aer":
        steps += [Step(aer=Aer(EXPORTER, "SDN")), Step(wait=Wait(seconds=1.0))]
    elif injection:  # the stream maps again while allocations fail
        if rng.random() < 0.5:
            steps.append(Step(evict=Evict(app=app.name)))
        else:
            steps.append(Step(unplug=Unplug(EXPORTER)))
    elif kind == "no-ack":
        kernel_args = ("acpiphp.disable=1",)
        steps += [
            Step(unplug=Unplug(EXPORTER, bound=3.0, expect=Outcome.TIMES_OUT)),
            Step(reset=Reset()),
            Step(wait=Wait(qmp_event="DEVICE_DELETED", timeout=60)),
        ]
    allow = ("ENODEV", "SIGBUS", "EIO") if kind == "aer" else ("ENODEV", "SIGBUS")
    if injection:
        allow = ("ENODEV", "SIGBUS", "ENOMEM")
    if kind != "no-ack":  # after a reset the stream is gone with the old guest
        steps.append(Step(finish=Finish(app=app.name, allow_errors=allow)))
    return Scenario(
        name=name,
        description=f"fault {kind} on {machine}",
        machine=machine,
        kernel_args=kernel_args,
        steps=tuple(steps),
    )


def plan(seed: int, runs: int, faults: Sequence[str] = FAULTS) -> list[Scenario]:
    """``runs`` scenarios for ``seed``: the same seed gives the same list."""
    for kind in faults:
        if kind not in ALL_FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(ALL_FAULTS)}")
    rng = random.Random(seed)
    kinds = list(faults)
    weights = [WEIGHTS[k] for k in kinds]
    out = []
    for i in range(runs):
        kind = rng.choices(kinds, weights)[0]
        out.append(scenario(rng, kind, f"s{seed}-r{i + 1:03d}-{kind}"))
    return out
