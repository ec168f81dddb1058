"""``testbed kernel build``: a guest kernel from source + patch series + config fragments.

The recipe (:class:`Request`) is hashed -- source identity, base config, each fragment, each
patch, the compiler's version and this module's recipe version -- into the key of a cache
entry under ``~/.cache/p2p-testbed/kbuild/kernels/<key>/``::

    bzImage                       the image to boot
    modules/lib/modules/<rel>/    modules_install output (depmod'ed), build -> ../../../build
    build/                        a stand-alone kbuild tree for out-of-tree guest modules
    config                        the .config it was built with
    patches.txt                   the applied series, one patch per line with its SHA-256
    build.log                     everything make printed
    manifest.json                 the recipe, release and timings

An entry is written to a temp folder and renamed into place when complete, so a failed or
interrupted build leaves nothing a later run would take as built; an unchanged request finds
its entry and costs no build.

Builds are incremental: each (source, base, fragments) has one work folder
``kbuild/work/<id>/`` with ``src/`` (a hard-linked copy of the pristine unpacked source, with
the current series applied) and ``src/testbed-obj/`` (the ``O=`` tree). Switching series
rewrites only the files whose patched content differs (new files are renamed into place, so
the pristine copy behind the hard links is never written), and make rebuilds what depends on
them. ccache (``kbuild/ccache``) makes a return to an earlier state cheap too; the ``O=`` tree
sits inside the source so kbuild uses relative paths and ccache hits across work trees.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed import paths
from testbed.config.kernels import BaseConfig, KernelSpec
from testbed.errors import DependencyError, KernelError
from testbed.kernel import kconfig, series
from testbed.kernel.image import Kernel
from testbed.kernel.source import Source, resolve, unpacked

log = logging.getLogger(__name__)

#: bump when the build steps change in a way that changes the output
RECIPE_VERSION = 1
#: fixed build stamps: the same recipe gives the same bytes, and ccache hits on init/version.c
_STAMPS = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01",
    "KBUILD_BUILD_USER": "testbed",
    "KBUILD_BUILD_HOST": "p2p-testbed",
}
BUILD_TIMEOUT = 3 * 3600
PROGRESS_EVERY = 15.0
OBJ_DIR = "testbed-obj"


def kbuild_cache() -> Path:
    return paths.cache_dir() / "kbuild"


@dataclass(frozen=True)
class Request:
    """Everything a build depends on, resolved and read: the cache key is a hash of it."""

    name: str
    source: Source
    base: BaseConfig
    fragments: tuple[kconfig.Fragment, ...]
    series: series.Series | None
    compiler: str  #: first line of ``gcc --version``

    def _digest(self, parts: list[str]) -> str:
        h = hashlib.sha256()
        for part in parts:
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def work_id(self) -> str:
        """The work folder: one per source, base config and fragments (not series)."""
        parts = [str(RECIPE_VERSION), self.source.identity, self.base.value]
        for frag in self.fragments:
            parts += [Path(frag.path).name, frag.text]
        return self._digest(parts)[:16]

    def key(self) -> str:
        parts = [self.work_id(), self.compiler]
        for patch in self.series.patches if self.series else ():
            parts += [patch.name, str(patch.strip), hashlib.sha256(patch.data).hexdigest()]
        return self._digest(parts)[:20]

    def describe(self) -> str:
        frags = ", ".join(Path(f.path).name for f in self.fragments)
        ser = (
            f", series {self.series.name} ({len(self.series.patches)} patches)"
            if self.series
            else ""
        )
        return f"{self.source.label}, {self.base.value} + {frags}{ser}"


def compiler_version() -> str:
    try:
        proc = subprocess.run(
            ["gcc", "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        raise DependencyError("gcc not found, needed to build a kernel; run ci/setup.sh") from exc
    return proc.stdout.splitlines()[0] if proc.stdout else "gcc (unknown)"


def request_for(spec: KernelSpec, config_dir: Path | None = None) -> Request:
    """Resolve ``spec`` (a named kernel) into a :class:`Request`: source identity, fragments
    and patches read. Cheap: no unpacking, the tarball's hash is memoised."""
    config_dir = config_dir or paths.kernel_config_dir()
    where = spec.source or f"kernel {spec.name}"
    yaml_dir = Path(spec.source.rsplit(":", 1)[0]).parent if spec.source else config_dir
    src = resolve(spec.tree, yaml_dir, kbuild_cache() / "source-ids.json", where)
    fragments = tuple(kconfig.read_fragment(config_dir / f) for f in spec.fragments)
    ser = series.load_series(config_dir / "patches" / spec.series) if spec.series else None
    return Request(spec.name, src, spec.base, fragments, ser, compiler_version())


