"""Where the guest sees a QEMU device: ``hotplug.address_in`` over a captured ``query-pci``.

``tests/data/qmp/query-pci-default.json`` is QEMU 7.2's reply on the ``default`` machine (the
exporter behind root port ``rp-gpu-exporter``, bus 1; the importer behind ``rp-importer``,
bus 2). Scenario runs on ``two-importers`` find each importer's ``/dev`` node through this.
"""

from __future__ import annotations

import json
from pathlib import Path

from testbed.devices.hotplug import address_in

QUERY_PCI = Path(__file__).resolve().parent.parent / "data" / "qmp" / "query-pci-default.json"


def test_devices_behind_root_ports_get_the_guests_bus_numbers() -> None:
    reply = json.loads(QUERY_PCI.read_text())
    assert address_in(reply, "gpu-exporter") == "0000:01:00.0"
    assert address_in(reply, "importer") == "0000:02:00.0"
    assert address_in(reply, "rp-importer") == "0000:00:04.0"  # the port itself, on bus 0


def test_an_absent_device_or_a_malformed_reply_has_no_address() -> None:
    reply = json.loads(QUERY_PCI.read_text())
    assert address_in(reply, "importer2") is None
    assert address_in({"error": "no QMP"}, "importer") is None
    assert address_in([], "importer") is None
