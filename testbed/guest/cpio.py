"""A writer for the ``newc`` cpio format the kernel unpacks as an initramfs.

Written here rather than shelling out to ``cpio`` so that archives are byte-for-byte
reproducible (fixed inode numbers, mtime 0, root ownership) and can be built in memory.
"""

from __future__ import annotations

import stat
from typing import BinaryIO

_TRAILER = "TRAILER!!!"


class CpioWriter:
    """Append entries to a newc archive; call :meth:`close` to write the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._written = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1) -> None:
        encoded = name.lstrip("/").encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            nlink,
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            0,  # rdevmajor
            0,  # rdevminor
            len(encoded),
            0,  # check
        )
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        self._ino += 1
        self._write(header + encoded)
        self._pad()
        self._write(data)
        self._pad()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def _pad(self) -> None:
        self._write(b"\0" * (-self._written % 4))

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def close(self) -> None:
        self._entry(_TRAILER, 0, nlink=1)
        self._pad()
        self._write(b"\0" * (-self._written % 512))