# --- the cache ------------------------------------------------------------------------------


def entry_dir(request: Request) -> Path:
    return kbuild_cache() / "kernels" / request.key()


def cached(request: Request) -> Kernel | None:
    """The built kernel for ``request``, if its cache entry is complete (marked used)."""
    kernel = _load_entry(entry_dir(request))
    if kernel is not None:
        paths.mark_used(entry_dir(request))
        record_request(request)
    return kernel


# --- the request an entry was built from ----------------------------------------------------
#
# A kernel handed on as files (``testbed run --kernel <entry>/bzImage``, as regress and bisect
# do for each side and series prefix) loses its recipe, but a kselftest must be built from the
# same source with the same series applied. So each entry keeps ``request.json``: the request
# in full (fragment texts, patch bytes), from which the same Request -- same key -- is rebuilt.

REQUEST_FILE = "request.json"


def request_json(request: Request) -> dict[str, object]:
    ser = request.series
    return {
        "key": request.key(),
        "name": request.name,
        "source": {
            "kind": request.source.kind,
            "path": str(request.source.path),
            "identity": request.source.identity,
            "label": request.source.label,
        },
        "base": request.base.value,
        "fragments": [{"path": f.path, "text": f.text} for f in request.fragments],
        "series": None
        if ser is None
        else {
            "name": ser.name,
            "path": str(ser.path),
            "patches": [
                {
                    "name": p.name,
                    "path": str(p.path),
                    "strip": p.strip,
                    "line": p.line,
                    "data": base64.b64encode(p.data).decode(),
                }
                for p in ser.patches
            ],
        },
        "compiler": request.compiler,
    }


def request_from_json(data: dict[str, object]) -> Request:
    """The inverse of :func:`request_json`; raises KernelError if the result's key is not the
    recorded one (a hand-edited or foreign file)."""
    try:
        src = data["source"]
        ser = data["series"]
        assert isinstance(src, dict) and isinstance(data["fragments"], list)
        patches: tuple[series.Patch, ...] = ()
        if ser is not None:
            assert isinstance(ser, dict)
            patches = tuple(
                series.Patch(
                    p["name"], Path(p["path"]), int(p["strip"]), base64.b64decode(p["data"]),
                    int(p["line"]),
                )
                for p in ser["patches"]
            )  # fmt: skip
        request = Request(
            name=str(data["name"]),
            source=Source(src["kind"], Path(src["path"]), src["identity"], src["label"]),
            base=BaseConfig(data["base"]),
            fragments=tuple(
                kconfig.parse_fragment(f["text"], f["path"]) for f in data["fragments"]
            ),
            series=None if ser is None else series.Series(ser["name"], Path(ser["path"]), patches),
            compiler=str(data["compiler"]),
        )
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise KernelError(f"a kernel build record is malformed: {exc!r}") from exc
    if request.key() != data.get("key"):
        raise KernelError(
            f"a kernel build record says key {data.get('key')} but describes {request.key()}"
        )
    return request


