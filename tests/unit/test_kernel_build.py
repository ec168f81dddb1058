"""The kernel build's pure logic (testbed.kernel.build): cache keys, the incremental series
sync on small trees, cache entries, error extraction, progress lines. No kernel is built."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from testbed.config.kernels import BaseConfig
from testbed.kernel import build, kconfig, series
from testbed.kernel.source import Source

PATCH = """--- a/a.c
+++ b/a.c
@@ -1,3 +1,4 @@
 one
 two
+{line}
 three
"""


def make_series(folder: Path, *lines: str) -> series.Series:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, line in enumerate(lines):
        name = f"{i:04d}.patch"
        target = "a.c" if i == 0 else f"f{i}.c"
        text = PATCH.format(line=line).replace("a.c", target)
        (folder / name).write_text(text)
        names.append(name)
    (folder / "series").write_text("\n".join(names) + "\n")
    return series.load_series(folder)


def request(
    tmp_path: Path, ser: series.Series | None = None, frag: str = "CONFIG_A=y\n"
) -> build.Request:
    src = Source("tarball", tmp_path / "linux.tar.xz", "sha256:00ff", "linux.tar.xz")
    fragment = kconfig.parse_fragment(frag, tmp_path / "base.config")
    return build.Request(
        "base", src, BaseConfig.TINYCONFIG, (fragment,), ser, "gcc (Debian 12.2.0-14) 12.2.0"
    )


def test_key_depends_on_every_input(tmp_path: Path) -> None:
    ser = make_series(tmp_path / "s1", "x")
    base = request(tmp_path)
    assert base.key() == request(tmp_path).key()  # stable
    keys = {
        base.key(),
        request(tmp_path, ser).key(),
        request(tmp_path, make_series(tmp_path / "s2", "y")).key(),  # one patch's bytes
        request(tmp_path, frag="CONFIG_A=m\n").key(),
        dataclasses.replace(base, compiler="gcc 13").key(),
        dataclasses.replace(base, base=BaseConfig.DEFCONFIG).key(),
        dataclasses.replace(
            base, source=dataclasses.replace(base.source, identity="git:abc")
        ).key(),
    }
    assert len(keys) == 7


def test_work_tree_is_shared_across_series_not_fragments(tmp_path: Path) -> None:
    ser = make_series(tmp_path / "s1", "x")
    assert request(tmp_path).work_id() == request(tmp_path, ser).work_id()
    assert request(tmp_path).work_id() != request(tmp_path, frag="CONFIG_B=y\n").work_id()


def trees(tmp_path: Path) -> tuple[Path, Path]:
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for name in ("a.c", "f1.c", "f2.c", "untouched.c"):
        (pristine / name).write_text("one\ntwo\nthree\n")
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["cp", "-al", str(pristine), str(work / "src")], check=True)
    return pristine, work / "src"


def test_sync_series_rewrites_only_what_changes(tmp_path: Path) -> None:
    pristine, src = trees(tmp_path)
    state = tmp_path / "work" / "applied.json"
    old = 1_000_000_000
    for p in src.iterdir():
        os.utime(p, (old, old))

    assert build.sync_series(pristine, src, state, make_series(tmp_path / "s1", "x", "y")) == 2
    assert (src / "a.c").read_text() == "one\ntwo\nx\nthree\n"
    assert (pristine / "a.c").read_text() == "one\ntwo\nthree\n"  # the hard link was broken
    assert (src / "untouched.c").stat().st_mtime == old
    assert (src / "untouched.c").stat().st_ino == (pristine / "untouched.c").stat().st_ino

    # change the second patch only: a.c keeps its mtime, f1.c is rewritten
    a_mtime = (src / "a.c").stat().st_mtime_ns
    assert build.sync_series(pristine, src, state, make_series(tmp_path / "s2", "x", "z")) == 1
    assert (src / "a.c").stat().st_mtime_ns == a_mtime
    assert (src / "f1.c").read_text() == "one\ntwo\nz\nthree\n"
    assert json.loads(state.read_text()) == {"files": ["a.c", "f1.c"]}

    # no series: back to pristine content
    assert build.sync_series(pristine, src, state, None) == 2
    for name in ("a.c", "f1.c"):
        assert (src / name).read_text() == "one\ntwo\nthree\n"
    assert build.sync_series(pristine, src, state, None) == 0


def test_sync_series_failure_leaves_the_work_tree_alone(tmp_path: Path) -> None:
    pristine, src = trees(tmp_path)
    state = tmp_path / "work" / "applied.json"
    build.sync_series(pristine, src, state, make_series(tmp_path / "s1", "x"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0001.patch").write_text(PATCH.format(line="q").replace(" two\n", " deux\n"))
    (bad / "series").write_text("0001.patch\n")
    with pytest.raises(series.PatchError, match=r"0001\.patch"):
        build.sync_series(pristine, src, state, series.load_series(bad))
    assert (src / "a.c").read_text() == "one\ntwo\nx\nthree\n"
    assert not [p for p in src.parent.iterdir() if p.name.startswith(".patch-")]


def test_an_entry_without_manifest_is_not_built(tmp_path: Path) -> None:
    entry = tmp_path / "k"
    entry.mkdir()
    (entry / "bzImage").write_bytes(b"half")
    assert build._load_entry(entry) is None
    (entry / "manifest.json").write_text(
        json.dumps({"name": "base", "recipe": "r", "release": "6.12.57"})
    )
    kernel = build._load_entry(entry)
    assert kernel is not None and kernel.release == "6.12.57"
    assert kernel.modules == entry / "modules" / "lib" / "modules" / "6.12.57"
    assert kernel.build == entry / "build"


def test_first_error_names_file_and_line() -> None:
    log = (
        "  CC      mm/memory.o\n"
        "mm/memory.c: In function 'foo':\n"
        "mm/memory.c:123:5: error: 'bar' undeclared (first use in this function)\n"
        "make[3]: *** [scripts/Makefile.build:229: mm/memory.o] Error 1\n"
    )
    assert build._first_error(log) == (
        "mm/memory.c:123:5: error: 'bar' undeclared (first use in this function)"
    )
    assert "Error 2" in build._first_error("make: *** [Makefile:224: __sub-make] Error 2\n")


def test_progress_counts_steps_and_reports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = 'for i in 1 2 3; do echo "  CC      obj$i.o"; done; echo warning: x; sleep 0.3; exit 3'
    log_file = tmp_path / "build.log"
    progress = build.Progress("t", every=0.1)
    with caplog.at_level(logging.INFO, logger="testbed"):
        rc = progress.run_make(["sh", "-c", script], dict(os.environ), log_file, expected=6)
    assert rc == 3
    assert "  CC      obj3.o" in log_file.read_text()
    messages = [r.getMessage() for r in caplog.records]
    assert any("3 steps (a full build has 6)" in m and "CC      obj3.o" in m for m in messages)
    assert build._count_steps(log_file) == 3
