"""Pure parts of the guest image builder (testbed.guest.initramfs).

Module resolution runs on a fake ``lib/modules/<release>`` folder; archive plans are written to
memory and read back with GNU cpio. Nothing here needs busybox, dropbear or a real kernel.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import ImageError
from testbed.guest import initramfs
from testbed.guest.initramfs import _Plan, assemble, resolve_modules

MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz \
kernel/drivers/virtio/virtio.ko.xz
kernel/net/failover.ko.xz:
kernel/net/net_failover.ko.xz: kernel/net/failover.ko.xz
kernel/net/virtio_net.ko.xz: kernel/net/net_failover.ko.xz kernel/net/failover.ko.xz \
kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/misc/pvpanic.ko.zst:
kernel/misc/pvpanic-pci.ko.zst: kernel/misc/pvpanic.ko.zst
kernel/crypto/needs-builtin.ko: kernel/crypto/crc32c_generic.ko
kernel/bad/needs_ghost.ko: kernel/bad/ghost.ko
kernel/plain/standalone.ko:
"""

MODULES_BUILTIN = "kernel/crypto/crc32c_generic.ko\nkernel/fs/ext4-fs.ko\n"


@pytest.fixture(autouse=True)
def _fresh_memos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """initramfs memoises ldd, busybox applets and file hashes per process and in the cache;
    a test that fakes subprocess must not see results an earlier test (or a booted guest)
    left there, nor leave its fakes in the user's cache."""
    initramfs._ldd.cache_clear()
    initramfs._applets.cache_clear()
    initramfs._digest.cache_clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(initramfs, "_MEMO", initramfs._ProbeMemo())


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    root = tmp_path / "lib" / "modules" / "6.1.0-test"
    root.mkdir(parents=True)
    (root / "modules.dep").write_text(MODULES_DEP)
    (root / "modules.builtin").write_text(MODULES_BUILTIN)
    return root


def deps_table() -> dict[str, list[str]]:
    table = {}
    for line in MODULES_DEP.splitlines():
        target, _, rest = line.partition(":")
        table[target] = rest.split()
    return table


# --- resolve_modules ---------------------------------------------------------------------------


def test_single_module_without_deps(modules_dir: Path) -> None:
    assert resolve_modules(modules_dir, ["standalone"]) == ["kernel/plain/standalone.ko"]


def test_closure_deps_first(modules_dir: Path) -> None:
    got = resolve_modules(modules_dir, ["virtio_net"])
    assert set(got) == {
        "kernel/net/virtio_net.ko.xz",
        "kernel/net/net_failover.ko.xz",
        "kernel/net/failover.ko.xz",
        "kernel/drivers/virtio/virtio_ring.ko.xz",
        "kernel/drivers/virtio/virtio.ko.xz",
    }
    assert got[-1] == "kernel/net/virtio_net.ko.xz"
    assert got.index("kernel/net/failover.ko.xz") < got.index("kernel/net/net_failover.ko.xz")
    assert got.index("kernel/drivers/virtio/virtio.ko.xz") < got.index(
        "kernel/drivers/virtio/virtio_ring.ko.xz"
    )


def test_every_module_follows_its_deps_and_appears_once(modules_dir: Path) -> None:
    got = resolve_modules(modules_dir, ["virtio_pci", "virtio_net", "pvpanic_pci", "virtio"])
    assert len(got) == len(set(got))
    table = deps_table()
    for i, path in enumerate(got):
        for dep in table[path]:
            assert dep in got[:i], f"{dep} must come before {path}"
    # Requested order is kept where dependencies allow it.
    assert got.index("kernel/drivers/virtio/virtio_pci.ko.xz") < got.index(
        "kernel/net/virtio_net.ko.xz"
    )
    assert got.index("kernel/net/virtio_net.ko.xz") < got.index("kernel/misc/pvpanic-pci.ko.zst")


@pytest.mark.parametrize("name", ["pvpanic-pci", "pvpanic_pci"])
def test_hyphen_and_underscore_are_the_same_module(modules_dir: Path, name: str) -> None:
    assert resolve_modules(modules_dir, [name]) == [
        "kernel/misc/pvpanic.ko.zst",
        "kernel/misc/pvpanic-pci.ko.zst",
    ]


