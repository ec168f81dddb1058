"""Building the P2P guest drivers (testbed.guest.modules): error extraction, cache key, sources.

Nothing is compiled here: ``first_error`` runs on kbuild transcripts in ``tests/data/p2p/``
(a gcc error under ``-Werror`` and a modpost failure, paths as a build in a temp copy prints
them), ``cache_key`` on fake kernels in a temp folder, ``source_files`` on the real
``qemu-devices/p2p/`` and on a copy of it littered with build products.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed.guest import modules
from testbed.guest.modules import cache_key, first_error, source_files
from testbed.kernel.image import Kernel

DATA = Path(__file__).resolve().parent.parent / "data" / "p2p"
REAL_SRC = Path(__file__).resolve().parent.parent.parent / "qemu-devices" / "p2p"


# ---- first_error -----------------------------------------------------------------------------


def test_first_gcc_error_wins_over_warnings_and_later_errors() -> None:
    location, message = first_error((DATA / "kbuild-compile-error.log").read_text())
    assert location == "/tmp/p2p-modules-k3j9x_2a/p2p/exporter/p2p_exporter.c:158"
    assert message == (
        "implicit declaration of function 'p2p_compat_evict' "
        "[-Werror=implicit-function-declaration]"
    )


def test_modpost_error_when_nothing_failed_to_compile() -> None:
    location, message = first_error((DATA / "kbuild-modpost-error.log").read_text())
    assert location is None
    assert message == (
        'modpost: "p2p_compat_event" [/tmp/p2p-modules-q81c0d4z/p2p/p2p_importer.ko] undefined!'
    )


def test_compiler_error_beats_an_earlier_modpost_error() -> None:
    output = (
        'ERROR: modpost: "foo" [/tmp/x/p2p/p2p_importer.ko] undefined!\n'
        "/tmp/x/p2p/importer/p2p_importer.c:77:2: error: expected ';' before 'return'\n"
    )
    assert first_error(output) == (
        "/tmp/x/p2p/importer/p2p_importer.c:77",
        "expected ';' before 'return'",
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "/tmp/p/p2p/include/p2p_compat.h:12:1: error: unknown type name 'u99'",
            ("/tmp/p/p2p/include/p2p_compat.h:12", "unknown type name 'u99'"),
        ),
        (
            "/tmp/p/p2p/exporter/p2p_exporter.c:5:10: fatal error: linux/nope.h: No such file "
            "or directory",
            ("/tmp/p/p2p/exporter/p2p_exporter.c:5", "linux/nope.h: No such file or directory"),
        ),
        (
            "exporter/p2p_exporter.c:40: error: old-style message without a column",
            ("exporter/p2p_exporter.c:40", "old-style message without a column"),
        ),
        (
            "   /tmp/p/p2p/p2pctl/p2pctl.c:9:3: error: indented  ",
            ("/tmp/p/p2p/p2pctl/p2pctl.c:9", "indented"),
        ),
        ("FATAL: modpost: GPL-incompatible module p2p_x.ko uses GPL-only symbol 'y'", None),
    ],
)
def test_error_line_shapes(line: str, expected: tuple[str, str] | None) -> None:
    got = first_error(f"  CC [M]  x.o\n{line}\n")
    if expected is None:
        assert got == (None, line.split(": ", 1)[1])
    else:
        assert got == expected


@pytest.mark.parametrize(
    "output",
    [
        "",
        "make: Entering directory '/usr/src/linux-headers-6.1.0-56-cloud-amd64'\n",
        "/tmp/p/p2p/exporter/p2p_exporter.c:140:13: warning: unused variable 'flags'\n",
        "/tmp/p/p2p/exporter/p2p_exporter.c: In function 'exp_create':\n",
        "make[2]: *** [/usr/src/linux-headers-6.1.0-56-common/scripts/Makefile.build:250: "
        "/tmp/p/p2p/exporter/p2p_exporter.o] Error 1\n",
        "cc1: all warnings being treated as errors\n",
        "/tmp/p/p2p/exporter/p2p_exporter.c:158:9: note: each undeclared identifier error: x\n",
    ],
)
def test_no_error_recognised(output: str) -> None:
    assert first_error(output) == (None, None)


def test_first_of_several_modpost_errors() -> None:
    output = 'ERROR: modpost: "a" [m.ko] undefined!\nERROR: modpost: "b" [m.ko] undefined!\n'
    assert first_error(output) == (None, 'modpost: "a" [m.ko] undefined!')


# ---- cache_key -------------------------------------------------------------------------------


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "p2p"
    (root / "exporter").mkdir(parents=True)
    (root / "Makefile").write_text("obj-m += p2p_exporter.o\n")
    (root / "exporter" / "p2p_exporter.c").write_text("int x;\n")
    return root


def fake_kernel(
    tmp_path: Path, release: str = "6.1.0-56-cloud-amd64", config: str | None = "CONFIG_PCI=y\n"
) -> Kernel:
    build = tmp_path / f"build-{release}"
    build.mkdir(exist_ok=True)
    if config is not None:
        (build / ".config").write_text(config)
    return Kernel(
        release=release,
        image=tmp_path / "bzImage",
        modules=tmp_path / "lib" / "modules" / release,
        build=build,
        origin="fake",
    )


GCC = "gcc (Debian 12.2.0-14) 12.2.0"


def key(kernel: Kernel, src: Path, compiler: str = GCC) -> str:
    return cache_key(kernel, src, source_files(src), compiler)


def test_cache_key_is_stable_and_short(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    first = key(kernel, src)
    assert first == key(kernel, src)
    assert len(first) == 20
    int(first, 16)


def test_cache_key_changes_with_one_source_byte(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    before = key(kernel, src)
    (src / "exporter" / "p2p_exporter.c").write_text("int y;\n")
    assert key(kernel, src) != before


def test_cache_key_changes_with_the_makefile(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    before = key(kernel, src)
    (src / "Makefile").write_text("obj-m += p2p_exporter.o \n")
    assert key(kernel, src) != before


def test_cache_key_changes_when_a_file_moves(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    before = key(kernel, src)
    (src / "importer").mkdir()
    (src / "exporter" / "p2p_exporter.c").rename(src / "importer" / "p2p_exporter.c")
    assert key(kernel, src) != before


def test_cache_key_changes_when_bytes_move_between_files(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    (src / "Makefile").write_text("ab")
    (src / "exporter" / "p2p_exporter.c").write_text("c")
    before = key(kernel, src)
    (src / "Makefile").write_text("a")
    (src / "exporter" / "p2p_exporter.c").write_text("bc")
    assert key(kernel, src) != before


def test_cache_key_changes_with_the_kernel_release(tmp_path: Path, src: Path) -> None:
    a = fake_kernel(tmp_path, "6.1.0-56-cloud-amd64")
    b = fake_kernel(tmp_path, "6.1.0-57-cloud-amd64")
    assert key(a, src) != key(b, src)


def test_cache_key_changes_with_the_compiler(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    assert key(kernel, src) != key(kernel, src, "gcc (Debian 12.2.0-14+deb12u1) 12.2.0")


def test_cache_key_changes_with_the_kernel_config(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    before = key(kernel, src)
    assert kernel.build is not None
    (kernel.build / ".config").write_text("CONFIG_PCI=y\nCONFIG_KASAN=y\n")
    after = key(kernel, src)
    assert after != before
    (kernel.build / ".config").unlink()
    assert key(kernel, src) not in (before, after)


def test_cache_key_changes_with_module_symvers(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    before = key(kernel, src)
    assert kernel.build is not None
    (kernel.build / "Module.symvers").write_text("0x12345678\tpci_p2pdma_add_resource\tvmlinux\n")
    assert key(kernel, src) != before


def test_cache_key_ignores_what_the_build_does_not_read(tmp_path: Path, src: Path) -> None:
    kernel = fake_kernel(tmp_path)
    before = key(kernel, src)
    (src / "README.md").write_text("docs\n")
    (src / "exporter" / "p2p_exporter.o").write_bytes(b"\x7fELF")
    assert kernel.build is not None
    (kernel.build / "System.map").write_text("ffffffff81000000 T _text\n")
    assert key(kernel, src) == before


def test_cache_key_without_a_build_tree(tmp_path: Path, src: Path) -> None:
    kernel = Kernel("6.1.0-56-cloud-amd64", tmp_path / "bzImage", None, None, "fake")
    without = key(kernel, src)
    with_config = fake_kernel(tmp_path)
    assert without != key(with_config, src)
    assert with_config.build is not None
    (with_config.build / ".config").unlink()
    assert key(with_config, src) == without


# ---- source_files ----------------------------------------------------------------------------

CORE = {
    Path("Makefile"),
    Path("exporter/p2p_exporter.c"),
    Path("importer/p2p_importer.c"),
    Path("include/p2p_compat.h"),
    Path("include/uapi/p2p_testbed.h"),
    Path("p2pctl/p2pctl.c"),
}


def test_source_dir_is_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_DEVICES_DIR", raising=False)
    assert modules.source_dir().resolve() == REAL_SRC.resolve()


def test_source_files_of_the_real_drivers() -> None:
    files = source_files(REAL_SRC)
    assert set(files) >= CORE
    assert files == sorted(files)
    assert len(set(files)) == len(files)
    for rel in files:
        assert not rel.is_absolute()
        assert (REAL_SRC / rel).is_file()
        assert rel.suffix in (".c", ".h") or rel.name in ("Makefile", "Kbuild"), rel
        assert not rel.name.endswith(".mod.c"), rel
    assert Path("README.md") not in files


def test_source_files_ignore_build_products(tmp_path: Path) -> None:
    copy = tmp_path / "p2p"
    shutil.copytree(REAL_SRC, copy)
    clean = source_files(copy)
    assert clean == source_files(REAL_SRC)
    for name in (
        "p2p_exporter.ko",
        "p2p_exporter.o",
        "p2p_exporter.mod",
        "p2p_exporter.mod.c",
        "p2p_exporter.mod.o",
        ".p2p_exporter.ko.cmd",
        ".p2p_exporter.mod.c.swp",
        "modules.order",
        "Module.symvers",
        "exporter/p2p_exporter.o",
        "exporter/.p2p_exporter.o.cmd",
        "exporter/.#p2p_exporter.c",
        "exporter/p2p_exporter.c~",
        "exporter/p2p_exporter.c.orig",
        "p2pctl/p2pctl",
    ):
        (copy / name).write_bytes(b"built")
    assert source_files(copy) == clean


def test_source_files_see_a_new_header_and_a_kbuild(tmp_path: Path) -> None:
    copy = tmp_path / "p2p"
    shutil.copytree(REAL_SRC, copy)
    before = source_files(copy)
    (copy / "include" / "extra.h").write_text("#define X 1\n")
    (copy / "importer" / "Kbuild").write_text("obj-m += x.o\n")
    assert set(source_files(copy)) - set(before) == {
        Path("include/extra.h"),
        Path("importer/Kbuild"),
    }


# ---- concurrent builds (pytest-xdist workers) --------------------------------------------------


def test_two_processes_building_one_entry_build_it_once(
    tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builders of the same cache entry at once (two workers of ``testbed run -j 2``):
    the second waits for the first's lock and takes its modules instead of compiling again;
    both get complete files. ``make`` is faked: it writes the two .ko files after a pause long
    enough for the other builder to reach the entry."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    both_looked = threading.Barrier(2, timeout=10)
    makes: list[Path] = []

    def compiler_version(cc: str) -> str:
        both_looked.wait()  # both builders past here before either looks in the cache
        return GCC

    def fake_make(build: Path, work: Path) -> subprocess.CompletedProcess[str]:
        makes.append(work)
        threading.Event().wait(0.3)  # the other builder reaches the entry meanwhile
        for name in modules.MODULE_NAMES:
            (work / f"{name}.ko").write_bytes(b"\x7fELF" + name.encode())
        return subprocess.CompletedProcess(["make"], 0, "", "")

    monkeypatch.setattr(modules, "_compiler_version", compiler_version)
    monkeypatch.setattr(modules, "_make", fake_make)
    monkeypatch.setattr(modules, "build_tool", lambda *a, **k: tmp_path / "p2pctl")
    kernel = fake_kernel(tmp_path)
    with ThreadPoolExecutor(2) as pool:
        builds = list(pool.map(lambda _: modules.build_p2p_modules(kernel, src=src), range(2)))
    assert len(makes) == 1, "the second builder compiled again instead of waiting"
    assert builds[0] == builds[1]
    for name, ko in zip(modules.MODULE_NAMES, builds[0].modules, strict=True):
        assert ko.read_bytes() == b"\x7fELF" + name.encode()
    leftovers = [p.name for p in ko.parent.iterdir() if p.name not in {".lock"}]
    assert sorted(leftovers) == sorted(f"{n}.ko" for n in modules.MODULE_NAMES)


def test_cache_key_changes_with_the_kernels_origin(tmp_path: Path, src: Path) -> None:
    """Two builds of one release that differ only in a header (a series prefix) share release,
    .config and Module.symvers; their cache entries (named in the origin) must tell them apart."""
    kernel = fake_kernel(tmp_path)
    other = dataclasses.replace(kernel, origin="testbed kernel build demo [other-key]")
    assert key(kernel, src) != key(other, src)


def test_cache_key_follows_a_user_images_bytes(tmp_path: Path, src: Path) -> None:
    """A user's tree keeps its path (its origin) across rebuilds: the image's bytes decide."""
    kernel = fake_kernel(tmp_path)
    kernel.image.write_bytes(b"bzImage one")
    first = key(kernel, src)
    kernel.image.write_bytes(b"bzImage two")
    assert key(kernel, src) != first
