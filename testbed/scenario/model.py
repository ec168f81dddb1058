"""Scenarios as data: a machine, module parameters and a sequence of steps, all frozen.

A scenario file (YAML, loaded strictly by :mod:`testbed.scenario.loader`) reads::

    name: claim5-unplug-zaps
    machine: default
    steps:
      - app: {name: user, setup: [create size=64K, mmap, touch], then: [touch expect=SIGBUS]}
      - unplug: {device: gpu-exporter}
      - finish: {app: user, expect-ok: true}

Each step is a mapping with exactly one key, the step's *kind*; its value holds the kind's
arguments. The kinds, one dataclass each:

``app``
    start ``p2pctl`` in the background: ``setup`` runs first, then (``hold: true``, the
    default) it waits at a ``hold`` until a ``go`` step, then runs ``then``. With ``hold:
    false`` it runs straight through -- a background DMA stream next to the host's faults.
``go`` / ``finish`` / ``kill``
    release a held app; wait for an app to exit and judge its results; kill it (the process
    that holds the mappings) with a signal.
``p2pctl``
    one ``p2pctl`` in the foreground (create, mmap, reg, dereg, DMA, evict, ...).
``evict``
    move an object through the exporter's debugfs trigger, from outside its owner.
``unplug`` / ``plug``
    ``device_del`` / ``device_add`` of any device of the machine, on its hotplug path; an
    unplug is expected to complete within ``bound`` seconds, or (``expect: times-out``, for a
    guest that never acknowledges) to fail within it.
``reset``
    QMP ``system_reset``; the guest reboots and the runner reconnects.
``aer``
    HMP ``pcie_aer_inject_error`` on a device's root port (``SDN`` by default).
``wait``
    a fixed delay, optionally after an event: an app printing its ``count``-th result of
    ``op`` (say the ``queued`` line of an async DMA, which starts edu's ~100 ms window), a
    line of the drivers' timeline, or a QMP event.
``params``
    write module parameters (``p2p_exporter.unplug_wait_ms: 1500``).
``module``
    load, unload or reload a kernel module in the guest (``load: p2p_importer``, ``unload:
    p2p_exporter``, ``reload: p2p_importer``; ``params`` for the load). ``expect`` is the
    outcome: ``ok`` or the kernel's errno (``EAGAIN``: in use -- an open file, a mapping, a
    module using its symbols; ``EEXIST``: loaded already; ``ENOENT``: an unknown symbol on
    load, not loaded on unload).
``fault``
    arm (or, ``disarm: true``, disarm) a kernel fault-injection capability, ``failslab`` or
    ``fail_page_alloc`` (``/sys/kernel/debug/<kind>``, with ``task-filter``): the kernel
    allocations of a p2pctl command marked ``fail=1`` (``reg fail=1 expect=ENOMEM``) then
    fail, with ``probability`` (percent), ``interval``, ``times`` and ``space`` as the
    kernel's fault-injection documentation defines them; nothing else in the guest is
    affected. Needs a kernel with ``CONFIG_FAULT_INJECTION_DEBUG_FS`` and the capability
    (``--kernel faults``: ``guest-kernel-config/faults.config``, or ``debug.config``).
``expect``
    check the guest now: counters, bytes in the exporter's BAR file, devices present.

Several importers: on a machine with more than one importer device (``two-importers``), an
app or p2pctl command picks one with ``imp=<device id>`` (``reg imp=importer2``, ``dma-write
imp=importer2``); without ``imp=`` it uses the machine's first importer. One process can so
register one mapping of an exporter object with both. A device id that is not an importer of
the machine is an error at load time.

Whatever the steps, the run is also judged as a whole (:mod:`testbed.scenario.verdict`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, fields

from testbed.config.loader import Size

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")
_PARAM = re.compile(r"^(p2p_exporter|p2p_importer)\.[a-z_]+$")
_COUNTER = re.compile(r"^(exporter|importer)\.[a-z_]+$")
_CHECK = re.compile(r"^\s*(==|<=|>=|<|>|!=)?\s*(-?\d+)\s*$")
SIGNALS = ("KILL", "TERM", "INT", "USR1")


#: The commands ``p2pctl`` knows (``run()`` in ``qemu-devices/p2p/p2pctl/p2pctl.c``; a unit
#: test keeps the two in step): an app or p2pctl step naming another is an error at load time,
#: not an ``EINVAL`` line in the middle of a run.
P2PCTL_COMMANDS = frozenset(
    {
        "create",
        "destroy",
        "info",
        "mmap",
        "munmap",
        "mprotect",
        "mremap",
        "fork",
        "write",
        "read",
        "touch",
        "reg",
        "dereg",
        "mrinfo",
        "dma-write",
        "dma-read",
        "dma-wait",
        "evict",
        "stats",
        "hold",
        "sleep",
        "mark",
        "insmod",
        "rmmod",
        "close-exporter",
        "close-importer",
        "exit",
    }
)


def _check_commands(commands: tuple[str, ...]) -> None:
    """Every word without ``=`` (p2pctl's command words; ``;`` separates too) is a command."""
    for command in commands:
        for word in command.replace(";", " ").split():
            if "=" not in word and word not in P2PCTL_COMMANDS:
                raise ValueError(
                    f"{word!r} (in {command!r}) is not a p2pctl command; known: "
                    + ", ".join(sorted(P2PCTL_COMMANDS))
                )
        for name in importer_refs((command,)):
            _check_name(name, "importer (imp=)")


def importer_refs(commands: tuple[str, ...]) -> list[str]:
    """The importer device ids ``commands`` name with ``imp=``, first use first, once each."""
    names: list[str] = []
    for command in commands:
        for word in command.replace(";", " ").split():
            if word.startswith("imp=") and word[4:] not in names:
                names.append(word[4:])
    return names


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"{what} {name!r} must start with a letter and use letters, digits, '-' or '_'"
        )


