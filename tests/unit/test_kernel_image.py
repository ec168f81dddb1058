"""Reading the release out of a bzImage (testbed.kernel.image), on synthetic images.

The setup header layout follows Documentation/arch/x86/boot.rst: the 'HdrS' magic at 0x202,
the boot protocol version at 0x206, and at 0x20E ``kernel_version``: a pointer, less 0x200, to
a NUL-terminated string that starts with the release.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import KernelError
from testbed.kernel.image import bzimage_release, user_kernel

BANNER = b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian"


def bzimage(
    version: bytes | None = BANNER,
    *,
    at: int = 0x3C0,
    magic: bytes = b"HdrS",
    size: int = 0x1000,
) -> bytes:
    """A blob with an x86 setup header whose kernel_version string sits at file offset ``at``."""
    blob = bytearray(max(size, at + (len(version) + 1 if version else 0)))
    blob[0x1F1] = 4  # setup_sects
    blob[0x1FE:0x200] = b"\x55\xaa"  # boot_flag
    blob[0x200:0x202] = b"\xeb\x6a"  # jump over the header, as a real image has
    blob[0x202:0x206] = magic
    blob[0x206:0x208] = (0x020F).to_bytes(2, "little")  # boot protocol 2.15
    if version is not None:
        blob[0x20E:0x210] = (at - 0x200).to_bytes(2, "little")
        blob[at : at + len(version) + 1] = version + b"\0"
    return bytes(blob)


def write(tmp_path: Path, data: bytes, name: str = "bzImage") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_release_from_header(tmp_path: Path) -> None:
    assert bzimage_release(write(tmp_path, bzimage())) == "6.1.0-56-cloud-amd64"


def test_release_string_beyond_first_kilobyte(tmp_path: Path) -> None:
    image = write(tmp_path, bzimage(b"6.12.0-rc1+ #3 SMP", at=0x3A80, size=0x8000))
    assert bzimage_release(image) == "6.12.0-rc1+"


def test_release_without_banner(tmp_path: Path) -> None:
    assert bzimage_release(write(tmp_path, bzimage(b"6.6.0"))) == "6.6.0"


def test_elf_file_is_not_a_bzimage(tmp_path: Path) -> None:
    elf = b"\x7fELF\x02\x01\x01" + bytes(0x2000)
    image = write(tmp_path, elf, "vmlinux")
    with pytest.raises(KernelError, match="not an x86 bzImage") as info:
        bzimage_release(image)
    assert str(image) in str(info.value)


def test_wrong_magic(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="HdrS"):
        bzimage_release(write(tmp_path, bzimage(magic=b"HdrT")))


def test_short_file(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="not an x86 bzImage"):
        bzimage_release(write(tmp_path, bzimage()[:0x205]))


def test_text_file(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="not an x86 bzImage"):
        bzimage_release(write(tmp_path, b"#!/bin/sh\necho not a kernel\n" * 100))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="cannot read kernel image"):
        bzimage_release(tmp_path / "nope")


def test_empty_version_string(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="no kernel version string"):
        bzimage_release(write(tmp_path, bzimage(b"")))


def test_version_pointer_past_end_of_file(tmp_path: Path) -> None:
    data = bytearray(bzimage(size=0x1000))
    data[0x20E:0x210] = (0x7000).to_bytes(2, "little")
    with pytest.raises(KernelError, match="no kernel version string"):
        bzimage_release(write(tmp_path, bytes(data)))


def test_zero_version_pointer_means_no_version(tmp_path: Path) -> None:
    with pytest.raises(KernelError):
        bzimage_release(write(tmp_path, bzimage(version=None)))


# --- user_kernel: pairing an image with its modules ---------------------------------------------


def modules_tree(root: Path, release: str = "6.1.0-56-cloud-amd64") -> Path:
    mod = root / "lib" / "modules" / release
    mod.mkdir(parents=True)
    (mod / "modules.dep").write_text("")
    return mod


@pytest.mark.parametrize("given", ["install_root", "lib_modules", "release_dir"])
def test_user_kernel_finds_modules(tmp_path: Path, given: str) -> None:
    image = write(tmp_path, bzimage())
    mod = modules_tree(tmp_path / "inst")
    arg = {
        "install_root": tmp_path / "inst",
        "lib_modules": tmp_path / "inst" / "lib" / "modules",
        "release_dir": mod,
    }[given]
    kernel = user_kernel(image, arg)
    assert kernel.release == "6.1.0-56-cloud-amd64"
    assert kernel.modules == mod.resolve()
    assert kernel.image == image.resolve()


def test_user_kernel_modules_for_another_release(tmp_path: Path) -> None:
    image = write(tmp_path, bzimage())
    mod = modules_tree(tmp_path / "inst", "6.6.0")
    with pytest.raises(KernelError, match=r"'6\.6\.0'"):
        user_kernel(image, mod)


def test_user_kernel_without_modules_dep(tmp_path: Path) -> None:
    image = write(tmp_path, bzimage())
    with pytest.raises(KernelError, match=r"no modules\.dep"):
        user_kernel(image, tmp_path)


def test_user_kernel_missing_image(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="kernel image not found"):
        user_kernel(tmp_path / "bzImage")
