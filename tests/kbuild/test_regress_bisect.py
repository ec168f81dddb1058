"""``testbed regress`` and ``testbed bisect`` for real, on the demo buggy series
(``guest-kernel-config/patches/demo-buggy-unmap``: 4 patches, a planted off-by-one in the 3rd
that makes a zap skip its last page).

Both run the CLI as a user does, in a child process, and read its JSON summary. Cold, bisect
builds three prefixes (4, 2, 3; prefix 0 is ``base``): about a minute each for 4 and 3 (ccache
hits: same headers as ``patched``) and one near-full build for 2 (device.h patched, mm.h not);
afterwards every prefix comes from the cache and each test costs its guest runs (~1-2 min).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import paths

TESTBED = str(Path(sys.executable).parent / "testbed")
DEMO = paths.kernel_config_dir() / "patches" / "demo-buggy-unmap"
LAST_PAGE = "test_claim4_evict_last_page_invalidates_its_importer_and_moves_the_cpu_mapping"
#: cold: three kernel builds on 2 shared cores, plus the guest runs
TIMEOUT = 3600

pytestmark = pytest.mark.vm  # boots guests (through the CLI)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TESTBED, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_bisect_names_the_planted_third_patch_within_three_builds(tmp_path: Path) -> None:
    out = tmp_path / "bisect"
    proc = _cli(
        "bisect", "--series", str(DEMO), "--test", LAST_PAGE, "--out", str(out), cwd=tmp_path
    )
    print(proc.stdout, proc.stderr)  # pytest shows it when the test fails
    assert proc.returncode == 0, f"bisect exited {proc.returncode}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "culprit" and summary["culprit"] == 3
    assert summary["culprit_patch"].startswith("0003-mm-unmap_mapping_pages")
    # base (prefix 0) first, then the full series, then two halvings: 3 prefixes built at most
    assert [(s["prefix"], s["verdict"]) for s in summary["steps"]] == [
        (0, "pass"),
        (4, "fail"),
        (2, "pass"),
        (3, "fail"),
    ]
    assert summary["builds"] <= 3
    assert not summary["steps"][0]["built"], "prefix 0 is base, built by ci/test.sh before"
    # the report a developer reads: the patch, its stat, the failing test's output and folder
    assert "the first failing patch is 3/4: 0003-mm-unmap_mapping_pages" in proc.stdout
    assert "mm: unmap_mapping_pages: make the to-end-of-file case explicit" in proc.stdout
    assert " mm/memory.c |  11 +++++++++--" in proc.stdout
    assert "the zap missed the last page" in proc.stdout
    folder = next(ln for ln in proc.stdout.splitlines() if "artifacts:" in ln).split()[-1]
    assert (Path(folder) / "console.log").is_file(), folder  # the guest the test ran on


def test_regress_on_the_demo_series_names_the_test_that_breaks(tmp_path: Path) -> None:
    out = tmp_path / "regress"
    proc = _cli("regress", "--series", str(DEMO), "-k", "claim4", "--out", str(out), cwd=tmp_path)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 1, "a regression must exit 1"
    summary = json.loads((out / "summary.json").read_text())
    verdicts = {t["test"].rsplit("::", 1)[-1]: t["verdict"] for t in summary["tests"]}
    assert verdicts.pop(LAST_PAGE) == "regression"
    assert verdicts and set(verdicts.values()) == {"unchanged"}, verdicts
    assert summary["counts"]["regression"] == 1 and summary["complete"]
    for side in ("base", "patched"):
        merged = Path(summary[side]["junit"])
        assert merged.is_file() and "<testcase" in merged.read_text()
    assert f"REGRESSION  {LAST_PAGE}" in proc.stdout


def test_regress_compares_kselftest_subtests_like_any_other_test(tmp_path: Path) -> None:
    """Upstream's hmm-tests on base (TEST_HMM, but no madvise or hugetlbfs) against hmm
    (base + hmm.config): each subtest is its own row. The children get the kernels as files
    (``<entry>/bzImage``); the kselftest is still built from each one's own source, found
    through the entry's recorded request."""
    out = tmp_path / "regress"
    proc = _cli(
        "regress", "--base", "base", "--patched", "hmm", "--out", str(out),
        "--", "--kselftest", "mm/hmm-tests",
        cwd=tmp_path,
    )  # fmt: skip
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, "no regression expected from base to hmm"
    summary = json.loads((out / "summary.json").read_text())
    verdicts = {t["test"].rsplit("::", 1)[-1]: t["verdict"] for t in summary["tests"]}
    assert len([t for t in verdicts if t.startswith("hmm-tests.")]) == 58
    assert summary["counts"]["regression"] == 0 and summary["complete"]
    # madvise and THP-on-madvise are what hmm.config adds: the exclusive-access cases go green
    assert verdicts["hmm-tests.hmm.hmm_device_private.exclusive"] == "fix"
    assert verdicts["hmm-tests.hmm.hmm_device_private.anon_write_huge"] == "fix"