@dataclass(frozen=True)
class App:
    """A ``p2pctl`` process started in the background (see the module docstring)."""

    name: str = "app"
    setup: tuple[str, ...] = ()
    then: tuple[str, ...] = ()
    hold: bool = True
    exporter: str | None = None  #: ``/dev/p2p-exporterN``; None: p2pctl's default
    importer: str | None = None
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "app name")
        for command in (*self.setup, *self.then):
            if command.split()[:1] == ["hold"]:
                raise ValueError("do not write 'hold' yourself: use hold: true and a go step")
        if not self.setup and not self.then:
            raise ValueError("an app needs at least one command in setup or then")
        _check_commands((*self.setup, *self.then))

    @property
    def commands(self) -> tuple[str, ...]:
        """The commands in the order p2pctl runs them (``hold`` included when held)."""
        return (*self.setup, "hold", *self.then) if self.hold else (*self.setup, *self.then)


@dataclass(frozen=True)
class Go:
    """Release a held app; it runs its ``then`` commands while the next steps go on."""

    app: str = "app"
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Finish:
    """Wait for an app to exit; judge what it printed.

    ``expect_ok``: every command went as expected (p2pctl exit 0). Otherwise each failed
    command's error (``ENODEV``, ``SIGBUS``, ...) must be one of ``allow_errors``.
    """

    app: str = "app"
    expect_ok: bool = False
    allow_errors: tuple[str, ...] = ("ENODEV", "SIGBUS")
    timeout: float = 60.0
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Kill:
    """Kill an app (the process holding the mappings) with ``signal``."""

    app: str = "app"
    signal: str = "KILL"
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, got {self.signal!r}")


@dataclass(frozen=True)
class P2pctl:
    """One ``p2pctl`` in the foreground."""

    commands: tuple[str, ...]
    expect_ok: bool = True
    timeout: float = 60.0
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_commands(self.commands)


@dataclass(frozen=True)
class Evict:
    """Evict an object through debugfs: ``app``'s first object, or object ``handle``."""

    app: str | None = None
    handle: int | None = None
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.app is None) == (self.handle is None):
            raise ValueError("give exactly one of app (its first object) and handle")


class Outcome(enum.Enum):
    COMPLETES = "completes"  #: DEVICE_DELETED within the bound
    TIMES_OUT = "times-out"  #: no DEVICE_DELETED, and the failure comes within the bound


@dataclass(frozen=True)
class Unplug:
    """``device_del`` + wait for ``DEVICE_DELETED``; ``bound`` None: the path's default."""

    device: str
    bound: float | None = None
    expect: Outcome = Outcome.COMPLETES
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Plug:
    """``device_add`` the device again, as it was booted."""

    device: str
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Reset:
    """QMP ``system_reset``; wait for the guest to come back (within ``timeout``)."""

    timeout: float = 180.0
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Aer:
    """Inject a PCIe AER error on the root port ``device`` sits behind."""

    device: str
    error: str = "SDN"
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_]+|0x[0-9a-fA-F]+", self.error):
            raise ValueError(f"error must be a QEMU AER error name or 0x value, got {self.error!r}")


