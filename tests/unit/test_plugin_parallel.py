"""Shards and pytest-xdist groups (testbed.pytest_plugin.parallel): the pure partition, then
real pytest sessions (pytester) with ``--testbed-shard`` and ``-n 2 --dist loadgroup``.

In the sessions, a test module defines its own ``shared_p2p_machine`` fixture (no guest), which
stands for the plugin's one: what matters here is only which tests ask for it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from testbed.pytest_plugin.parallel import Shard, group_key, parse_shard, shard_of

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(("text", "shard"), [("1/1", Shard(1, 1)), (" 2/4 ", Shard(2, 4))])
def test_parse_shard(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(shard) == text.strip()


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3", "-1/2", ""])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_group_key_is_the_module_for_shared_guest_tests() -> None:
    assert group_key("tests/p2p/test_claims.py::test_a", ["p2p_vm", "shared_p2p_machine"]) == (
        "tests/p2p/test_claims.py"
    )
    assert group_key("t.py::test_b[x]", ["fresh_p2p_vm"]) == "t.py::test_b[x]"


KEYS = [f"t{m}.py::test_{i}" for m in range(3) for i in range(7)] + ["shared.py"]


@pytest.mark.parametrize("total", [1, 2, 3, 5, 30])
def test_shards_partition_the_keys(total: int) -> None:
    parts = [shard_of(KEYS, Shard(i, total)) for i in range(1, total + 1)]
    assert set().union(*parts) == set(KEYS)
    for a, b in itertools.combinations(parts, 2):
        assert not a & b
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1, "round robin keeps shards within one group of each other"


def test_shards_ignore_collection_order() -> None:
    assert shard_of(KEYS, Shard(2, 3)) == shard_of(list(reversed(KEYS)), Shard(2, 3))


# A module with three shared-guest tests and four tests of their own; each test records which
# worker ran it (``-`` without xdist) into the folder RECORD.
MODULE = """
import os, pathlib, pytest

@pytest.fixture(scope="module")
def shared_p2p_machine():
    return "a stand-in for the module's shared guest"

@pytest.fixture
def record(request):
    folder = pathlib.Path(os.environ["RECORD"])
    name = request.node.nodeid.replace("/", "_").replace(":", "_")
    (folder / name).write_text(os.environ.get("PYTEST_XDIST_WORKER", "-"))

@pytest.mark.parametrize("i", range(3))
def test_shared(shared_p2p_machine, record, i): pass

@pytest.mark.parametrize("i", range(4))
def test_own(record, i): pass
"""


def _ran(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_shards_run_every_test_once_and_keep_the_shared_module_together(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_mod=MODULE)
    seen: list[set[str]] = []
    for index in (1, 2, 3):
        record = pytester.path / f"record-{index}"
        record.mkdir()
        monkeypatch.setenv("RECORD", str(record))
        result = pytester.runpytest(f"--testbed-shard={index}/3")
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        seen.append(set(_ran(record)))
    assert sum(len(s) for s in seen) == 7 and len(set().union(*seen)) == 7
    shared = [s for s in seen if any("test_shared" in name for name in s)]
    assert len(shared) == 1 and sum("test_shared" in n for n in shared[0]) == 3


def test_bad_shard_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--testbed-shard=4/3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--testbed-shard: shard '4/3': I must be between 1 and N*"])


def test_shared_guest_tests_carry_their_module_as_xdist_group(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mod=MODULE)
    items, _ = pytester.inline_genitems()
    groups = {
        item.name: [m.kwargs.get("name") for m in item.iter_markers("xdist_group")]
        for item in items
    }
    assert groups == {
        **{f"test_shared[{i}]": ["test_mod.py"] for i in range(3)},
        **{f"test_own[{i}]": [] for i in range(4)},
    }


def test_xdist_runs_every_test_once_shared_guest_tests_together_where_xdist_can(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test once over two workers. pytest-xdist 3.8 with pytest 9.2 ignores
    ``xdist_group`` (pytest-dev/pytest-xdist#1386: its node-id suffix no longer takes), so
    there each worker that gets a shared-guest test boots its own guest; where the groups
    work (their ``@group`` suffix shows in the report), one worker runs them all."""
    pytester.makepyfile(test_mod=MODULE)
    record = pytester.path / "record"
    record.mkdir()
    monkeypatch.setenv("RECORD", str(record))
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-v")
    result.assert_outcomes(passed=7)
    ran = _ran(record)
    assert len(ran) == 7 and set(ran.values()) <= {"gw0", "gw1"}
    if any("test_shared[0]@test_mod.py" in line for line in result.outlines):
        assert len({w for name, w in ran.items() if "test_shared" in name}) == 1
