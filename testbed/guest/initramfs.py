"""The guest image: an initramfs the testbed assembles from the host's own binaries.

The *base* archive holds busybox (static), dropbear with the shared libraries ``ldd`` reports,
the kernel modules the guest needs (the closure of the requested names through the kernel's
``modules.dep``, never a hand-written list), the start-up scripts in ``rootfs/``, and any
extra files (guest drivers, helpers; a dynamically linked helper brings its shared libraries
too). The guest kernel unpacks the archive before it runs init, and under TCG that costs
time in proportion to its size, so the out-of-tree modules go in without their debug
sections (``strip --strip-debug``; the host keeps the full ``.ko``).

The archive is cached under ``~/.cache/p2p-testbed/initramfs/`` by a hash of everything that
goes into it, so changing any input (a new kernel, a rebuilt guest module, an edited rcS)
makes a new one.

Per-run secrets (the guest's host key and the client's public key) go into a small second
archive that is concatenated to the base: the kernel unpacks both, and the cached base never
holds a key.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from testbed import paths
from testbed.errors import DependencyError, ImageError
from testbed.guest.cpio import CpioWriter
from testbed.kernel.image import Kernel

log = logging.getLogger(__name__)

ROOTFS = Path(__file__).parent / "rootfs"
#: Kernel modules every guest loads first: the NIC that carries SSH.
NET_MODULES = ("virtio_pci", "virtio_net")
#: Loaded right after sshd starts (while the host connects): the panic notifier.
BASE_MODULES = ("pvpanic_pci",)
#: Bumped when the layout changes in a way file hashes would not show.
_FORMAT = 3

BUSYBOX = Path("/bin/busybox")
DROPBEAR = Path("/usr/sbin/dropbear")


@dataclass(frozen=True)
class GuestFile:
    """A host file to place in the guest at ``guest_path``."""

    guest_path: str
    host_path: Path
    mode: int = 0o644


@dataclass(frozen=True)
class ImageSpec:
    """What goes into a guest's base initramfs."""

    kernel: Kernel
    net_modules: tuple[str, ...] = NET_MODULES  #: loaded before sshd starts, by name
    boot_modules: tuple[str, ...] = BASE_MODULES  #: loaded after sshd starts, by name
    extra_modules: tuple[Path, ...] = ()  #: out-of-tree .ko files loaded at boot, in order
    extra_files: tuple[GuestFile, ...] = field(default=())


# --- kernel modules ------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            return _norm(base[: -len(suffix)])
    return _norm(base)


def resolve_modules(modules_dir: Path, names: Iterable[str]) -> list[str]:
    """Paths (relative to ``modules_dir``) of ``names`` and all they depend on, deps first.

    Names built into the kernel (``modules.builtin``) resolve to nothing.
    """
    dep_file = modules_dir / "modules.dep"
    try:
        lines = dep_file.read_text().splitlines()
    except FileNotFoundError as exc:
        raise ImageError(f"{dep_file}: missing; run depmod for this kernel") from exc
    # name -> (path, its dependencies' paths, unparsed): a distribution kernel lists thousands
    # of modules, and this runs before every boot, so only the visited entries are split.
    deps: dict[str, tuple[str, str]] = {}
    for line in lines:
        target, sep, rest = line.partition(":")
        if sep:
            deps[_module_name(target)] = (target, rest)
    builtin_file = modules_dir / "modules.builtin"
    builtin = (
        {_module_name(x) for x in builtin_file.read_text().split()}
        if builtin_file.is_file()
        else set()
    )
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name not in deps:
            if name in builtin:
                done.add(name)
                return
            raise ImageError(
                f"kernel module {name!r} is neither in {dep_file} nor built in"
                + (f" (needed by {' -> '.join(chain)})" if chain else "")
                + "; check the kernel config or the module name"
            )
        done.add(name)
        path, needs = deps[name]
        for need in needs.split():
            visit(_module_name(need), (*chain, name))
        order.append(path)

    for name in names:
        visit(_norm(name), ())
    return order