@dataclass(frozen=True)
class Wait:
    """Wait ``seconds``; first, if given, for an event (at most ``timeout``).

    Events: ``app`` printed its ``count``-th result of ``op``; the drivers' timeline has a
    line starting with ``guest_event`` (``remove done``); QMP sent ``qmp_event``.
    """

    seconds: float = 0.0
    app: str | None = None
    op: str | None = None
    count: int = 1
    guest_event: str | None = None
    qmp_event: str | None = None
    timeout: float = 30.0
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.seconds < 0 or self.timeout <= 0:
            raise ValueError("seconds must be >= 0 and timeout > 0")
        if (self.app is None) != (self.op is None):
            raise ValueError("app and op go together: wait for app's count-th result of op")
        if self.count < 1:
            raise ValueError("count starts at 1")


@dataclass(frozen=True)
class Params:
    """Module parameters to write, ``module.name: value``."""

    values: dict[str, str]
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        for key in self.values:
            if not _PARAM.match(key):
                raise ValueError(
                    f"parameter {key!r} must be p2p_exporter.NAME or p2p_importer.NAME"
                )


#: What a ``module`` step may expect: ``ok`` or an errno name p2pctl prints.
MODULE_OUTCOMES = (
    "ok", "EAGAIN", "EBUSY", "EEXIST", "EINVAL", "ENOENT", "ENOEXEC", "ENODEV", "ENOMEM", "EPERM",
)  # fmt: skip
_MODULE_NAME = re.compile(r"^[a-z0-9_]{1,55}$")


