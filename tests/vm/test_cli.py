"""The ``testbed`` command as a developer uses it, in a subprocess, against real QEMU."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.kernel.image import Kernel
from testbed.pytest_plugin.settings import Settings

TESTBED = str(Path(sys.executable).parent / "testbed")


def _accel(settings: Settings) -> list[str]:
    return ["--accel", settings.accel.value] if settings.accel else []


def test_boot_prints_a_working_ssh_command_and_cleans_up_on_ctrl_c(
    tmp_path: Path, testbed_settings: Settings, testbed_kernel: Kernel
) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [TESTBED, "boot", "--no-p2p", "--run-dir", str(run_dir), *_accel(testbed_settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        info: dict[str, str] = {}
        for line in proc.stdout:
            key, sep, value = line.strip().partition(":")
            if sep and key in ("ssh", "QMP", "console", "run dir"):
                info[key] = value.strip()
            if line.startswith("Ctrl-C"):
                break
        assert "ssh" in info, f"no ssh line; stderr: {proc.stderr.read()}"
        ssh = subprocess.run(
            [*shlex.split(info["ssh"]), "uname -r"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.strip() == testbed_kernel.release
        qmp_socket = Path(info["QMP"].split()[0])
        assert qmp_socket.exists()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert not qmp_socket.parent.exists(), "the private folder must be removed"
        assert not list(run_dir.glob("*.bar")), "the BAR backing file must be removed"
        assert (run_dir / "console.log").is_file(), "artifacts stay"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_doctor_reports_a_ready_host() -> None:
    out = subprocess.run(
        [TESTBED, "doctor", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert out.returncode == 0, out.stdout
    assert checks["qemu devices"]["ok"]
    assert "kvm" in checks


def test_bench_prints_one_json_object_with_the_figures(testbed_settings: Settings) -> None:
    out = subprocess.run(
        [TESTBED, "bench", "--json", "--runs", "1", *_accel(testbed_settings)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["accel"] in ("tcg", "kvm")
    for key in ("exec_s", "bare_s", "exec_ratio", "bare_boot_s", "boot_to_ssh_s", "unplug_s"):
        assert result[key] > 0
    # one run: the paired ratio is that run's, the same as the ratio of the (single) medians
    assert abs(result["exec_ratio"] - result["exec_s"] / result["bare_s"]) < 0.01
    assert result["exec_ratio"] == result["exec_ratio_of_medians"]
    assert result["exec_ratio"] == result["exec_ratio_of_minimums"]
    # where the exec's time went: the phases add up to the whole process
    phases = result["exec_phases"]
    assert {"start_imports_s", "qemu_to_init_s", "init_to_command_s", "command_s"} <= set(phases)
    assert abs(sum(phases.values()) - result["exec_s"]) < 0.02
    assert len(result["load_average"]) == 3
    assert abs(result["ratio"] - result["boot_to_ssh_s"] / result["bare_boot_s"]) < 0.01
    assert result["ratio"] == result["ratio_of_medians"]
    # the whole process includes a boot: it cannot take less than the floor's kernel start
    assert result["exec_s"] > result["boot_to_ssh_s"] * 0.5


def test_exec_propagates_the_exit_status_and_both_streams(testbed_settings: Settings) -> None:
    out = subprocess.run(
        [TESTBED, "exec", "--no-p2p", *_accel(testbed_settings), "--",
         "echo to-stdout; echo to-stderr >&2; uname -r; exit 7"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert out.returncode == 7, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "to-stdout"
    assert lines[1].strip() == testbed_settings.kernel().release
    assert "to-stderr" in out.stderr.splitlines()
    assert "to-stderr" not in out.stdout


def test_exec_quotes_several_words_and_loads_the_p2p_drivers(testbed_settings: Settings) -> None:
    out = subprocess.run(
        [TESTBED, "exec", *_accel(testbed_settings), "--", "printf", "%s|", "a b", "$HOME"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "a b|$HOME|"  # each word arrives as one argument, unexpanded
    probe = subprocess.run(
        [TESTBED, "exec", *_accel(testbed_settings), "--", "ls /dev/p2p-* && which p2pctl"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert "/dev/p2p-importer0" in probe.stdout
    assert probe.stdout.rstrip().endswith("/usr/local/bin/p2pctl")


def test_exec_streams_output_as_it_comes(testbed_settings: Settings) -> None:
    """The first line reaches us while the guest command still sleeps, not at its end."""
    proc = subprocess.Popen(
        [TESTBED, "exec", "--no-p2p", *_accel(testbed_settings), "--",
         "echo first; sleep 3; echo second >&2; sleep 1; echo third"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        seen_first = time.monotonic()
        assert first == b"first\n", proc.stderr.read()
        rest = proc.stdout.read()
        seen_rest = time.monotonic()
        assert proc.wait(timeout=60) == 0
        assert rest == b"third\n"
        assert b"second" in proc.stderr.read()
        assert seen_rest - seen_first > 3.0, "the output arrived only at the end"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _exec(
    settings: Settings, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [TESTBED, "exec", *_accel(settings), *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_exec_without_ssh_carries_binary_output_whole_and_kept_apart(
    testbed_settings: Settings, tmp_path: Path
) -> None:
    """The exec port is raw: 300 kB of every byte value, no CR added, stdout and stderr
    interleaved by the command arrive each on its own stream, byte for byte; no sshd runs."""
    script = (
        "i=0; while [ $i -lt 1200 ]; do printf '%04d\\n' $i; i=$((i+1)); done; "
        "echo err-line >&2; head -c 300000 /dev/urandom > /tmp/r; cat /tmp/r; "
        "md5sum /tmp/r >&2; pidof dropbear >&2; exit 0"
    )
    out = _exec(testbed_settings, "--no-p2p", "--run-dir", str(tmp_path / "run"), "--", script)
    assert out.returncode == 0, out.stderr[-2000:]
    counted = b"".join(b"%04d\n" % i for i in range(1200))
    assert out.stdout.startswith(counted)
    blob = out.stdout[len(counted) :]
    assert len(blob) == 300000
    err = out.stderr.decode(errors="replace").splitlines()
    assert "err-line" in err
    md5 = next(line.split()[0] for line in err if line.endswith("/tmp/r"))
    assert hashlib.md5(blob).hexdigest() == md5
    assert not any(line.strip().isdigit() for line in err), "dropbear ran in an exec guest"
    console = (tmp_path / "run" / "console.log").read_text()
    assert "testbed-guest: command started" in console
    assert "testbed-guest: sshd ready" not in console
    assert "-serial chardev:execout" in (tmp_path / "run" / "qemu-cmdline.txt").read_text()


def test_exec_a_command_killed_by_a_signal_exits_255(testbed_settings: Settings) -> None:
    out = _exec(testbed_settings, "--no-p2p", "--", "echo before; kill -9 $$")
    assert out.returncode == 255, out.stderr
    assert out.stdout == b"before\n"


def test_exec_over_ssh_still_gives_the_same_streams_and_status(testbed_settings: Settings) -> None:
    out = _exec(testbed_settings, "--ssh", "--no-p2p", "--", "echo o; echo e >&2; exit 5")
    assert out.returncode == 5, out.stderr
    assert out.stdout == b"o\n"
    assert b"e\n" in out.stderr


def test_exec_a_guest_panic_under_the_command_is_an_error_after_its_output(
    testbed_settings: Settings,
) -> None:
    """The panic (pvpanic loaded: QEMU pauses and reports it) ends the wait at once, long
    before --timeout, with the panic named and the command's earlier output delivered."""
    start = time.monotonic()
    out = _exec(
        testbed_settings, "--no-p2p", "--timeout", "120", "--",
        "echo about-to-crash; sleep 0.5; echo c > /proc/sysrq-trigger; sleep 60",
    )  # fmt: skip
    assert time.monotonic() - start < 60
    assert out.returncode == 2, out.stderr
    assert out.stdout == b"about-to-crash\n"
    err = out.stderr.decode(errors="replace")
    assert "testbed: error: the guest kernel panicked" in err
    assert "sysrq" in err.lower()


