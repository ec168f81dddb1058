"""The default kernel: Debian's stock amd64 kernel package, fetched with ``apt-get download``.

The image, its modules, the matching headers and kbuild tools are unpacked into one root under
``~/.cache/p2p-testbed/kernels/<key>/root``, where ``<key>`` hashes the SHA256 sums apt
publishes for the four packages: a new Debian upload gets a new entry, an old entry is never
reused for different bytes. ``depmod`` is run on the unpacked modules (the package ships no
``modules.dep``), and the headers' Makefile, which includes the common headers by absolute
path, is pointed at the unpacked copy so out-of-tree guest modules build against the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.errors import DependencyError, KernelError
from testbed.kernel.image import Kernel

log = logging.getLogger(__name__)

DEFAULT_FLAVOUR = "cloud-amd64"
#: apt's package lists; ``apt-get update`` renames files in here, which changes its mtime.
APT_LISTS = Path("/var/lib/apt/lists")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    size: int


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    except FileNotFoundError as exc:
        raise DependencyError(
            f"{argv[0]} not found, needed to {what}; run ci/setup.sh (Debian 12)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise KernelError(
            f"{' '.join(argv)} took longer than 600 s while trying to {what}"
        ) from exc
    if proc.returncode != 0:
        raise KernelError(
            f"could not {what}: {' '.join(argv)} exited with {proc.returncode}\n"
            + (proc.stderr or proc.stdout).strip()
        )
    return proc.stdout


def _package(name: str) -> Package:
    out = _run(["apt-cache", "show", "--no-all-versions", name], f"look up {name}")
    fields: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("Package", "Version", "SHA256", "Size") and key not in fields:
            fields[key] = value.strip()
    if not {"Version", "SHA256", "Size"} <= fields.keys():
        raise KernelError(f"apt-cache has no download record for {name}; run 'apt-get update'")
    return Package(name, fields["Version"], fields["SHA256"], int(fields["Size"]))


def _depends(name: str, prefix: str) -> list[str]:
    out = _run(
        ["apt-cache", "depends", "--no-recommends", "--no-suggests", name], f"resolve {name}"
    )
    found = []
    for line in out.splitlines():
        kind, _, dep = line.strip().lstrip("|").partition(": ")
        if kind == "Depends" and dep.startswith(prefix):
            found.append(dep)
    return found


def resolve(flavour: str = DEFAULT_FLAVOUR) -> list[Package]:
    """The four packages of the current stock kernel for ``flavour``, newest first in apt."""
    meta = f"linux-image-{flavour}"
    images = [d for d in _depends(meta, "linux-image-") if not d.endswith("-unsigned")]
    if not images:
        raise KernelError(
            f"apt knows no package {meta!r}; run 'apt-get update', or check the flavour "
            "(amd64, cloud-amd64, rt-amd64)"
        )
    image = images[0]
    release = image.removeprefix("linux-image-")
    headers = f"linux-headers-{release}"
    deps = _depends(headers, "linux-")
    common = [d for d in deps if d.startswith("linux-headers-") and d.endswith("-common")]
    kbuild = [d for d in deps if d.startswith("linux-kbuild-")]
    if not common or not kbuild:
        raise KernelError(f"cannot find the common headers and kbuild packages of {headers}")
    return [_package(n) for n in (image, headers, common[0], kbuild[0])]


def _key(packages: list[Package]) -> str:
    digest = hashlib.sha256("".join(p.sha256 for p in packages).encode()).hexdigest()
    return digest[:20]


def _kernels_root() -> Path:
    root = paths.cache_dir() / "kernels"
    with paths.cache_writes(root, "the kernel cache"):
        root.mkdir(parents=True, exist_ok=True)
    return root


def _from_entry(entry: Path) -> Kernel:
    manifest = json.loads((entry / "manifest.json").read_text())
    release = manifest["release"]
    root = entry / "root"
    image = root / "boot" / f"vmlinuz-{release}"
    pkgs = ", ".join(f"{p['name']} {p['version']}" for p in manifest["packages"])
    return Kernel(
        release=release,
        image=image,
        modules=root / "lib" / "modules" / release,
        build=root / "usr" / "src" / f"linux-headers-{release}",
        origin=f"Debian {pkgs} (sha256 {manifest['packages'][0]['sha256'][:16]}...)",
    )


def cached(flavour: str = DEFAULT_FLAVOUR) -> list[Kernel]:
    """Complete cached kernels of ``flavour``, newest first."""
    entries = []
    for manifest in _kernels_root().glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        if data.get("flavour") == flavour:
            entries.append((manifest.stat().st_mtime, manifest.parent))
    return [_from_entry(e) for _, e in sorted(entries, reverse=True)]


def _lists_stamp() -> int | None:
    """The mtime (ns) of apt's package lists folder, or None if there is none."""
    try:
        return APT_LISTS.stat().st_mtime_ns
    except OSError:
        return None


def _record_path(flavour: str) -> Path:
    return _kernels_root() / f"current-{flavour}.json"


