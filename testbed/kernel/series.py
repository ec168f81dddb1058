"""Quilt-style patch series: parse ``series``, find what each patch touches, apply with
``patch -p1``.

A series folder (``guest-kernel-config/patches/<name>/``) holds a ``series`` file naming the
patches in order, one per line (``#`` starts a comment; an optional ``-pN`` after the name
sets the strip level, ``-p1`` by default), and the patches themselves (``git format-patch``
output). Patches are applied into a scratch copy of the files they touch, never into a tree
another build relies on: a patch that does not apply raises :class:`PatchError` naming the
patch, the file and the failing hunk, and leaves every tree as it was.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import ConfigError, DependencyError, KernelError

SERIES_FILE = "series"
_STRIP = re.compile(r"^-p(\d)$")


class PatchError(KernelError):
    """A patch of a series does not apply; names patch, file and hunk."""


@dataclass(frozen=True)
class Patch:
    """One entry of a series, with its bytes read (they go into the cache key)."""

    name: str  #: as written in ``series``
    path: Path
    strip: int
    data: bytes
    line: int  #: line of ``series`` naming it

    def files(self) -> tuple[str, ...]:
        """The paths this patch touches (before and after renames), strip level applied."""
        return touched_files(self.data.decode("utf-8", "replace"), self.strip)


@dataclass(frozen=True)
class Series:
    name: str
    path: Path  #: the series folder
    patches: tuple[Patch, ...]

    def files(self) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for patch in self.patches:
            out.update(dict.fromkeys(patch.files()))
        return tuple(out)


def parse_series_file(text: str, path: str | Path) -> list[tuple[str, int, int]]:
    """``(patch name, strip level, line)`` for each entry of a quilt ``series`` file."""
    entries: list[tuple[str, int, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        strip = 1
        for option in words[1:]:
            match = _STRIP.match(option)
            if not match:
                raise ConfigError(
                    f"unsupported option {option!r} after {words[0]!r}; only -pN is understood",
                    path=path,
                    line=number,
                )
            strip = int(match.group(1))
        if any(words[0] == e[0] for e in entries):
            raise ConfigError(f"{words[0]!r} is listed twice", path=path, line=number)
        entries.append((words[0], strip, number))
    return entries


def load_series(folder: Path) -> Series:
    """Read ``folder/series`` and every patch it names; a missing patch names the line."""
    series_path = folder / SERIES_FILE
    try:
        text = series_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            "no 'series' file; a patch series folder lists its patches in order in 'series'",
            path=series_path,
        ) from exc
    patches: list[Patch] = []
    for name, strip, line in parse_series_file(text, series_path):
        patch_path = folder / name
        try:
            data = patch_path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"names patch {name!r}, which is not in {folder}; add the file or drop the line",
                path=series_path,
                line=line,
            ) from None
        patches.append(Patch(name, patch_path, strip, data, line))
    if not patches:
        raise ConfigError("the series names no patches", path=series_path)
    return Series(folder.name, folder, tuple(patches))


_DIFF_PATH = re.compile(r"^(?:---|\+\+\+) (\S+)")
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def diff_lines(diff: str) -> Iterator[tuple[str, str]]:
    """Each line of a unified diff with what it is: ``+`` added, ``-`` removed, `` `` context
    (hunk bodies, skipped by their line counts, so a removed line that starts with ``--`` is
    not taken for a file header), or ``header`` (everything between hunks)."""
    old_left = new_left = 0
    for line in diff.splitlines():
        if old_left > 0 or new_left > 0:
            if line.startswith("-"):
                old_left -= 1
                yield "-", line
            elif line.startswith("+"):
                new_left -= 1
                yield "+", line
            elif not line.startswith("\\"):  # "\ No newline at end of file"
                old_left -= 1
                new_left -= 1
                yield " ", line
            continue
        hunk = _HUNK.match(line)
        if hunk:
            old_left = int(hunk.group(1) or 1)
            new_left = int(hunk.group(2) or 1)
        yield "header", line


def header_path(line: str, strip: int = 1) -> str | None:
    """The relative path a ``---``/``+++`` header line names (None: not one, or /dev/null)."""
    match = _DIFF_PATH.match(line)
    if not match or match.group(1) == "/dev/null":
        return None
    parts = match.group(1).split("/")
    return "/".join(parts[strip:]) if len(parts) > strip else None


def touched_files(diff: str, strip: int = 1) -> tuple[str, ...]:
    """Relative paths a unified diff reads or writes (``/dev/null`` left out)."""
    out: dict[str, None] = {}
    for kind, line in diff_lines(diff):
        path = header_path(line, strip) if kind == "header" else None
        if path is not None:
            out[path] = None
    return tuple(out)


_FAILED_HUNK = re.compile(r"^Hunk #(\d+) FAILED at (\d+)")
_PATCHING = re.compile(r"^(?:patching|checking) file (.+)$")


def describe_failure(output: str) -> str:
    """The ``file: hunk #N failed at line L`` lines of ``patch``'s output (or its tail)."""
    current = "?"
    found: list[str] = []
    for line in output.splitlines():
        patching = _PATCHING.match(line)
        if patching:
            current = patching.group(1).strip("'")
            continue
        hunk = _FAILED_HUNK.match(line)
        if hunk:
            found.append(f"{current}: hunk #{hunk.group(1)} failed at line {hunk.group(2)}")
        elif "can't find file to patch" in line or "No file to patch" in line:
            found.append(f"{current}: file to patch not found")
        elif "Reversed (or previously applied) patch detected" in line:
            found.append(f"{current}: already applied (reversed patch detected)")
    if found:
        return "\n".join(found)
    return "\n".join(output.strip().splitlines()[-10:])


def apply(series: Series, tree: Path) -> None:
    """Apply ``series`` in order to ``tree`` with ``patch -p1 --fuzz=0``; each patch is tried
    with ``--dry-run`` first, so a failing patch changes nothing (earlier ones stay applied:
    the caller applies into a scratch tree). No fuzz: a patch that needs it wants a rebase,
    not a guess at where its lines go."""
    if shutil.which("patch") is None:
        raise DependencyError("'patch' not found, needed to apply kernel patches; run ci/setup.sh")
    for patch in series.patches:
        for dry in (True, False):
            argv = ["patch", f"-p{patch.strip}", "--batch", "--forward", "--fuzz=0", "--silent"]
            argv += ["--no-backup-if-mismatch", "-r", "-", "-d", str(tree)]
            if dry:
                argv.append("--dry-run")
            proc = subprocess.run(
                argv, input=patch.data, capture_output=True, check=False, timeout=120
            )
            if proc.returncode != 0:
                out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
                # --silent hides the "checking file" lines; run again verbosely to name files
                verbose = subprocess.run(
                    [a for a in argv if a != "--silent"] + (["--dry-run"] if not dry else []),
                    input=patch.data,
                    capture_output=True,
                    check=False,
                    timeout=120,
                )
                out = (verbose.stdout + verbose.stderr).decode("utf-8", "replace") or out
                raise PatchError(
                    f"{patch.path}: does not apply (patch {patch.name}, line {patch.line} of "
                    f"{series.path / SERIES_FILE}):\n  "
                    + describe_failure(out).replace("\n", "\n  ")
                    + "\n  fix: rebase the patch onto this kernel source (or pick the source "
                    "it was written for); no tree was changed"
                )