def test_hyphen_and_underscore_spellings_are_not_duplicated(modules_dir: Path) -> None:
    got = resolve_modules(modules_dir, ["pvpanic-pci", "pvpanic_pci", "needs_builtin"])
    assert got == [
        "kernel/misc/pvpanic.ko.zst",
        "kernel/misc/pvpanic-pci.ko.zst",
        "kernel/crypto/needs-builtin.ko",  # its built-in dependency is skipped
    ]


def test_builtin_module_resolves_to_nothing(modules_dir: Path) -> None:
    assert resolve_modules(modules_dir, ["crc32c_generic", "ext4_fs", "ext4-fs"]) == []


def test_unknown_module_is_named(modules_dir: Path) -> None:
    with pytest.raises(ImageError) as info:
        resolve_modules(modules_dir, ["virtio_pci", "no_such_mod"])
    assert "'no_such_mod'" in str(info.value)
    assert str(modules_dir / "modules.dep") in str(info.value)


def test_unknown_dependency_names_the_chain(modules_dir: Path) -> None:
    with pytest.raises(ImageError) as info:
        resolve_modules(modules_dir, ["needs-ghost"])
    assert "'ghost'" in str(info.value)
    assert "needed by needs_ghost" in str(info.value)


def test_without_modules_builtin(modules_dir: Path) -> None:
    (modules_dir / "modules.builtin").unlink()
    assert resolve_modules(modules_dir, ["virtio"]) == ["kernel/drivers/virtio/virtio.ko.xz"]
    with pytest.raises(ImageError, match="crc32c_generic"):
        resolve_modules(modules_dir, ["crc32c_generic"])


def test_missing_modules_dep(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"modules\.dep: missing; run depmod"):
        resolve_modules(tmp_path, ["virtio"])


def test_nothing_requested(modules_dir: Path) -> None:
    assert resolve_modules(modules_dir, []) == []


# --- _Plan: content digest and archive ---------------------------------------------------------


def plan_with(
    *,
    content: bytes | Path = b"::sysinit:/etc/rcS\n",
    mode: int = 0o755,
    target: str = "/bin/busybox",
    dir_mode: int = 0o700,
) -> _Plan:
    plan = _Plan()
    plan.add_dir("/root", dir_mode)
    plan.add_file("/etc/inittab", content)
    plan.add_file("/bin/tool", b"tool", mode)
    plan.add_link("/bin/sh", target)
    return plan


def test_digest_is_stable() -> None:
    assert plan_with().digest() == plan_with().digest()
    assert len(plan_with().digest()) == 20


@pytest.mark.parametrize(
    "change",
    [
        {"content": b"::sysinit:/etc/rcS -v\n"},
        {"mode": 0o700},
        {"target": "/bin/toybox"},
        {"dir_mode": 0o755},
    ],
)
def test_digest_changes_with_content(change: dict[str, Any]) -> None:
    assert plan_with(**change).digest() != plan_with().digest()


def test_digest_changes_with_an_extra_entry() -> None:
    plan = plan_with()
    plan.add_file("/etc/extra", b"")
    assert plan.digest() != plan_with().digest()


def test_digest_follows_file_content_on_disk(tmp_path: Path) -> None:
    host = tmp_path / "rcS"
    host.write_bytes(b"echo one\n")
    plan = _Plan()
    plan.add_file("/etc/rcS", host, 0o755)
    first = plan.digest()
    host.write_bytes(b"echo two\n")
    assert plan.digest() != first
    host.write_bytes(b"echo one\n")
    assert plan.digest() == first


def test_digest_ignores_where_content_comes_from(tmp_path: Path) -> None:
    host = tmp_path / "inittab"
    host.write_bytes(b"::sysinit:/etc/rcS\n")
    assert plan_with(content=host).digest() == plan_with().digest()


def test_digest_ignores_insertion_order() -> None:
    a = _Plan()
    a.add_file("/a", b"1")
    a.add_file("/b/c", b"2")
    b = _Plan()
    b.add_file("/b/c", b"2")
    b.add_file("/a", b"1")
    assert a.digest() == b.digest()


def test_add_file_creates_parent_dirs() -> None:
    plan = _Plan()
    plan.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", b"")
    assert {"/usr", "/usr/lib", "/usr/lib/x86_64-linux-gnu"} <= set(plan.dirs)


needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="needs GNU cpio")


def extract(data: bytes, dest: Path) -> None:
    dest.mkdir()
    old = os.umask(0)
    try:
        subprocess.run(
            ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
            input=data,
            cwd=dest,
            capture_output=True,
            check=True,
            timeout=10,
        )
    finally:
        os.umask(old)


@needs_cpio
def test_plan_writes_an_extractable_archive(tmp_path: Path) -> None:
    host = tmp_path / "host-file"
    host.write_bytes(b"from the host")
    plan = plan_with()
    plan.add_file("/usr/share/thing", host, 0o640)
    buf = io.BytesIO()
    plan.write(buf)
    root = tmp_path / "root"
    extract(buf.getvalue(), root)
    assert (root / "etc" / "inittab").read_bytes() == b"::sysinit:/etc/rcS\n"
    assert (root / "usr" / "share" / "thing").read_bytes() == b"from the host"
    assert stat.S_IMODE((root / "usr" / "share" / "thing").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "root").stat().st_mode) == 0o700
    assert os.readlink(root / "bin" / "sh") == "/bin/busybox"


def test_plan_write_is_reproducible() -> None:
    a, b = io.BytesIO(), io.BytesIO()
    plan_with().write(a)
    plan_with().write(b)
    assert a.getvalue() == b.getvalue()


def test_adding_a_file_keeps_the_parent_dir_mode() -> None:
    plan = _Plan()
    plan.add_dir("/root", 0o700)
    plan.add_file("/root/.profile", b"")
    plan.add_link("/root/link", "/x")
    plan.add_dir("/root/.ssh")
    assert plan.dirs["/root"] == 0o700
    assert plan.dirs["/root/.ssh"] == 0o755


@needs_cpio
def test_assemble_appends_an_overlay_archive(tmp_path: Path) -> None:
    base_plan = plan_with()
    buf = io.BytesIO()
    base_plan.write(buf)
    base = tmp_path / "base.cpio"
    base.write_bytes(buf.getvalue())
    dest = assemble(
        base, {"/etc/dropbear/key": (b"secret", 0o600), "/etc/motd": (b"hi\n", 0o644)},
        tmp_path / "run.cpio",
    )  # fmt: skip
    data = dest.read_bytes()
    assert data.startswith(buf.getvalue())
    overlay = data[len(buf.getvalue()) :]
    assert len(overlay) % 512 == 0
    root = tmp_path / "overlay"
    extract(overlay, root)
    assert (root / "etc" / "dropbear" / "key").read_bytes() == b"secret"
    assert stat.S_IMODE((root / "etc" / "dropbear" / "key").stat().st_mode) == 0o600
    assert (root / "etc" / "motd").read_bytes() == b"hi\n"