def _remember(flavour: str, key: str, stamp: int | None) -> None:
    """Record that apt, with its lists at ``stamp``, named cache entry ``key`` as current."""
    path = _record_path(flavour)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"flavour": flavour, "entry": key, "apt_lists_mtime_ns": stamp}))
    tmp.replace(path)


def _recorded(flavour: str) -> Path | None:
    """The cache entry apt last named current, if apt's lists have not changed since."""
    try:
        record = json.loads(_record_path(flavour).read_text())
        entry = _kernels_root() / str(record["entry"])
        stamp = record["apt_lists_mtime_ns"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if stamp != _lists_stamp() or not (entry / "manifest.json").is_file():
        return None
    return entry


def stock_kernel(flavour: str = DEFAULT_FLAVOUR, *, offline_ok: bool = True) -> Kernel:
    """The current stock Debian kernel of ``flavour``, fetched into the cache if needed.

    Runs no apt command when the cache records which kernel is current and apt's lists have
    not changed since (see the module docstring). If apt cannot be asked (no package lists,
    no network) and ``offline_ok``, the newest cached kernel of that flavour is used, with a
    notice.
    """
    entry = _recorded(flavour)
    if entry is not None:
        paths.mark_used(entry)
        return _from_entry(entry)
    return update(flavour, offline_ok=offline_ok)


def update(flavour: str = DEFAULT_FLAVOUR, *, offline_ok: bool = False) -> Kernel:
    """Ask apt which stock kernel is current now, fetch it if it is not cached, record it."""
    stamp = _lists_stamp()
    try:
        packages = resolve(flavour)
    except (KernelError, DependencyError) as exc:
        have = cached(flavour) if offline_ok else []
        if not have:
            raise
        log.warning("cannot ask apt for the current kernel (%s); using cached %s", exc, have[0])
        return have[0]
    root = _kernels_root()
    key = _key(packages)
    entry = root / key
    if not (entry / "manifest.json").is_file():
        with paths.cache_lock(root / ".lock", "the kernel cache"):
            if not (entry / "manifest.json").is_file():  # not fetched by another process meanwhile
                _fetch(packages, entry, flavour)
    _remember(flavour, key, stamp)
    return _from_entry(entry)


def _fetch(packages: list[Package], entry: Path, flavour: str) -> None:
    total = sum(p.size for p in packages) / 1e6
    log.info(
        "fetching Debian kernel %s %s (%.0f MB, 4 packages) into %s",
        packages[0].name,
        packages[0].version,
        total,
        entry,
    )
    release = packages[0].name.removeprefix("linux-image-")
    with paths.cache_writes(entry.parent, f"the kernel {packages[0].name}"):
        _fetch_into(entry, packages, flavour, release)


def _fetch_into(entry: Path, packages: list[Package], flavour: str, release: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=entry.parent))
    try:
        os.chmod(work, 0o755)  # apt's _apt user must be able to write the downloads here
        debs = work / "debs"
        debs.mkdir()
        os.chmod(debs, 0o777)
        _download(packages, debs)
        root = work / "root"
        for pkg in packages:
            deb = next(debs.glob(f"{pkg.name}_*.deb"))
            with deb.open("rb") as f:
                got = hashlib.file_digest(f, "sha256").hexdigest()
            if got != pkg.sha256:
                raise KernelError(f"{deb.name}: checksum differs from apt's record; try again")
            _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpack {deb.name}")
        shutil.rmtree(debs)
        _run(["depmod", "-b", str(root), release], "index the kernel modules (depmod)")
        _retarget_headers(root, release)
        manifest = {
            "flavour": flavour,
            "release": release,
            "packages": [p.__dict__ for p in packages],
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        work.rename(entry)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _download(packages: list[Package], dest: Path) -> None:
    argv = ["apt-get", "download", "-q", *[f"{p.name}={p.version}" for p in packages]]
    try:
        proc = subprocess.run(
            argv, cwd=dest, capture_output=True, text=True, check=False, timeout=600
        )
    except FileNotFoundError as exc:
        raise DependencyError("apt-get not found; the stock kernel needs Debian's apt") from exc
    except subprocess.TimeoutExpired as exc:
        raise KernelError("apt-get download took longer than 600 s") from exc
    if proc.returncode != 0:
        raise KernelError(
            f"apt-get download failed (exit {proc.returncode}): {proc.stderr.strip()}\n"
            "  fix: run 'apt-get update', or pass your own --kernel bzImage --modules DIR"
        )


def _retarget_headers(root: Path, release: str) -> None:
    """Point the flavour headers' Makefile at the unpacked common headers, not /usr/src.

    The path is made relative to the Makefile itself, so the cache entry can be renamed.
    """
    makefile = root / "usr" / "src" / f"linux-headers-{release}" / "Makefile"
    text = makefile.read_text()
    here = "$(dir $(realpath $(firstword $(MAKEFILE_LIST))))"
    fixed = text.replace("include /usr/src/", f"include {here}../")
    if fixed == text:
        raise KernelError(f"{makefile}: unexpected layout, no 'include /usr/src/' to retarget")
    makefile.write_text(fixed)