def record_request(request: Request) -> None:
    """Write ``request.json`` into ``request``'s entry unless it is there (best effort: a
    read-only cache loses only the record)."""
    target = entry_dir(request) / REQUEST_FILE
    if target.is_file():
        return
    with contextlib.suppress(OSError):
        tmp = target.with_name(f".{REQUEST_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(request_json(request)) + "\n")
        tmp.replace(target)


def request_of_image(image: Path) -> Request | None:
    """The request a built kernel's bzImage (``<entry>/bzImage``) was built from, if it is a
    cache entry with a record; None for any other image."""
    record = image.parent / REQUEST_FILE
    if image.name != "bzImage" or not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise KernelError(f"{record}: unreadable kernel build record: {exc}") from exc
    if not isinstance(data, dict):
        raise KernelError(f"{record}: not a kernel build record")
    return request_from_json(data)


def _load_entry(entry: Path) -> Kernel | None:
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    release = manifest["release"]
    return Kernel(
        release=release,
        image=entry / "bzImage",
        modules=entry / "modules" / "lib" / "modules" / release,
        build=entry / "build",
        origin=f"testbed kernel build {manifest['name']}: {manifest['recipe']} [{entry.name}]",
    )


def built() -> list[Kernel]:
    """Every complete entry of the build cache (for ``testbed doctor``)."""
    folder = kbuild_cache() / "kernels"
    if not folder.is_dir():
        return []
    found = (_load_entry(p) for p in sorted(folder.iterdir()) if not p.name.startswith("."))
    return [k for k in found if k is not None]


# --- progress -------------------------------------------------------------------------------


class Progress:
    """A plain line per stage, and while make runs a line every ``every`` seconds with the
    number of objects built so far (of the previous build's count, when known) and the last
    one. Lines, not a redrawn bar: they read the same in a terminal and in CI logs."""

    def __init__(self, name: str, every: float = PROGRESS_EVERY) -> None:
        self.name = name
        self.every = every
        self.started = time.monotonic()

    def stage(self, text: str) -> None:
        log.info("kernel %s: %s", self.name, text)

    def run_make(self, argv: list[str], env: dict[str, str], log_file: Path, expected: int) -> int:
        """Run make with output to ``log_file``; return (exit code) and report progress."""
        count = 0
        last = ""
        lock = threading.Lock()
        done = threading.Event()

        def reporter() -> None:
            while not done.wait(self.every):
                with lock:
                    n, what = count, last
                of = f" (a full build has {expected})" if expected else ""
                log.info(
                    "kernel %s: %d steps%s, %ds, last: %s",
                    self.name,
                    n,
                    of,
                    int(time.monotonic() - self.started),
                    what,
                )

        thread = threading.Thread(target=reporter, daemon=True)
        with log_file.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
            thread.start()
            assert proc.stdout is not None
            try:
                for raw in proc.stdout:
                    out.write(raw)
                    line = raw.decode("utf-8", "replace").rstrip()
                    if line.startswith("  ") and len(line) > 10 and line[2:10].strip().isupper():
                        with lock:
                            count += 1
                            last = line.strip()
                rc = proc.wait(timeout=BUILD_TIMEOUT)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                done.set()
                thread.join()
        return rc


_ERROR = re.compile(r"^([^\s:]+:\d+(?::\d+)?): (?:fatal )?error: (.*)$")


def _first_error(log_text: str) -> str:
    for line in log_text.splitlines():
        match = _ERROR.match(line)
        if match:
            return f"{match.group(1)}: error: {match.group(2)}"
    tail = [ln for ln in log_text.splitlines() if ln.strip()][-8:]
    return "\n    ".join(tail)


# --- the steps ------------------------------------------------------------------------------


def _env(ccache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(_STAMPS)
    env["CCACHE_DIR"] = str(ccache_dir)
    env.setdefault("CCACHE_MAXSIZE", "5G")
    env["LC_ALL"] = "C"
    return env


def _make(src: Path, obj: Path, *targets: str, jobs: int = 1) -> list[str]:
    cc = "ccache gcc" if shutil.which("ccache") else "gcc"
    return ["make", "-C", str(src), f"O={obj}", f"CC={cc}", f"-j{jobs}", *targets]


def _run(argv: list[str], env: dict[str, str], log_file: Path, what: str) -> None:
    with log_file.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1800, check=False
        )
    if proc.returncode != 0:
        text = log_file.read_text(errors="replace")
        raise KernelError(
            f"{what} failed (exit {proc.returncode}): {_first_error(text[-20000:])}\n"
            f"  full log: {log_file}"
        )


def _same(a: Path, b: Path) -> bool:
    if not a.exists() or not b.exists():
        return a.exists() == b.exists()
    if a.stat().st_size != b.stat().st_size:
        return False
    return a.read_bytes() == b.read_bytes()


def sync_series(pristine: Path, src: Path, state_file: Path, ser: series.Series | None) -> int:
    """Make ``src`` (a hard-linked copy of ``pristine``) equal to ``pristine`` + ``ser``,
    rewriting only files whose content changes. Returns the number of files rewritten.

    The series is applied to a scratch copy of the files it (and the previously applied
    series) touches; only when every patch applied is ``src`` changed, so a patch that does
    not apply leaves the work tree exactly as it was.
    """
    previous: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        previous = list(json.loads(state_file.read_text())["files"])
    files = list(dict.fromkeys([*previous, *(ser.files() if ser else ())]))
    if not files:
        return 0
    scratch = Path(tempfile.mkdtemp(prefix=".patch-", dir=src.parent))
    try:
        for rel in files:
            if (pristine / rel).is_file():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pristine / rel, scratch / rel)
        if ser is not None:
            series.apply(ser, scratch)
        # From here on src may differ from any recorded state: record the union first, so an
        # interrupted sync is repaired by the next one.
        state_file.write_text(json.dumps({"files": files}))
        changed = 0
        for rel in files:
            new, cur = scratch / rel, src / rel
            if _same(new, cur):
                continue
            changed += 1
            if new.exists():
                cur.parent.mkdir(parents=True, exist_ok=True)
                tmp = cur.with_name(f".{cur.name}.testbed-new")
                shutil.copyfile(new, tmp)
                os.replace(tmp, cur)  # a new inode: the pristine file behind the link is kept
            else:
                cur.unlink(missing_ok=True)
        state_file.write_text(json.dumps({"files": list(ser.files()) if ser else []}))
        return changed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def configure(request: Request, src: Path, obj: Path, env: dict[str, str], log_file: Path) -> None:
    """base config + fragments (merge_config.sh) + olddefconfig, then check every option."""
    frag_dir = obj / "testbed-fragments"
    shutil.rmtree(frag_dir, ignore_errors=True)
    frag_dir.mkdir()
    frag_paths = []
    for i, frag in enumerate(request.fragments):
        p = frag_dir / f"{i:02d}-{Path(frag.path).name}"
        p.write_text(frag.text)
        frag_paths.append(str(p))
    _run(_make(src, obj, request.base.value), env, log_file, f"make {request.base.value}")
    _run(
        [
            str(src / "scripts/kconfig/merge_config.sh"),
            "-m",
            "-O",
            str(obj),
            str(obj / ".config"),
            *frag_paths,
        ],
        env,
        log_file,
        "scripts/kconfig/merge_config.sh",
    )
    _run(_make(src, obj, "olddefconfig"), env, log_file, "make olddefconfig")
    requested, _ = kconfig.merge(request.fragments)
    dotconfig = kconfig.parse_dotconfig((obj / ".config").read_text())
    misses = kconfig.check(requested, dotconfig)
    if misses:
        explained = kconfig.explain(misses, dotconfig, kconfig.read_kconfig_tree(src))
        raise KernelError(
            f"{len(misses)} requested option(s) did not survive 'make olddefconfig':\n  "
            + "\n  ".join(m.describe() for m in explained)
            + "\n  fix: add the dependencies to the fragment, or drop the option"
        )


