"""``testbed run --kselftest`` on a kernel that cannot run the program: one clear line naming
the kernel and the fix, exit 2, in seconds -- before any guest boots. (A named kernel without
CONFIG_TEST_HMM is tested on fake kernels in tests/unit/test_kselftest.py: every named kernel
here has it, base.config needs TEST_HMM for MMU_NOTIFIER. The real run on the ``hmm`` kernel is
ci/test.sh's, checked by ci/check-kselftest-junit.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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
