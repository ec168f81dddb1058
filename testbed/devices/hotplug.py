"""Hot-unplug and hot-plug of a machine's devices through QMP, bounded, with evidence.

Unplug is ``device_del`` followed by a wait for ``DEVICE_DELETED`` *for that device id*; QEMU
sends it only once the guest has let the device go (ACPI eject, or pciehp powering the slot
off), so a guest whose driver never releases the device ends in :class:`UnplugTimeout` at the
bound, never in a hang.

On the native PCIe path QEMU refuses ``device_del`` while the slot's power indicator blinks
(just after boot or a plug: "guest is busy"). That window is waited out within the same bound,
with a notice, instead of failing at random. ``query-pci`` is saved before and after each
operation into the run folder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from testbed.config.schema import Hotplug
from testbed.deadline import Deadline
from testbed.errors import DeadlineExceeded, HotplugError, QMPError, UnplugTimeout
from testbed.qemu import cmdline
from testbed.qemu.machine import Machine
from testbed.qemu.qmp import event_time

log = logging.getLogger(__name__)

#: Default bounds: ACPI completes in ~0.1 s, native in ~6 s (pciehp's 5 s button delay).
UNPLUG_TIMEOUT = {Hotplug.ACPI: 20.0, Hotplug.NATIVE: 40.0}
_BUSY = ("guest is busy", "power indicator blinking")
_PENDING = "in the process of unplug"


@dataclass(frozen=True)
class HotplugResult:
    device_id: str
    operation: str  #: "unplug" or "plug"
    seconds: float  #: from the first device_del/device_add to DEVICE_DELETED (or to the reply)
    busy_retries: int  #: how often QEMU said "guest is busy" first
    event: dict[str, Any] | None  #: the DEVICE_DELETED event, for unplug

    @property
    def event_time(self) -> float | None:
        return event_time(self.event) if self.event else None


def _save_query_pci(vm: Machine, label: str) -> None:
    vm._hotplug_seq += 1
    try:
        pci = vm.qmp.execute("query-pci", timeout=10)
    except Exception as exc:
        pci = {"error": str(exc)}
    path = vm.run_dir / f"query-pci-{vm._hotplug_seq:02d}-{label}.json"
    path.write_text(json.dumps(pci, indent=1) + "\n")


def address_in(query_pci: Any, qdev_id: str) -> str | None:
    """The guest's PCI address (``0000:02:00.0``) of the device QEMU knows as ``qdev_id``, from
    a ``query-pci`` reply (buses nest under ``pci_bridge``); None when it is not there. The bus
    numbers are the ones the guest programmed, so this is the name the guest's sysfs uses."""

    def walk(devices: Any) -> str | None:
        for dev in devices or ():
            if dev.get("qdev_id") == qdev_id:
                return f"0000:{dev['bus']:02x}:{dev['slot']:02x}.{dev['function']}"
            found = walk((dev.get("pci_bridge") or {}).get("devices"))
            if found:
                return found
        return None

    for bus in query_pci if isinstance(query_pci, list) else ():
        found = walk(bus.get("devices"))
        if found:
            return found
    return None


def guest_address(vm: Machine, device_id: str) -> str | None:
    """Where the guest sees ``device_id`` on its PCI bus now (None: not plugged), from QMP."""
    return address_in(vm.qmp.execute("query-pci", timeout=10), device_id)


def _busy(exc: QMPError) -> bool:
    return any(marker in exc.reply for marker in _BUSY)


def _send(
    vm: Machine, command: str, args: dict[str, Any], deadline: Deadline, device_id: str
) -> int:
    """Send ``command``, retrying while the slot is busy; returns the number of retries."""
    retries = 0
    while True:
        try:
            vm.qmp.execute(command, args, timeout=deadline.cap(10))
            return retries
        except QMPError as exc:
            if _PENDING in exc.reply:
                return retries  # an earlier request is still pending: wait for its event
            if not _busy(exc):
                raise HotplugError(f"{command} {device_id!r} refused by QEMU: {exc.reply}") from exc
            if retries == 0:
                log.info(
                    "%s %s: QEMU says the guest is busy (slot power indicator blinking after a "
                    "recent plug or boot); retrying for up to %.0f s",
                    command,
                    device_id,
                    deadline.remaining(),
                )
            retries += 1
            if deadline.expired():
                raise HotplugError(
                    f"{command} {device_id!r}: the slot stayed busy for {deadline.seconds:g} s "
                    f"({exc.reply})"
                ) from exc
            time.sleep(deadline.cap(0.25))