# --- host binaries ---------------------------------------------------------------------------


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def _is_static_elf(path: Path) -> bool:
    """True if the ELF64 file has no PT_INTERP program header."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        int.from_bytes(table[i * phentsize : i * phentsize + 4], "little") != 3
        for i in range(phnum)
    )


def _identity(path: Path) -> tuple[str, int, int, int]:
    """What changes when a file changes: memo key for the helpers below."""
    st = path.stat()
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _digest(identity: tuple[str, int, int, int]) -> str:
    return hashlib.sha256(Path(identity[0]).read_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of ``path``, remembered per process while the file is unchanged (every boot
    of a test run hashes the same busybox, dropbear and modules)."""
    return _digest(_identity(path))


def shared_libraries(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads, as ``ldd`` resolves them on this host."""
    try:
        identity = _identity(binary)
    except OSError as exc:
        raise ImageError(f"ldd {binary} failed: {exc}") from exc
    return list(_shared_libraries(identity))


@functools.lru_cache(maxsize=64)
def _shared_libraries(identity: tuple[str, int, int, int]) -> tuple[Path, ...]:
    binary = identity[0]
    try:
        out = subprocess.run(
            ["ldd", binary], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"ldd {binary} failed: {exc}") from exc
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(Path(target))
        elif parts and parts[0].startswith("/"):
            libs.append(Path(parts[0]))  # the dynamic loader itself
    return tuple(libs)


@functools.lru_cache(maxsize=8)
def _applets(identity: tuple[str, int, int, int]) -> tuple[str, ...]:
    return tuple(
        subprocess.run(
            [identity[0], "--list-full"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.split()
    )


def _require(path: Path, package: str) -> Path:
    if not path.is_file():
        raise DependencyError(f"{path} is missing; install it with 'apt-get install {package}'")
    return path


# --- the archive plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stripped:
    """A kernel module placed in the archive without its debug sections."""

    path: Path

    def digest(self) -> str:
        return f"strip-debug:{file_digest(self.path)}"

    def read(self) -> bytes:
        if not _is_elf(self.path):  # not a module at all: the guest's insmod says so, clearly
            return self.path.read_bytes()
        with tempfile.TemporaryDirectory(prefix="p2p-testbed-strip-") as tmp:
            out = Path(tmp) / self.path.name
            try:
                subprocess.run(
                    ["strip", "--strip-debug", "-o", str(out), str(self.path)],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=60,
                )
            except FileNotFoundError as exc:
                raise DependencyError(
                    "strip not found; install it with 'apt-get install binutils'"
                ) from exc
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise ImageError(f"strip --strip-debug {self.path} failed: {exc}") from exc
            return out.read_bytes()


_Content = bytes | Path | _Stripped


@dataclass
class _Plan:
    """Entries of an archive in order: ('dir', path, mode) / ('file', ...) / ('link', ...)."""

    dirs: dict[str, int] = field(default_factory=dict)
    files: dict[str, tuple[_Content, int]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        """Create the folders above ``path`` (0755) unless already planned with a mode."""
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dirs.setdefault("/" + "/".join(parts[:i]), 0o755)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.dirs["/" + path.strip("/")] = mode

    def add_file(self, path: str, content: _Content, mode: int = 0o644) -> None:
        self._parents(path)
        self.files[path] = (content, mode)

    def add_link(self, path: str, target: str) -> None:
        self._parents(path)
        self.links[path] = target

    def digest(self) -> str:
        h = hashlib.sha256(f"format {_FORMAT}\n".encode())
        for path, mode in sorted(self.dirs.items()):
            h.update(f"d {path} {mode:o}\n".encode())
        for path, (content, mode) in sorted(self.files.items()):
            if isinstance(content, Path):
                digest = file_digest(content)
            elif isinstance(content, _Stripped):
                digest = content.digest()
            else:
                digest = hashlib.sha256(content).hexdigest()
            h.update(f"f {path} {mode:o} {digest}\n".encode())
        for path, target in sorted(self.links.items()):
            h.update(f"l {path} {target}\n".encode())
        return h.hexdigest()[:20]

    def write(self, out: BinaryIO) -> None:
        writer = CpioWriter(out)
        for path in sorted(self.dirs):
            if path != "/":
                writer.directory(path, self.dirs[path])
        for path, (content, mode) in sorted(self.files.items()):
            if isinstance(content, Path):
                data = content.read_bytes()
            elif isinstance(content, _Stripped):
                data = content.read()
            else:
                data = content
            writer.file(path, data, mode)
        for path, target in sorted(self.links.items()):
            writer.symlink(path, target)
        writer.close()


def _base_plan(spec: ImageSpec) -> _Plan:
    plan = _Plan()
    for d in ("/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/var/log", "/etc/dropbear"):
        plan.add_dir(d)
    plan.add_dir("/root", 0o700)

    busybox = _require(BUSYBOX, "busybox-static")
    if not _is_static_elf(busybox):
        raise DependencyError(
            f"{busybox} is dynamically linked; install the static one: apt-get install "
            "busybox-static"
        )
    plan.add_file("/bin/busybox", busybox, 0o755)
    for applet in _applets(_identity(busybox)):
        if "/" + applet != "/bin/busybox":
            plan.add_link("/" + applet, "/bin/busybox")
    plan.add_link("/init", "/bin/busybox")

    dropbear = _require(DROPBEAR, "dropbear-bin")
    plan.add_file("/usr/sbin/dropbear", dropbear, 0o755)
    for lib in shared_libraries(dropbear):
        plan.add_file(str(lib), lib.resolve(), 0o755)

    plan.add_file("/etc/inittab", ROOTFS / "inittab")
    plan.add_file("/etc/testbed/rcS", ROOTFS / "rcS", 0o755)
    plan.add_file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    plan.add_file("/etc/group", b"root:x:0:\n")
    plan.add_file("/etc/shells", b"/bin/sh\n")

    kernel = spec.kernel
    mod_root = f"/lib/modules/{kernel.release}"
    net_lines: list[str] = []
    load_lines: list[str] = []
    for names, lines in ((spec.net_modules, net_lines), (spec.boot_modules, load_lines)):
        if not names:
            continue
        if kernel.modules is None:
            raise ImageError(
                f"kernel {kernel.release} has no modules folder, but the guest needs "
                f"{', '.join(names)}; pass --modules, or build them in (=y)"
            )
        for rel in resolve_modules(kernel.modules, names):
            if f"{mod_root}/{rel}" not in net_lines:
                plan.add_file(f"{mod_root}/{rel}", kernel.modules / rel)
                lines.append(f"{mod_root}/{rel}")
    plan.add_file("/etc/testbed/modules.net", "".join(f"{m}\n" for m in net_lines).encode())
    for ko in spec.extra_modules:
        guest = f"/lib/modules/testbed/{ko.name}"
        plan.add_file(guest, _Stripped(_require(ko, "(build it first)")))
        load_lines.append(guest)
    plan.add_file("/etc/testbed/modules.load", "".join(f"{m}\n" for m in load_lines).encode())
    for extra in spec.extra_files:
        host = _require(extra.host_path, "(build it first)")
        plan.add_file(extra.guest_path, host, extra.mode)
        if _is_elf(host) and not _is_static_elf(host):
            for lib in shared_libraries(host):
                plan.add_file(str(lib), lib.resolve(), 0o755)
    return plan


def build_base(spec: ImageSpec) -> Path:
    """The cached base archive for ``spec``, built if no archive with this content exists."""
    plan = _base_plan(spec)
    cache = paths.cache_dir() / "initramfs"
    dest = cache / f"{plan.digest()}.cpio"
    if dest.is_file():
        paths.mark_used(dest)
        return dest
    log.info("building guest initramfs %s", dest.name)
    with paths.cache_writes(cache, "the guest initramfs"):
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".build-")
        try:
            with os.fdopen(fd, "wb") as out:
                plan.write(out)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        listing = cache / f"{dest.stem}.json"
        partial = listing.with_name(f".{listing.name}.{os.getpid()}")
        partial.write_text(
            json.dumps({"kernel": spec.kernel.release, "files": sorted(plan.files)}, indent=1)
        )
        os.replace(partial, listing)
    return dest


def assemble(
    base: Path,
    overlay: dict[str, tuple[bytes, int]],
    dest: Path,
    dirs: dict[str, int] | None = None,
) -> Path:
    """Write ``base`` followed by a small archive of ``overlay`` files (and ``dirs``, by mode)
    to ``dest``. Entries here override the base's: the kernel unpacks the archives in order."""
    plan = _Plan()
    for path, mode in (dirs or {}).items():
        plan.add_dir(path, mode)
    for path, (data, mode) in overlay.items():
        plan.add_file(path, data, mode)
    buf = io.BytesIO()
    plan.write(buf)
    with base.open("rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.write(buf.getvalue())
    return dest