@needs_cpio
def test_assemble_overlay_dirs_keep_their_modes(tmp_path: Path) -> None:
    base = tmp_path / "base.cpio"
    buf = io.BytesIO()
    _Plan().write(buf)
    base.write_bytes(buf.getvalue())
    dest = assemble(
        base,
        {"/root/.ssh/authorized_keys": (b"ssh-ed25519 AAAA\n", 0o600)},
        tmp_path / "run.cpio",
        dirs={"/root": 0o700, "/root/.ssh": 0o700},
    )
    root = tmp_path / "x"
    extract(dest.read_bytes()[len(buf.getvalue()) :], root)
    assert stat.S_IMODE((root / "root").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "root" / ".ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "root" / ".ssh" / "authorized_keys").stat().st_mode) == 0o600


# --- ldd output -------------------------------------------------------------------------------

LDD = """\
\tlinux-vdso.so.1 (0x00007ffd0d1f2000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f1c8a5e0000)
\tlibcrypt.so.1 => /lib/x86_64-linux-gnu/libcrypt.so.1 (0x00007f1c8a5a0000)
\tlibmissing.so.2 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1c8a3bf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f1c8a62c000)
"""


def test_shared_libraries_parses_ldd(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=LDD, stderr="")

    monkeypatch.setattr("testbed.guest.initramfs.subprocess.run", fake_run)
    libs = initramfs.shared_libraries(Path("/usr/sbin/dropbear"))
    assert calls == [["ldd", "/usr/sbin/dropbear"]]
    assert libs == [
        Path("/lib/x86_64-linux-gnu/libz.so.1"),
        Path("/lib/x86_64-linux-gnu/libcrypt.so.1"),
        Path("/lib/x86_64-linux-gnu/libc.so.6"),
        Path("/lib64/ld-linux-x86-64.so.2"),
    ]


@pytest.mark.skipif(not Path("/etc/ld.so.cache").is_file(), reason="no loader cache to key on")
def test_ldd_is_remembered_across_processes_until_the_binary_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF v1")
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=LDD, stderr="")

    monkeypatch.setattr("testbed.guest.initramfs.subprocess.run", fake_run)
    first = initramfs.shared_libraries(binary)
    initramfs._MEMO.save()
    # a new process: nothing in memory, the memo file read back
    initramfs._ldd.cache_clear()
    monkeypatch.setattr(initramfs, "_MEMO", initramfs._ProbeMemo())
    assert initramfs.shared_libraries(binary) == first
    assert len(calls) == 1
    assert initramfs._MEMO.path.is_relative_to(tmp_path / "xdg-cache")
    binary.write_bytes(b"\x7fELF version 2")  # another size: another identity
    initramfs.shared_libraries(binary)
    assert len(calls) == 2
    # saved again: the entry of the binary as it was is dropped, only the live one is kept
    initramfs._MEMO.save()
    kept = json.loads(initramfs._MEMO.path.read_text())
    assert [k for k in kept if str(binary) in k] == [
        initramfs._key(
            "ldd", initramfs._identity(binary), initramfs._identity(Path("/etc/ld.so.cache"))
        )
    ]


def test_shared_libraries_failure_is_an_image_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.CalledProcessError(1, argv)

    monkeypatch.setattr("testbed.guest.initramfs.subprocess.run", fake_run)
    with pytest.raises(ImageError, match="ldd /bin/x failed"):
        initramfs.shared_libraries(Path("/bin/x"))


def test_guest_host_key_is_what_dropbear_reads(tmp_path: Path) -> None:
    """The host key the testbed writes in dropbear's format is the key dropbear uses."""
    from testbed.guest.keys import guest_host_key

    pair = guest_host_key(tmp_path)
    out = subprocess.run(
        ["dropbearkey", "-y", "-f", str(pair.private)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    (line,) = [ln for ln in out.splitlines() if ln.startswith("ssh-ed25519 ")]
    assert line.split()[:2] == pair.public.split()[:2]
    assert pair.private.stat().st_mode & 0o077 == 0


@needs_cpio
def test_out_of_tree_modules_go_in_without_debug_sections(tmp_path: Path) -> None:
    """A relocatable ELF built with -g stands in for a .ko: strip keeps code, drops DWARF."""
    src = tmp_path / "mod.c"
    src.write_text("int p2p_answer(int x) { return x * 42; }\n")
    ko = tmp_path / "mod.ko"
    subprocess.run(["gcc", "-g", "-c", "-o", str(ko), str(src)], check=True, timeout=60)
    assert b".debug_info" in ko.read_bytes()
    plan = plan_with()
    plan.add_file("/lib/modules/testbed/mod.ko", initramfs._Stripped(ko))
    unstripped = plan_with()
    unstripped.add_file("/lib/modules/testbed/mod.ko", ko)
    assert plan.digest() != unstripped.digest()
    buf = io.BytesIO()
    plan.write(buf)
    root = tmp_path / "root"
    extract(buf.getvalue(), root)
    shipped = (root / "lib" / "modules" / "testbed" / "mod.ko").read_bytes()
    assert shipped.startswith(b"\x7fELF")
    assert b".debug_info" not in shipped
    assert b"p2p_answer" in shipped, "the symbol table stays (modules need it)"
    assert len(shipped) < ko.stat().st_size
    assert b".debug_info" in ko.read_bytes(), "the host's copy is untouched"


def test_a_file_that_is_no_elf_goes_in_as_it_is(tmp_path: Path) -> None:
    """Nothing to strip: the guest's insmod then reports the bad module at boot."""
    bogus = tmp_path / "bogus.ko"
    bogus.write_bytes(b"not an ELF module\n")
    assert initramfs._Stripped(bogus).read() == b"not an ELF module\n"
