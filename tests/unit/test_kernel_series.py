"""Quilt-style series (testbed.kernel.series): parsing, what a patch touches, and applying
with the real ``patch`` program to small trees in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel import series

PATCH_A = b"""From 1 Mon Sep 17 00:00:00 2001
Subject: [PATCH 1/2] add a line

---
 a.c | 1 +
 1 file changed, 1 insertion(+)

diff --git a/dir/a.c b/dir/a.c
--- a/dir/a.c
+++ b/dir/a.c
@@ -1,3 +1,4 @@
 one
 two
+two and a half
 three
--
2.39.2
"""

PATCH_NEW_FILE = b"""Subject: [PATCH 2/2] new file

diff --git a/new.h b/new.h
new file mode 100644
--- /dev/null
+++ b/new.h
@@ -0,0 +1 @@
+#define NEW 1
"""


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "a.c").write_text("one\ntwo\nthree\n")
    return root


def folder(tmp_path: Path, series_text: str, patches: dict[str, bytes]) -> Path:
    d = tmp_path / "my-series"
    d.mkdir()
    (d / "series").write_text(series_text)
    for name, data in patches.items():
        (d / name).write_bytes(data)
    return d


def test_parse_series_file_comments_and_strip_levels() -> None:
    text = "# the series\n0001-a.patch\n\n0002-b.patch -p0  # comment\n"
    assert series.parse_series_file(text, "s") == [("0001-a.patch", 1, 2), ("0002-b.patch", 0, 4)]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [("a.patch --fuzz=3\n", 1, "only -pN"), ("a.patch\nb.patch\na.patch\n", 3, "listed twice")],
)
def test_parse_series_file_errors(text: str, line: int, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        series.parse_series_file(text, "series")
    assert info.value.line == line


def test_load_series_names_a_missing_patch(tmp_path: Path) -> None:
    d = folder(tmp_path, "0001-a.patch\n0002-gone.patch\n", {"0001-a.patch": PATCH_A})
    with pytest.raises(ConfigError, match=r"names patch '0002-gone\.patch'") as info:
        series.load_series(d)
    assert info.value.path == d / "series" and info.value.line == 2


def test_load_series_needs_a_series_file_and_patches(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no 'series' file"):
        series.load_series(tmp_path)
    d = folder(tmp_path, "# nothing yet\n", {})
    with pytest.raises(ConfigError, match="names no patches"):
        series.load_series(d)


def test_touched_files() -> None:
    both = (PATCH_A + PATCH_NEW_FILE).decode()
    assert series.touched_files(both) == ("dir/a.c", "new.h")
    assert series.touched_files(PATCH_A.decode(), strip=2) == ("a.c",)
    # '---'/'+++' inside a hunk are content, not headers
    tricky = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n--- a/not-a-file\n+++ b/not-either\n"
    assert series.touched_files(tricky) == ("x",)


def test_apply_in_order(tmp_path: Path) -> None:
    root = tree(tmp_path)
    d = folder(tmp_path, "a.patch\nnew.patch\n", {"a.patch": PATCH_A, "new.patch": PATCH_NEW_FILE})
    ser = series.load_series(d)
    assert ser.files() == ("dir/a.c", "new.h")
    series.apply(ser, root)
    assert (root / "dir" / "a.c").read_text() == "one\ntwo\ntwo and a half\nthree\n"
    assert (root / "new.h").read_text() == "#define NEW 1\n"


def test_apply_failure_names_patch_file_and_hunk_and_changes_nothing(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "dir" / "a.c").write_text("uno\ndos\ntres\n")
    d = folder(tmp_path, "new.patch\na.patch\n", {"a.patch": PATCH_A, "new.patch": PATCH_NEW_FILE})
    with pytest.raises(series.PatchError) as info:
        series.apply(series.load_series(d), root)
    text = str(info.value)
    assert str(d / "a.patch") in text and "line 2 of" in text
    assert "dir/a.c: hunk #1 failed at line 1" in text
    assert (root / "dir" / "a.c").read_text() == "uno\ndos\ntres\n"  # dry run first
    assert not list((root / "dir").glob("*.rej")) and not list((root / "dir").glob("*.orig"))


def test_already_applied_patch_is_reported(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "dir" / "a.c").write_text("one\ntwo\ntwo and a half\nthree\n")
    d = folder(tmp_path, "a.patch\n", {"a.patch": PATCH_A})
    with pytest.raises(series.PatchError, match="already applied"):
        series.apply(series.load_series(d), root)


def test_describe_failure_falls_back_to_the_tail() -> None:
    assert series.describe_failure("patch: **** Only garbage was found in the patch input.") == (
        "patch: **** Only garbage was found in the patch input."
    )