def test_exec_a_command_that_outlives_its_timeout_is_an_error(testbed_settings: Settings) -> None:
    start = time.monotonic()
    out = _exec(testbed_settings, "--no-p2p", "--timeout", "3", "--", "echo started; sleep 100")
    assert time.monotonic() - start < 60
    assert out.returncode == 2
    assert out.stdout == b"started\n"
    assert b"the command did not finish within 3 s in the guest (--timeout)" in out.stderr


def test_exec_keep_leaves_the_guest_up_until_ctrl_c(
    tmp_path: Path, testbed_settings: Settings
) -> None:
    proc = subprocess.Popen(
        [TESTBED, "exec", "--keep", "--no-p2p", "--run-dir", str(tmp_path / "run"),
         *_accel(testbed_settings), "--", "touch /tmp/marker; echo done"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "done\n"
        info: dict[str, str] = {}
        for line in proc.stdout:
            key, sep, value = line.strip().partition(":")
            if sep and key in ("ssh", "QMP"):
                info[key] = value.strip()
            if line.startswith("Ctrl-C"):
                break
        assert "ssh" in info, proc.stderr.read()
        ssh = subprocess.run(
            [*shlex.split(info["ssh"]), "ls /tmp/marker"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ssh.returncode == 0, "the guest that ran the command is still up"
        qmp_socket = Path(info["QMP"].split()[0])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert not qmp_socket.parent.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_prints_the_claim_table_and_junit(tmp_path: Path, testbed_settings: Settings) -> None:
    junit = tmp_path / "results.xml"
    out = subprocess.run(
        [
            TESTBED,
            "run",
            "-k",
            "claim2",
            "--junit",
            str(junit),
            "--artifacts",
            str(tmp_path / "artifacts"),
            *_accel(testbed_settings),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("claim2 ")]
    assert rows and rows[0][2] == "passed"
    assert "1/1 passed" in out.stdout
    assert 'name="test_claim2' in junit.read_text()


def test_run_on_two_workers_keeps_guests_and_artifacts_apart(
    tmp_path: Path, testbed_settings: Settings
) -> None:
    """``testbed run -j 2``: a shared-guest test and two fresh-guest tests over two pytest-xdist
    workers; every test passes, the table and JUnit have all three, each test's folder holds its
    own guest's files, and a shared guest's folder is named after the worker that booted it."""
    junit, artifacts = tmp_path / "results.xml", tmp_path / "artifacts"
    out = subprocess.run(
        [
            TESTBED,
            "run",
            "-j",
            "2",
            "-k",
            "claim2 or claim5",
            "--junit",
            str(junit),
            "--artifacts",
            str(artifacts),
            "--keep-artifacts",
            *_accel(testbed_settings),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3/3 passed" in out.stdout
    assert junit.read_text().count("<testcase ") == 3
    fresh = sorted(artifacts.glob("*test_claim5*"))
    assert len(fresh) == 2, sorted(p.name for p in artifacts.iterdir())
    cmdlines = [(f / "default" if "default" in f.name else f / "native-hotplug") for f in fresh]
    for folder in cmdlines:
        assert (folder / "console.log").stat().st_size > 0
    first, second = (f.joinpath("qemu-cmdline.txt").read_text() for f in cmdlines)
    assert str(cmdlines[0]) in first and str(cmdlines[0]) not in second, "BAR files shared"
    shared = sorted(artifacts.glob("*shared-guest*"))
    assert shared and all(p.name.rsplit("-", 1)[-1].startswith("gw") for p in shared)
    assert all((p / "console.log").is_file() for p in shared)


def _built_tree() -> Path | None:
    """A kernel tree built on this host, if any: $TESTBED_KERNEL_TREE, else the first tree
    under /root or the testbed's cache whose bzImage matches its configured release."""
    from testbed import paths
    from testbed.errors import KernelError
    from testbed.kernel.image import bzimage_release

    named = os.environ.get("TESTBED_KERNEL_TREE")
    candidates = [Path(named) / "arch/x86/boot/bzImage"] if named else []
    for base in (Path("/root"), paths.cache_dir()):
        for depth in ("*", "*/*", "*/*/*"):
            candidates += sorted(base.glob(f"{depth}/arch/x86/boot/bzImage"))
    for image in candidates:
        tree = image.parents[3]
        try:
            configured = (tree / "include/config/kernel.release").read_text().strip()
            if image.is_file() and bzimage_release(image) == configured:
                return tree
        except (OSError, KernelError):
            continue
    return None


def test_exec_boots_a_built_kernel_tree(testbed_settings: Settings, tmp_path: Path) -> None:
    """``cd linux && testbed exec --kernel . -- ...`` after ``make``."""
    tree = _built_tree()
    if tree is None:
        pytest.skip(
            "no built kernel tree on this host (set TESTBED_KERNEL_TREE, or build one under "
            "/root); tests/unit/test_kernel_tree.py covers the logic on a fake tree"
        )
    release = (tree / "include/config/kernel.release").read_text().strip()
    out = subprocess.run(
        [TESTBED, "exec", "--no-p2p", "--kernel", ".", *_accel(testbed_settings), "--",
         "uname -r"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == release


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_exec_stopped_mid_command_leaves_no_qemu_or_files(
    tmp_path: Path, testbed_settings: Settings, how: signal.Signals
) -> None:
    """Ctrl-C (or a CI cancel's SIGTERM, handled like Ctrl-C: exit 130 either way) while the
    guest runs the command: QEMU and its BAR file are gone -- without QMP on an exec machine."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [TESTBED, "exec", "--run-dir", str(run_dir), *_accel(testbed_settings), "--",
         "echo started; sleep 120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"started\n", proc.stderr.read()
        bar = run_dir / "gpu-exporter.bar"
        assert bar.is_file()
        qemu = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and str(run_dir).encode() in _cmdline(p)
        ]
        assert qemu, "no QEMU process names the run folder"
        proc.send_signal(how)
        assert proc.wait(timeout=30) == 130
        assert not [pid for pid in qemu if Path(f"/proc/{pid}").exists()], "QEMU left running"
        assert not bar.exists(), "the BAR backing file must be removed"
        assert (run_dir / "console.log").is_file(), "artifacts stay"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
