"""The newc cpio writer (testbed.guest.cpio), checked with GNU cpio and a tiny reader."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from testbed.guest.cpio import CpioWriter

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="needs GNU cpio")

BLOB = bytes(range(256)) * 5 + b"tail"  # 1284 bytes: not a multiple of 4


def sample_archive() -> bytes:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.directory("/bin")
    w.directory("/etc", 0o750)
    w.directory("/etc/sub")
    w.file("/bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    w.file("/etc/secret", b"key", 0o600)
    w.file("/etc/empty", b"")
    w.file("/etc/sub/blob", BLOB)
    w.file("/x", b"1")  # a one-character name and size, to exercise padding
    w.symlink("/bin/sh", "/bin/tool")
    w.symlink("/etc/rel", "sub/blob")
    w.close()
    return buf.getvalue()


def parse_newc(data: bytes) -> list[dict[str, object]]:
    """Entries of every archive in ``data`` (concatenated archives allowed), trailers included."""
    entries: list[dict[str, object]] = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 6] != b"070701":
            assert set(data[pos:]) <= {0}, f"garbage after archive at {pos}"
            break
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, *_, namesize, check = fields
        name = data[pos + 110 : pos + 110 + namesize]
        assert name.endswith(b"\0")
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        entries.append(
            {
                "name": name[:-1].decode(),
                "ino": ino,
                "mode": mode,
                "uid": uid,
                "gid": gid,
                "nlink": nlink,
                "mtime": mtime,
                "data": body,
                "check": check,
            }
        )
    return entries


def test_cpio_lists_every_entry(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    archive.write_bytes(sample_archive())
    out = subprocess.run(
        ["cpio", "-it", "--quiet"],
        stdin=archive.open("rb"),
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout.decode()
    assert out.splitlines() == [
        "bin",
        "etc",
        "etc/sub",
        "bin/tool",
        "etc/secret",
        "etc/empty",
        "etc/sub/blob",
        "x",
        "bin/sh",
        "etc/rel",
    ]


def test_cpio_extracts_modes_links_and_content(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    archive.write_bytes(sample_archive())
    dest = tmp_path / "root"
    dest.mkdir()
    old_umask = os.umask(0)
    try:
        subprocess.run(
            ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
            stdin=archive.open("rb"),
            cwd=dest,
            capture_output=True,
            check=True,
            timeout=10,
        )
    finally:
        os.umask(old_umask)

    def mode(rel: str) -> int:
        return stat.S_IMODE(os.lstat(dest / rel).st_mode)

    assert (dest / "bin").is_dir()
    assert mode("bin") == 0o755
    assert mode("etc") == 0o750
    assert (dest / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert mode("bin/tool") == 0o755
    assert (dest / "etc" / "secret").read_bytes() == b"key"
    assert mode("etc/secret") == 0o600
    assert (dest / "etc" / "empty").read_bytes() == b""
    assert mode("etc/empty") == 0o644
    assert (dest / "etc" / "sub" / "blob").read_bytes() == BLOB
    assert (dest / "x").read_bytes() == b"1"
    assert (dest / "bin" / "sh").is_symlink()
    assert os.readlink(dest / "bin" / "sh") == "/bin/tool"
    assert os.readlink(dest / "etc" / "rel") == "sub/blob"
    assert (dest / "etc" / "rel").read_bytes() == BLOB
    assert os.lstat(dest / "bin" / "tool").st_mtime == 0


def test_reproducible() -> None:
    assert sample_archive() == sample_archive()


def test_different_content_gives_different_bytes() -> None:
    def one(data: bytes) -> bytes:
        buf = io.BytesIO()
        w = CpioWriter(buf)
        w.file("f", data)
        w.close()
        return buf.getvalue()

    assert one(b"a") != one(b"b")


def test_header_fields() -> None:
    data = sample_archive()
    assert len(data) % 512 == 0
    entries = parse_newc(data)
    assert entries[-1]["name"] == "TRAILER!!!"
    real = entries[:-1]
    assert [e["name"] for e in real][:3] == ["bin", "etc", "etc/sub"]
    assert all(not str(e["name"]).startswith("/") for e in real)
    assert len({e["ino"] for e in real}) == len(real)  # no accidental hard links
    for e in entries:
        assert e["uid"] == 0
        assert e["gid"] == 0
        assert e["mtime"] == 0
        assert e["check"] == 0
    by_name = {e["name"]: e for e in real}
    assert by_name["bin"]["mode"] == stat.S_IFDIR | 0o755
    assert by_name["bin/tool"]["mode"] == stat.S_IFREG | 0o755
    assert by_name["bin/tool"]["nlink"] == 1
    assert by_name["bin/sh"]["mode"] == stat.S_IFLNK | 0o777
    assert by_name["bin/sh"]["data"] == b"/bin/tool"
    assert by_name["etc/sub/blob"]["data"] == BLOB


def test_empty_archive_is_just_a_trailer() -> None:
    buf = io.BytesIO()
    CpioWriter(buf).close()
    data = buf.getvalue()
    assert len(data) == 512
    assert [e["name"] for e in parse_newc(data)] == ["TRAILER!!!"]
