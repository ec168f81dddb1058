"""``testbed mutants`` on its own bad inputs, for real: a patch that no longer applies and one
that does not compile are reported as such, never as caught, and no suite runs for them.

Cheap (one real module build, no guest), so it runs in ci/test.sh; the full catalogue run is
``ci/mutants.sh``.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

from testbed.guest.modules import source_dir
from testbed.kernel.image import Kernel

TESTBED = str(Path(sys.executable).parent / "testbed")
EXPORTER = "exporter/p2p_exporter.c"


def _patch(header: str, path: str, old: str, new: str) -> str:
    """A catalogue file: ``header``, then the diff replacing ``old`` by ``new`` in ``path``."""
    before = (source_dir() / path).read_text()
    assert before.count(old) == 1, f"{old!r} is not once in {path}"
    after = before.replace(old, new)
    diff = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return header + "\n" + "".join(diff)


def test_stale_and_broken_patches_are_reported_as_such_never_as_caught(
    tmp_path: Path, testbed_kernel: Kernel
) -> None:
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    header = "Claim: 8 (refuse pin)\nPlants: {}\nCaught-by: nothing, on purpose\n"
    # context that is nowhere in the drivers: git apply must refuse it (no fuzz)
    stale = _patch(
        header.format("a stale patch"),
        EXPORTER,
        "static bool refuse_pin = true;",
        "static bool refuse_pin = false;",
    )
    stale = stale.replace("\n module_param(refuse_pin, bool, 0644);", "\n module_param(x);")
    assert "module_param(x)" in stale
    (catalogue / "01-stale.patch").write_text(stale)
    (catalogue / "02-broken.patch").write_text(
        _patch(
            header.format("a syntax error"),
            EXPORTER,
            "static bool refuse_pin = true;",
            "static bool refuse_pin = true +;",
        )
    )
    checkout_before = (source_dir() / EXPORTER).read_bytes()

    proc = subprocess.run(
        [
            TESTBED,
            "mutants",
            "--catalogue",
            str(catalogue),
            "--no-baseline",
            "--artifacts",
            str(tmp_path / "artifacts"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "01-stale: does not apply: 01-stale.patch: error: patch failed: " in out
    assert "02-broken: does not compile: building the P2P guest modules against" in out
    assert f"{EXPORTER}:" in out.split("02-broken: does not compile:")[-1]
    assert "0/2 mutants caught" in out
    assert "caught (" not in out
    assert not (tmp_path / "artifacts").exists(), "no suite may run for either"
    assert (source_dir() / EXPORTER).read_bytes() == checkout_before, "the checkout is untouched"