def build(request: Request, *, jobs: int | None = None, progress: Progress | None = None) -> Kernel:
    """The kernel ``request`` describes: from the cache, or built now (see the module doc)."""
    hit = cached(request)
    if hit is not None:
        return hit
    progress = progress or Progress(request.name)
    cache = kbuild_cache()
    work = cache / "work" / request.work_id()
    with paths.cache_lock(cache / "locks" / f"{request.work_id()}.lock", "a kernel build"):
        hit = cached(request)  # another process may have built it while we waited
        if hit is not None:
            return hit
        return _build_locked(request, work, jobs or os.cpu_count() or 1, progress)


def _work_tree(request: Request, work: Path, progress: Progress) -> Path:
    """``work/src``: the unpacked source (hard links) with ``request``'s series applied.
    Call with the work folder's lock held."""
    pristine = unpacked(request.source, kbuild_cache() / "sources")
    # O= directly under the source: kbuild then uses relative paths (srctree := ..), so
    # ccache hits across work trees and cache locations
    src = work / "src"
    if not src.is_dir():
        progress.stage("preparing the work tree (hard links to the unpacked source)")
        staging = work / ".src-new"
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["cp", "-al", str(pristine), str(staging)], check=True, timeout=600)
        (work / "applied.json").unlink(missing_ok=True)
        staging.rename(src)
    progress.stage(
        f"applying series {request.series.name}" if request.series else "no patch series"
    )
    changed = sync_series(pristine, src, work / "applied.json", request.series)
    if changed:
        progress.stage(f"{changed} source file(s) changed by the series")
    return src


