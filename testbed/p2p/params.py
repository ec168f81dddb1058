"""The P2P drivers' module parameters: their documented defaults, read from a guest.

The defaults are those of ``qemu-devices/p2p/README.md`` (a unit test keeps the two in
step). The suite asserts them on every freshly booted guest, before its first test: the
per-test teardown writes :data:`RESETTABLE` back, which would otherwise hide a driver whose
default changed.
"""

from __future__ import annotations

import shlex

from testbed.guest.ssh import GuestShell

MODULES = ("p2p_exporter", "p2p_importer")

#: ``/sys/module/<module>/parameters/<name>`` as a freshly loaded module shows it.
DEFAULTS: dict[str, dict[str, str]] = {
    "p2p_exporter": {
        "refuse_pin": "Y",
        "allow_p2p": "Y",
        "deny_importer": "(null)",  # charp, unset
        "unplug_wait_ms": "5000",
        "evict_wait_ms": "2000",
        "plant_race_ms": "0",  # testing only: the race `testbed campaign` must find
    },
    "p2p_importer": {"lazy_unmap": "N", "dma_timeout_ms": "5000", "use_irq": "Y"},
}

#: Read-only parameters that describe the build rather than set behaviour: ``path`` is
#: ``vm_ops`` or ``compat``, whichever the compile probe chose for this kernel.
DESCRIPTIVE: dict[str, tuple[str, ...]] = {"p2p_exporter": ("path",), "p2p_importer": ("path",)}

#: Parameters that exist only on some kernels: ``use_p2pdma_distance`` needs
#: ``CONFIG_PCI_P2PDMA`` (Debian's stock kernel has none).
OPTIONAL: dict[str, dict[str, str]] = {"p2p_exporter": {"use_p2pdma_distance": "Y"}}

#: The parameters a test may change, with the values the teardown writes back.
RESETTABLE: dict[str, dict[str, str]] = {
    "p2p_exporter": {
        name: DEFAULTS["p2p_exporter"][name]
        for name in ("refuse_pin", "allow_p2p", "unplug_wait_ms", "evict_wait_ms")
    },
    "p2p_importer": {"lazy_unmap": "N"},
}


def parse(text: str) -> dict[str, dict[str, str]]:
    """``<module> <name> <value>`` lines (what :func:`read` prints) to a nested dict."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2:
            out.setdefault(parts[0], {})[parts[1]] = parts[2] if len(parts) == 3 else ""
    return out


def read(shell: GuestShell) -> dict[str, dict[str, str]]:
    """Every parameter of both modules, as the guest shows them now."""
    loops = "; ".join(
        f"for f in /sys/module/{m}/parameters/*; do echo {m} ${{f##*/}} $(cat $f); done"
        for m in MODULES
    )
    return parse(shell.run_check(f"sh -c {shlex.quote(loops)}").stdout)


def differences(actual: dict[str, dict[str, str]]) -> list[str]:
    """How ``actual`` differs from the documented defaults: one line per parameter."""
    out = []
    for module in MODULES:
        got = dict(actual.get(module, {}))
        for name in DESCRIPTIVE.get(module, ()):
            got.pop(name, None)
        for name, value in OPTIONAL.get(module, {}).items():
            if got.get(name, value) != value:
                out.append(f"{module}.{name} = {got[name]!r}, documented default {value!r}")
            got.pop(name, None)
        want = DEFAULTS[module]
        for name, value in want.items():
            if name not in got:
                out.append(f"{module}.{name} is missing (documented default {value!r})")
            elif got[name] != value:
                out.append(f"{module}.{name} = {got[name]!r}, documented default {value!r}")
        out += [
            f"{module}.{name} = {got[name]!r} is not documented" for name in got if name not in want
        ]
    return out


def set_values(shell: GuestShell, values: dict[str, dict[str, str]]) -> None:
    """Write ``values`` into the guest's parameters."""
    shell.run_check(
        "; ".join(
            f"echo {value} > /sys/module/{module}/parameters/{name}"
            for module, names in values.items()
            for name, value in names.items()
        )
    )


def assert_defaults(shell: GuestShell, when: str) -> None:
    """Fail unless every parameter is at its documented default (``when``: for the message)."""
    wrong = differences(read(shell))
    if wrong:
        raise AssertionError(
            f"{when}: module parameters differ from their documented defaults "
            "(qemu-devices/p2p/README.md, testbed/p2p/params.py):\n  " + "\n  ".join(wrong)
        )