def unplug(vm: Machine, device_id: str, *, timeout: float | None = None) -> HotplugResult:
    """``device_del`` ``device_id`` and wait for the guest to release it (DEVICE_DELETED)."""
    vm.spec.device(device_id)  # an unknown id fails here, listing the valid ones
    bound = timeout if timeout is not None else UNPLUG_TIMEOUT[vm.spec.hotplug]
    deadline = Deadline(bound, f"hot-unplug of {device_id!r}")
    _save_query_pci(vm, f"before-unplug-{device_id}")
    since = len(vm.qmp.events)
    start = time.monotonic()
    retries = _send(vm, "device_del", {"id": device_id}, deadline, device_id)
    try:
        event = vm.qmp.wait_event(
            lambda e: (
                e.get("event") == "DEVICE_DELETED" and e.get("data", {}).get("device") == device_id
            ),
            deadline,
            since=since,
            alive=vm.alive,
        )
    except DeadlineExceeded as exc:
        vm.check_alive()
        raise UnplugTimeout(
            f"the guest never acknowledged the unplug of {device_id!r}: no DEVICE_DELETED within "
            f"{bound:g} s on the {vm.spec.hotplug.value} hotplug path. The guest driver may be "
            "holding the device, or the guest has no working hotplug driver (acpiphp.disable=1, "
            f"pcie_ports=compat). See {vm.run_dir / 'qmp.log'} and {vm.console_log}."
        ) from exc
    seconds = time.monotonic() - start
    _release_backend(vm, device_id)
    _save_query_pci(vm, f"after-unplug-{device_id}")
    log.info("unplugged %s in %.2f s", device_id, seconds)
    return HotplugResult(device_id, "unplug", seconds, retries, event)


def _new_backend(vm: Machine, device_id: str, size: int) -> str:
    """A fresh memory backend over the same backing file, for a re-plugged device.

    QEMU 7.2 aborts (``qemu_ram_set_idstr: Assertion `!new_block->idstr[0]'``) when an
    ivshmem device is re-added on the memory backend its predecessor used, so every plug gets
    a new backend object. The file is the same, so the BAR's contents survive the re-plug.
    """
    vm.memdev_generation[device_id] = vm.memdev_generation.get(device_id, 0) + 1
    memdev = f"{cmdline.memdev_id(vm.spec.device(device_id))}-{vm.memdev_generation[device_id]}"
    vm.qmp.execute(
        "object-add",
        {
            "qom-type": "memory-backend-file",
            "id": memdev,
            "mem-path": str(vm.backing_file(device_id)),
            "size": size,
            "share": True,
        },
    )
    vm.memdevs[device_id] = memdev
    return memdev


def _release_backend(vm: Machine, device_id: str) -> None:
    """Delete the unplugged device's memory backend (best effort: evidence, not a step)."""
    dev = vm.spec.device(device_id)
    if cmdline.backing_size(vm.definition, dev) is None:
        return
    memdev = vm.memdevs.pop(device_id, cmdline.memdev_id(dev))
    try:
        vm.qmp.execute("object-del", {"id": memdev}, timeout=10)
    except QMPError as exc:
        log.debug("object-del %s: %s", memdev, exc.reply)


def plug(vm: Machine, device_id: str, *, timeout: float = 30.0) -> HotplugResult:
    """``device_add`` ``device_id`` again, with exactly the properties it booted with."""
    dev = vm.spec.device(device_id)
    deadline = Deadline(timeout, f"hot-plug of {device_id!r}")
    _save_query_pci(vm, f"before-plug-{device_id}")
    props: dict[str, Any] = cmdline.device_properties(vm.definition, dev)
    size = cmdline.backing_size(vm.definition, dev)
    if size is not None:
        props["memdev"] = _new_backend(vm, device_id, size)
    start = time.monotonic()
    retries = _send(vm, "device_add", props, deadline, device_id)
    seconds = time.monotonic() - start
    _save_query_pci(vm, f"after-plug-{device_id}")
    return HotplugResult(device_id, "plug", seconds, retries, None)