@dataclass(frozen=True)
class Module:
    """Load, unload or reload (unload, then load) one kernel module; exactly one of the three.

    The runner finds ``<name>.ko`` among the testbed's guest modules (``/lib/modules/testbed``,
    the P2P drivers) or the kernel's modules in the guest; ``expect`` is the outcome (of the
    first part that fails, for ``reload``). Unloading a P2P driver that the guest needs back
    is the scenario's to undo: a run ends judged unusable while a device is left unbound.
    """

    load: str | None = None
    unload: str | None = None
    reload: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    expect: str = "ok"
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        given = [n for n in (self.load, self.unload, self.reload) if n is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of load, unload and reload (a module name)")
        if not _MODULE_NAME.match(given[0]):
            raise ValueError(
                f"module name {given[0]!r}: lower-case letters, digits and '_' (p2p_importer)"
            )
        if self.params and self.unload is not None:
            raise ValueError("params go with load or reload, not unload")
        for key, value in self.params.items():
            if not re.fullmatch(r"[a-z0-9_]+", key) or not re.fullmatch(r"[A-Za-z0-9_.:-]*", value):
                raise ValueError(f"module parameter {key}={value!r}: a name and a plain value")
        if self.expect not in MODULE_OUTCOMES:
            raise ValueError(
                f"expect must be one of {', '.join(MODULE_OUTCOMES)}, got {self.expect!r}"
            )

    @property
    def name(self) -> str:
        return self.load or self.unload or self.reload or ""

    @property
    def op(self) -> str:
        return "load" if self.load else "unload" if self.unload else "reload"


class FaultKind(enum.Enum):
    """A fault-injection capability in ``/sys/kernel/debug/``."""

    FAILSLAB = "failslab"  #: kmalloc / kmem_cache_alloc
    FAIL_PAGE_ALLOC = "fail_page_alloc"  #: alloc_pages (order 0 included)


@dataclass(frozen=True)
class Fault:
    """Arm ``kind`` for the p2pctl commands marked ``fail=1`` (see the module docstring)."""

    kind: FaultKind
    probability: int = 100  #: percent of the candidate allocations that fail
    interval: int = 1  #: only every interval-th candidate may fail
    times: int = 1  #: at most this many failures; -1: no limit
    space: int = 0  #: bytes of allocations let through before any failure
    disarm: bool = False  #: disarm instead (YAML 1.1 reads a key "off" as false)
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 100:
            raise ValueError(f"probability is a percentage, 0..100, got {self.probability}")
        if self.interval < 1 or self.space < 0:
            raise ValueError("interval must be >= 1 and space >= 0")
        if self.times < -1 or self.times == 0:
            raise ValueError("times must be >= 1, or -1 for no limit (disarm: true disarms)")


@dataclass(frozen=True)
class BarBytes:
    """``length`` bytes of the exporter's BAR file, at ``offset`` into ``app``'s first
    object (from its ``create`` result), must all be ``byte``."""

    app: str
    offset: int
    length: int
    byte: int
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.byte <= 255 or self.length < 1 or self.offset < 0:
            raise ValueError("byte must be 0..255, length >= 1, offset >= 0")


def parse_check(text: str) -> tuple[str, int]:
    """``"0"`` -> ``("==", 0)``; ``">= 2"`` -> ``(">=", 2)``."""
    match = _CHECK.match(text)
    if not match:
        raise ValueError(f"expected a number with an optional comparison (>= 2), got {text!r}")
    return match.group(1) or "==", int(match.group(2))


@dataclass(frozen=True)
class Expect:
    """Checks at this point of the run.

    ``counters``: ``exporter.imports: 0``, ``importer.mrs: ">= 1"`` (debugfs totals).
    ``present``: device id -> whether the guest sees it on its PCI bus now.
    """

    counters: dict[str, str] = field(default_factory=dict)
    bar: tuple[BarBytes, ...] = ()
    present: dict[str, str] = field(default_factory=dict)
    healthy: bool = True  #: no kernel problem on the console so far
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        for key, value in self.counters.items():
            if not _COUNTER.match(key):
                raise ValueError(f"counter {key!r} must be exporter.NAME or importer.NAME")
            parse_check(value)
        for key, value in self.present.items():
            if value not in ("on", "off"):
                raise ValueError(f"present.{key}: expected true or false, got {value!r}")


@dataclass(frozen=True)
class Step:
    """One step: exactly one of the fields is set (the YAML key is the step's kind)."""

    app: App | None = None
    go: Go | None = None
    finish: Finish | None = None
    kill: Kill | None = None
    p2pctl: P2pctl | None = None
    evict: Evict | None = None
    unplug: Unplug | None = None
    plug: Plug | None = None
    reset: Reset | None = None
    aer: Aer | None = None
    wait: Wait | None = None
    params: Params | None = None
    module: Module | None = None
    fault: Fault | None = None
    expect: Expect | None = None
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        given = [f.name for f in fields(self) if f.name != "source" and getattr(self, f.name)]
        if len(given) != 1:
            raise ValueError(
                "a step has exactly one kind ("
                + ", ".join(STEP_KINDS)
                + f"); got {', '.join(given) or 'none'}"
            )

    @property
    def kind(self) -> str:
        for name in STEP_KINDS:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("unreachable: __post_init__ checked")

    @property
    def action(self) -> object:
        return getattr(self, self.kind)


STEP_KINDS = tuple(f.name for f in fields(Step) if f.name != "source")


@dataclass(frozen=True)
class Verdict:
    """How a run as a whole is judged (see :mod:`testbed.scenario.verdict`)."""

    healthy: bool = True  #: no Oops, WARNING, KASAN, lockdep, hung task, RCU stall
    unplug_timeouts: int = 0  #: removes allowed to give up waiting for an importer
    late_bytes: bool = True  #: no DMA lands in the exporter's BAR after its zap
    #: no importer's p2p_unmap of an exporter comes after that exporter's remove completed
    remove_waits: bool = True
    slab_growth: Size = field(default_factory=lambda: Size(8 << 20))
    module_refs: bool = True  #: module use counts back where they started
    unplug_bound_acpi: float = 4.5  #: seconds from device_del to DEVICE_DELETED
    unplug_bound_native: float = 12.0


@dataclass(frozen=True)
class Scenario:
    """A machine, how it boots, and what happens to it."""

    name: str
    steps: tuple[Step, ...]
    machine: str = "default"
    description: str = ""
    kernel_args: tuple[str, ...] = ()
    params: dict[str, str] = field(default_factory=dict)
    verdict: Verdict = field(default_factory=Verdict)
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a scenario needs at least one step")
        Params(self.params)  # same rule as a params step

    @property
    def boot_key(self) -> tuple[str, tuple[str, ...]]:
        """Two scenarios with the same key can share one booted guest."""
        return self.machine, self.kernel_args
