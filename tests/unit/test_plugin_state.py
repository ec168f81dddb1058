"""Artifact folder names for test ids (testbed.pytest_plugin.state.folder_name).

The plugin's ``artifact_dir`` fixture empties ``<artifacts>/<folder_name(nodeid)>`` at the
start of every test, so two tests whose ids map to one name would wipe each other's folders.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from testbed.pytest_plugin.state import folder_name

SAFE = re.compile(r"[A-Za-z0-9_.=-]+")


@pytest.mark.parametrize(
    ("nodeid", "name"),
    [
        (
            "tests/p2p/test_claims.py::test_claim6_unplug_waits[acpi]",
            "tests-p2p-test_claims.py--test_claim6_unplug_waits-acpi",
        ),
        (
            "tests/vm/test_machine.py::TestBoot::test_ssh",
            "tests-vm-test_machine.py--TestBoot--test_ssh",
        ),
        ("tests/p2p/test_x.py::test_y[size=64K]", "tests-p2p-test_x.py--test_y-size=64K"),
        ("tests/p2p/test_x.py::test_y[a-b/c]", "tests-p2p-test_x.py--test_y-a-b-c"),
        ("plain_name-1.0", "plain_name-1.0"),
    ],
)
def test_readable_names(nodeid: str, name: str) -> None:
    assert folder_name(nodeid) == name


@pytest.mark.parametrize(
    "nodeid",
    [
        "tests/p2p/test_claims.py::test_claim1[$(rm -rf ~)]",
        "tests/p2p/test_claims.py::test_claim1[../../etc]",
        "/abs/path.py::test[\\x00\n\t*?<>|\"':]",
        "tests/p2p/test_claims.py::test_" + "long_" * 40 + "[p/q]",
    ],
)
def test_names_are_file_system_safe(nodeid: str) -> None:
    name = folder_name(nodeid)
    assert SAFE.fullmatch(name), name
    assert not name.startswith("-") and not name.endswith("-")
    assert "/" not in name and name not in (".", "..")
    assert len(name) <= 120


def test_name_of_exactly_120_characters_is_kept() -> None:
    nodeid = "t" * 120
    assert folder_name(nodeid) == nodeid
    assert folder_name("t" * 121) != "t" * 121


def test_long_ids_get_a_hash_suffix() -> None:
    nodeid = "tests/p2p/test_claims.py::test_" + "x" * 200 + "[acpi]"
    name = folder_name(nodeid)
    assert len(name) == 120
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:10]
    assert name == "tests-p2p-test_claims.py--test_" + "x" * 78 + "-" + digest
    assert folder_name(nodeid) == name  # stable across runs


def test_long_ids_differing_only_at_the_end_get_distinct_names() -> None:
    base = "tests/p2p/test_claims.py::test_" + "y" * 150
    names = {folder_name(f"{base}[{p}]") for p in ("acpi", "native", "tcg", "kvm")}
    assert len(names) == 4


def test_distinct_readable_ids_give_distinct_names() -> None:
    ids = [
        "tests/p2p/test_claims.py::test_claim6_unplug_waits[acpi]",
        "tests/p2p/test_claims.py::test_claim6_unplug_waits[native]",
        "tests/p2p/test_claims.py::test_claim7_unplug_waits[acpi]",
        "tests/p2p/test_other.py::test_claim6_unplug_waits[acpi]",
    ]
    assert len({folder_name(i) for i in ids}) == len(ids)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("tests/p2p/test_x.py::test_load[a b]", "tests/p2p/test_x.py::test_load[a/b]"),
        (
            "tests/p2p/test_x.py::test_load[exporter first]",
            "tests/p2p/test_x.py::test_load[exporter-first]",
        ),
    ],
)
def test_ids_differing_only_in_unsafe_characters_get_distinct_names(a: str, b: str) -> None:
    assert folder_name(a) != folder_name(b)
