"""``testbed bisect``'s pure logic: the search over prefixes against a fake oracle, the prefix
verdict from rates, and a patch's subject and diff stat (on the demo series itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import paths
from testbed.kernel import series as kseries
from testbed.regress import search
from testbed.regress.results import Rates, RegressError
from testbed.regress.search import Outcome, Verdict

PASS, FAIL, FLAKY = Verdict.PASS, Verdict.FAIL, Verdict.FLAKY


class Oracle:
    """Prefixes below ``culprit`` pass, from it on they fail; ``flaky`` prefixes are flaky;
    records every prefix it was asked about."""

    def __init__(self, culprit: int, flaky: tuple[int, ...] = ()) -> None:
        self.culprit, self.flaky = culprit, flaky
        self.asked: list[int] = []

    def __call__(self, prefix: int) -> Verdict:
        self.asked.append(prefix)
        if prefix in self.flaky:
            return FLAKY
        return FAIL if prefix >= self.culprit else PASS


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 13])
def test_every_culprit_of_every_length_is_found_within_the_bound(n: int) -> None:
    for culprit in range(1, n + 1):
        oracle = Oracle(culprit)
        result = search.bisect(n, oracle)
        assert result.outcome is Outcome.CULPRIT and result.culprit == culprit, (n, culprit)
        assert (result.good, result.bad) == (culprit - 1, culprit)
        assert len(oracle.asked) <= 2 + (n - 1).bit_length(), (n, culprit, oracle.asked)
        assert len(set(oracle.asked)) == len(oracle.asked), "no prefix is tried twice"
        assert [s.prefix for s in result.steps] == oracle.asked


def test_culprit_first() -> None:
    oracle = Oracle(1)
    result = search.bisect(4, oracle)
    assert result.culprit == 1 and oracle.asked == [0, 4, 2, 1]


def test_culprit_in_the_middle_of_the_demo_series_costs_three_prefixes_beyond_the_base() -> None:
    """The demo series: 4 patches, the 3rd planted. Base (cached), then 4, 2, 3: 3 builds."""
    oracle = Oracle(3)
    result = search.bisect(4, oracle)
    assert result.culprit == 3 and oracle.asked == [0, 4, 2, 3]
    assert [(s.prefix, s.verdict) for s in result.steps] == [
        (0, PASS),
        (4, FAIL),
        (2, PASS),
        (3, FAIL),
    ]


def test_culprit_last() -> None:
    oracle = Oracle(4)
    result = search.bisect(4, oracle)
    assert result.culprit == 4 and oracle.asked == [0, 4, 2, 3]


def test_a_one_patch_series_needs_no_intermediate_prefix() -> None:
    oracle = Oracle(1)
    assert search.bisect(1, oracle).culprit == 1 and oracle.asked == [0, 1]


def test_base_already_fails_stops_at_once() -> None:
    oracle = Oracle(0)
    result = search.bisect(4, oracle)
    assert result.outcome is Outcome.BASE_FAILS and result.culprit is None
    assert oracle.asked == [0] and result.bad == 0


def test_full_series_passes_stops_after_both_ends() -> None:
    oracle = Oracle(99)
    result = search.bisect(4, oracle)
    assert result.outcome is Outcome.FULL_PASSES and result.culprit is None
    assert oracle.asked == [0, 4] and result.good == 4


@pytest.mark.parametrize(
    ("flaky", "asked", "interval"),
    [
        ((2,), [0, 4, 2], (0, 4)),  # the first midpoint
        ((3,), [0, 4, 2, 3], (2, 4)),  # deeper: the interval narrowed first
        ((0,), [0], (-1, None)),  # the base
        ((4,), [0, 4], (0, None)),  # the full series
    ],
)
def test_a_flaky_prefix_is_reported_not_guessed(
    flaky: tuple[int, ...], asked: list[int], interval: tuple[int, int | None]
) -> None:
    oracle = Oracle(3, flaky=flaky)
    result = search.bisect(4, oracle)
    assert result.outcome is Outcome.FLAKY and result.culprit is None
    assert result.flaky == flaky[0] and oracle.asked == asked
    assert (result.good, result.bad) == interval


def test_an_empty_series_is_refused() -> None:
    with pytest.raises(ValueError):
        search.bisect(0, Oracle(1))


@pytest.mark.parametrize(
    ("rates", "verdict"),
    [
        ({"a": Rates(3, 3, 0, 0)}, PASS),
        ({"a": Rates(3, 0, 0, 3)}, PASS),  # skipped: not a failure
        ({"a": Rates(3, 0, 3, 0)}, FAIL),
        ({"a": Rates(3, 2, 1, 0)}, FLAKY),
        ({"a": Rates(3, 2, 1, 0), "b": Rates(3, 0, 3, 0)}, FAIL),  # a steady failure decides
    ],
)
def test_judge_a_prefix(rates: dict[str, Rates], verdict: Verdict) -> None:
    assert search.judge(rates) is verdict


def test_judge_refuses_a_selection_that_ran_nothing() -> None:
    with pytest.raises(RegressError, match="ran no tests"):
        search.judge({})


def demo() -> kseries.Series:
    return kseries.load_series(paths.kernel_config_dir() / "patches" / "demo-buggy-unmap")


def test_the_demo_series_subjects_and_its_planted_patch() -> None:
    subjects = [search.subject(p) for p in demo().patches]
    assert subjects == [
        "pci/p2p: add a function to test peer to peer capability",
        "drivers/base: add a function to test peer to peer capability",
        "mm: unmap_mapping_pages: make the to-end-of-file case explicit",
        "mm/vma: add support for peer to peer to device vma",
    ]


def test_diffstat_counts_the_hunks_as_git_does() -> None:
    ser = demo()
    planted = search.diffstat(ser.patches[2])
    assert planted == (search.FileStat("mm/memory.c", 9, 2),)
    assert search.format_diffstat(planted) == (
        " mm/memory.c |  11 +++++++++--\n 1 file changed, 9 insertions(+), 2 deletions(-)"
    )
    first = search.diffstat(ser.patches[0])
    assert first == (
        search.FileStat("drivers/pci/p2pdma.c", 37, 0),
        search.FileStat("include/linux/pci-p2pdma.h", 6, 0),
    )


def test_diffstat_of_a_new_and_a_deleted_file(tmp_path: Path) -> None:
    text = (
        "Subject: [PATCH] x\n\n---\n"
        "--- /dev/null\n+++ b/new.c\n@@ -0,0 +1,2 @@\n+a\n+b\n"
        "--- a/old.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n"
    )
    patch = kseries.Patch("p", tmp_path / "p", 1, text.encode(), 1)
    assert search.diffstat(patch) == (
        search.FileStat("new.c", 2, 0),
        search.FileStat("old.c", 0, 1),
    )
    assert search.subject(patch) == "x"


def test_prefix_requests_share_the_cache_with_base_and_the_full_series(tmp_path: Path) -> None:
    """Prefix 0 is base's cache entry, prefix n the full series' (whatever the labels); the
    prefixes in between are entries of their own, all in base's work tree."""
    from testbed.config.kernels import BaseConfig
    from testbed.kernel import build, kconfig
    from testbed.kernel.source import Source
    from testbed.regress import runner

    src = Source("tarball", tmp_path / "linux.tar.xz", "sha256:00ff", "linux.tar.xz")
    fragment = kconfig.parse_fragment("CONFIG_A=y\n", tmp_path / "base.config")
    base = build.Request("base", src, BaseConfig.TINYCONFIG, (fragment,), None, "gcc 12")
    ser = demo()
    full = runner.with_series(base, ser, "demo-buggy-unmap")
    prefixes = [runner.with_series(base, runner.prefix(ser, k), f"p{k}") for k in range(5)]
    assert prefixes[0].series is None and prefixes[0].key() == base.key()
    assert prefixes[4].key() == full.key()
    assert len({p.key() for p in prefixes}) == 5
    assert {p.work_id() for p in prefixes} == {base.work_id()}
    third = runner.prefix(ser, 3)
    assert third is not None and [p.name for p in third.patches] == [
        p.name for p in ser.patches[:3]
    ]
    assert third.name == "demo-buggy-unmap[:3]"