@contextlib.contextmanager
def source_tree(request: Request) -> Iterator[Path]:
    """The source ``request``'s kernel is built from -- its work tree, series applied -- held
    under the work folder's lock while the caller reads it (to build a kselftest from the
    same source as the kernel, :mod:`testbed.kselftest.build`). Never writes the tree's
    ``O=`` objects; the next kernel build re-syncs the series it needs."""
    cache = kbuild_cache()
    work = cache / "work" / request.work_id()
    with paths.cache_lock(cache / "locks" / f"{request.work_id()}.lock", "a kernel build"):
        work.mkdir(parents=True, exist_ok=True)
        yield _work_tree(request, work, Progress(request.name))


def _build_locked(request: Request, work: Path, jobs: int, progress: Progress) -> Kernel:
    cache = kbuild_cache()
    t0 = time.monotonic()
    env = _env(cache / "ccache")
    entries = cache / "kernels"
    entries.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{request.key()}-", dir=entries))
    tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    work.mkdir(parents=True, exist_ok=True)
    paths.mark_used(work)
    log_file = work / "build.log"  # outside the entry: kept when the build fails
    log_file.write_bytes(b"")
    try:
        progress.stage(f"building {request.describe()} [{request.key()}]")
        src = _work_tree(request, work, progress)
        obj = src / OBJ_DIR
        obj.mkdir(exist_ok=True)
        progress.stage("configuring: " + request.base.value + " + fragments, olddefconfig, check")
        configure(request, src, obj, env, log_file)
        expected = 0
        with contextlib.suppress(OSError, ValueError):
            expected = int((work / "steps").read_text())
        progress.stage(f"compiling bzImage and modules with -j{jobs} (log: {log_file})")
        t_make = time.monotonic()
        argv = _make(src, obj, "bzImage", "modules", jobs=jobs)
        rc = progress.run_make(argv, env, log_file, expected)
        if rc != 0:
            raise KernelError(
                f"kernel {request.name}: make bzImage modules failed (exit {rc}): "
                f"{_first_error(log_file.read_text(errors='replace')[-50000:])}\n"
                f"  full log: {log_file}\n"
                "  fix: the compiler error above names the file; correct the patch or config"
            )
        if not expected:
            (work / "steps").write_text(str(_count_steps(log_file)))
        make_s = time.monotonic() - t_make
        progress.stage("installing image, modules and the kbuild tree into the cache")
        release = (obj / "include/config/kernel.release").read_text().strip()
        shutil.copy2(obj / "arch/x86/boot/bzImage", tmp / "bzImage")
        _run(
            _make(
                src,
                obj,
                "modules_install",
                f"INSTALL_MOD_PATH={tmp / 'modules'}",
                "INSTALL_MOD_STRIP=1",
            ),
            env,
            log_file,
            "make modules_install",
        )
        moddir = tmp / "modules" / "lib" / "modules" / release
        for link in ("build", "source"):
            (moddir / link).unlink(missing_ok=True)
        _run(
            _make(
                src,
                obj,
                "run-command",
                f"KBUILD_RUN_COMMAND={src}/scripts/package/install-extmod-build {tmp / 'build'}",
            ),
            env,
            log_file,
            "install-extmod-build (the kbuild tree for out-of-tree modules)",
        )
        shutil.copy2(obj / ".config", tmp / "build" / ".config")
        shutil.copy2(obj / ".config", tmp / "config")
        (moddir / "build").symlink_to(Path("../../../../build"))
        (tmp / "patches.txt").write_text(
            "".join(
                f"{p.name} sha256:{hashlib.sha256(p.data).hexdigest()}\n"
                for p in (request.series.patches if request.series else ())
            )
        )
        manifest = {
            "name": request.name,
            "recipe": request.describe(),
            "key": request.key(),
            "release": release,
            "source": request.source.identity,
            "fragments": [f.path for f in request.fragments],
            "series": request.series.name if request.series else None,
            "patches": [p.name for p in request.series.patches] if request.series else [],
            "compiler": request.compiler,
            "make_seconds": round(make_s, 1),
            "total_seconds": round(time.monotonic() - t0, 1),
        }
        shutil.copy2(log_file, tmp / "build.log")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        final = entries / request.key()
        shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover (no manifest)
        tmp.rename(final)
        progress.stage(f"built {release} in {manifest['total_seconds']} s: {final}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kernel = _load_entry(final)
    assert kernel is not None
    record_request(request)
    return kernel


def _count_steps(log_file: Path) -> int:
    n = 0
    with log_file.open("rb") as f:
        for raw in f:
            if raw.startswith(b"  ") and raw[2:10].strip().isupper():
                n += 1
    return n
