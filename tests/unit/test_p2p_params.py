"""The drivers' module parameters and their documented defaults (testbed.p2p.params), and the
exporter's debugfs ``live`` file checked against its counters (testbed.p2p.debugfs)."""

from __future__ import annotations

import re

import pytest

from testbed import paths
from testbed.p2p import debugfs, params

README = paths.PROJECT_ROOT / "qemu-devices" / "p2p" / "README.md"

#: What a stock guest prints for ``params.read`` (no CONFIG_PCI_P2PDMA: no use_p2pdma_distance).
STOCK = """p2p_exporter allow_p2p Y
p2p_exporter deny_importer (null)
p2p_exporter evict_wait_ms 2000
p2p_exporter path compat
p2p_exporter plant_race_ms 0
p2p_exporter refuse_pin Y
p2p_exporter unplug_wait_ms 5000
p2p_importer dma_timeout_ms 5000
p2p_importer lazy_unmap N
p2p_importer path compat
p2p_importer use_irq Y
"""


def test_a_stock_guest_is_at_the_defaults() -> None:
    parsed = params.parse(STOCK)
    assert parsed["p2p_exporter"]["deny_importer"] == "(null)"
    assert params.differences(parsed) == []
    with_p2pdma = params.parse(STOCK + "p2p_exporter use_p2pdma_distance Y\n")
    assert params.differences(with_p2pdma) == []
    # ``path`` says how the drivers were built, whichever it is
    assert params.differences(params.parse(STOCK.replace("compat", "vm_ops"))) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("unplug_wait_ms 5000", "unplug_wait_ms 4000"),
            "p2p_exporter.unplug_wait_ms = '4000', documented default '5000'",
        ),
        (("lazy_unmap N", "lazy_unmap Y"), "p2p_importer.lazy_unmap = 'Y'"),
        (("p2p_importer use_irq Y\n", ""), "p2p_importer.use_irq is missing"),
        (
            ("deny_importer (null)", "deny_importer 0000:02:00.0"),
            "p2p_exporter.deny_importer = '0000:02:00.0'",
        ),
        (
            ("use_irq Y\n", "use_irq Y\np2p_importer spin 1\n"),
            "p2p_importer.spin = '1' is not documented",
        ),
    ],
)
def test_a_changed_default_is_named(change: tuple[str, str], message: str) -> None:
    (wrong,) = params.differences(params.parse(STOCK.replace(*change)))
    assert wrong.startswith(message)


def test_an_optional_parameter_off_its_default_is_named() -> None:
    (wrong,) = params.differences(params.parse(STOCK + "p2p_exporter use_p2pdma_distance N\n"))
    assert wrong == "p2p_exporter.use_p2pdma_distance = 'N', documented default 'Y'"


def test_the_defaults_are_those_the_readme_documents() -> None:
    text = README.read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| (\S+) \|", text, re.M))
    for name, value in params.DEFAULTS["p2p_exporter"].items():
        documented = table[name].strip('"')
        assert (documented or "(null)") == value, name
    assert table["use_p2pdma_distance"] == params.OPTIONAL["p2p_exporter"]["use_p2pdma_distance"]
    prose = dict(re.findall(r"`(\w+)` \((\w+)[;)]", text))
    for name, value in params.DEFAULTS["p2p_importer"].items():
        assert prose[name] == value, name


def test_resettable_values_are_the_defaults() -> None:
    for module, values in params.RESETTABLE.items():
        for name, value in values.items():
            assert params.DEFAULTS[module][name] == value


# -- debugfs "live" -----------------------------------------------------------------------

STATS = {"maps": 10, "unmaps": 10, "imports": 0}


def test_live_parses_and_is_idle_at_zero() -> None:
    live = debugfs.parse_live("records 0\nimporter_refs 0\n")
    assert live == debugfs.Live(0, 0) and live.idle
    assert not debugfs.parse_live("records 1\nimporter_refs 1\n").idle
    assert not debugfs.parse_live("records 0\nimporter_refs 1\n").idle


def test_live_without_its_fields_is_an_error() -> None:
    with pytest.raises(AssertionError, match=r"lacks \['importer_refs'\]"):
        debugfs.parse_live("records 0\n")


def test_balance_holds_for_a_clean_exporter() -> None:
    assert debugfs.balance_problems(debugfs.Live(0, 0), STATS) == []
    busy = {"maps": 12, "unmaps": 10, "imports": 2}
    assert debugfs.balance_problems(debugfs.Live(2, 2), busy) == []


def test_a_record_kept_by_unmap_shows_although_the_counters_balance() -> None:
    # the planted leak: unmap counted and 'imports' decremented, but the record stays
    problems = debugfs.balance_problems(debugfs.Live(1, 1), STATS)
    assert problems == [
        "1 live records but the 'imports' counter says 0",
        "maps 10 - unmaps 10 is less than the 1 live records",
    ]


def test_a_reference_kept_without_its_record_shows() -> None:
    assert debugfs.balance_problems(debugfs.Live(0, 3), STATS) == [
        "3 importer references held for 0 live records"
    ]
