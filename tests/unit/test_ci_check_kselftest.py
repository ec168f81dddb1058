"""ci/check-kselftest-junit.py, the CI's independent check that a JUnit file has every test
the kselftest printed, with the same status: it passes on a faithful file and fails, naming
the test, on a changed status, a changed skip message and a missing testcase."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from testbed import paths

SCRIPT = paths.PROJECT_ROOT / "ci" / "check-kselftest-junit.py"
RAW = Path(__file__).parent / "data" / "ktap" / "hmm-tests.tap"


def junit(skip_message: str | None = None, drop: str = "", fail: str = "") -> str:
    cases = []
    for line in RAW.read_text().splitlines():
        match = re.match(r"^(ok|not ok) \d+ (\S+)(?: # SKIP (.*))?$", line)
        if not match or match.group(2) == drop:
            continue
        ok, name, reason = match.groups()
        body = ""
        if name == fail:
            body = "<failure message='x'/>"
        elif reason is not None:
            body = f"<skipped message={quoteattr(skip_message or reason)}/>"
        elif ok != "ok":
            body = "<failure message='x'/>"
        cases.append(f"<testcase classname='kselftest.mm.hmm-tests' name='hmm-tests.{name}'>")
        cases.append(f"<properties><property name='a' value='b'/></properties>{body}</testcase>")
    return "<testsuites><testsuite name='pytest'>" + "".join(cases) + "</testsuite></testsuites>"


def check(tmp_path: Path, xml: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "x.xml").write_text(xml)
    argv = [sys.executable, str(SCRIPT), str(RAW), str(tmp_path / "x.xml"), "hmm-tests"]
    return subprocess.run(
        [*argv, "--expect-total", "58"], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_faithful_junit_file_passes(tmp_path: Path) -> None:
    proc = check(tmp_path, junit())
    assert proc.returncode == 0, proc.stderr
    assert "58 results in the output 29 passed, 0 failed, 29 skipped; 58 testcases" in proc.stdout


@pytest.mark.parametrize(
    ("xml", "says"),
    [
        (junit(fail="hmm.hmm_device_private.migrate"), "hmm-tests.hmm.hmm_device_private.migrate"),
        (junit(skip_message="other"), "DEVICE_COHERENT not available"),
        (junit(drop="hmm2.hmm2_device_private.snapshot"), "missing from"),
    ],
)
def test_a_difference_fails_and_names_the_test(tmp_path: Path, xml: str, says: str) -> None:
    proc = check(tmp_path, xml)
    assert proc.returncode == 1
    assert says in proc.stderr
