"""``testbed run --kselftest`` on a kernel that cannot run the program: one clear line naming
the kernel and the fix, exit 2, in seconds -- before any guest boots. (A named kernel without
CONFIG_TEST_HMM is tested on fake kernels in tests/unit/test_kselftest.py: every named kernel
here has it, base.config needs TEST_HMM for MMU_NOTIFIER. The real run on the ``hmm`` kernel is
ci/test.sh's, checked by ci/check-kselftest-junit.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed import paths
from testbed.config.kernels import find_kernel_spec
from testbed.kernel import build as kbuild

TESTBED = str(Path(sys.executable).parent / "testbed")


def run(*argv: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [TESTBED, "run", *argv], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )
    return proc, time.monotonic() - started


def test_the_stock_kernel_has_no_source_to_build_hmm_tests_from(tmp_path: Path) -> None:
    proc, seconds = run("--kselftest", "mm/hmm-tests", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--kernel stock does not come with" in proc.stderr
    assert "e.g. --kernel hmm" in proc.stderr
    assert seconds < 60
    assert not (tmp_path / "testbed-artifacts").exists()  # nothing booted


def test_a_run_cut_short_reports_the_tests_it_never_reached_by_name(tmp_path: Path) -> None:
    """hmm-tests on the real hmm kernel, with a timeout shorter than the program needs: what
    it printed is kept, the tests it never reached are errors by name, the program fails."""
    request = kbuild.request_for(find_kernel_spec(paths.kernel_config_dir() / "kernels", "hmm"))
    if kbuild.cached(request) is None:
        pytest.skip("the hmm kernel is not built (ci/test.sh builds it first)")
    folder = tmp_path / "kselftests" / "mm"
    folder.mkdir(parents=True)
    real = paths.kernel_config_dir() / "kselftests" / "mm" / "hmm-tests.yaml"
    text = re.sub(r"(?m)^timeout: .*$", "timeout: 0.5", real.read_text())
    (folder / "hmm-tests.yaml").write_text(text)
    artifacts = tmp_path / "artifacts"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(folder / "hmm-tests.yaml"),
            "-p",
            "no:cacheprovider",
            "--testbed-kernel=hmm",
            f"--testbed-artifacts={artifacts}",
            f"--junitxml={tmp_path / 'x.xml'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = {c.get("name", ""): c for c in ET.parse(tmp_path / "x.xml").getroot().iter("testcase")}
    assert len(cases) == 59
    program = cases.pop("hmm-tests").find("failure")
    assert program is not None
    assert "the run did not finish: DeadlineExceeded" in (program.text or "")
    raw = (artifacts / "kselftest-mm-hmm-tests" / "hmm-tests.tap").read_text()
    printed = {m.group(1) for m in re.finditer(r"(?m)^(?:not )?ok \d+ (\S+)", raw)}
    errors = {name for name, c in cases.items() if c.find("error") is not None}
    assert errors, "the program finished within 0.5 s: make the timeout shorter"
    print(f"{len(printed)} results printed, {len(errors)} never reached")
    assert errors == {name for name in cases if name.removeprefix("hmm-tests.") not in printed}
    for name in errors:
        error = cases[name].find("error")
        assert error is not None and "no result" in (error.text or ""), name
