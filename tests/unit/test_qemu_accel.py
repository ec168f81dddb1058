"""Choosing the accelerator: forced values, the probe verdict and its cache (probe faked)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from testbed.config.schema import Accel
from testbed.errors import AccelError
from testbed.qemu import accel

QEMU = "/bin/true"  # any existing file: the cache key stats it
KERNEL, INITRD = Path("/fake/bzImage"), Path("/fake/initrd")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record probe calls; the fake probe answers TCG, as our CI machines do."""
    calls: list[str] = []

    def fake_probe(qemu: str, kernel: Path, initrd: Path, timeout: float = 0) -> accel.AccelChoice:
        calls.append(qemu)
        return accel.AccelChoice(Accel.TCG, "a KVM guest did not reach init", time.time())

    monkeypatch.setattr(accel, "probe", fake_probe)
    monkeypatch.setattr(accel, "kvm_usable_node", lambda: None)
    return calls


def test_tcg_forced_never_probes(probes: list[str]) -> None:
    choice = accel.choose(Accel.TCG, QEMU, KERNEL, INITRD)
    assert choice.accel is Accel.TCG and "forced" in choice.reason
    assert probes == []


def test_kvm_forced_without_a_usable_node_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accel, "kvm_usable_node", lambda: "/dev/kvm does not exist")
    with pytest.raises(AccelError, match="/dev/kvm does not exist; use --accel auto or tcg"):
        accel.choose(Accel.KVM, QEMU, KERNEL, INITRD)


def test_auto_probes_once_then_uses_the_cached_verdict_with_a_notice(
    probes: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="testbed.qemu.accel"):
        first = accel.choose(Accel.AUTO, QEMU, KERNEL, INITRD)
        second = accel.choose(Accel.AUTO, QEMU, KERNEL, INITRD)
    assert first.accel is second.accel is Accel.TCG
    assert probes == [QEMU], "the verdict is cached per host"
    assert "falling back to TCG" in caplog.text
    assert "cached KVM probe verdict" in caplog.text
    assert accel.cached_verdict(QEMU) == first


def test_cached_verdict_expires(probes: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    accel.choose(Accel.AUTO, QEMU, KERNEL, INITRD)
    monkeypatch.setattr(accel, "CACHE_TTL", -1.0)
    accel.choose(Accel.AUTO, QEMU, KERNEL, INITRD)
    assert len(probes) == 2


def test_auto_without_kvm_node_uses_tcg_without_probing(
    probes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "kvm_usable_node", lambda: "/dev/kvm does not exist")
    choice = accel.choose(Accel.AUTO, QEMU, KERNEL, INITRD)
    assert choice.accel is Accel.TCG and "/dev/kvm does not exist" in choice.reason
    assert probes == []


def test_a_corrupt_cache_file_is_ignored(probes: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "p2p-testbed" / "accel.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    assert accel.choose(Accel.AUTO, QEMU, KERNEL, INITRD).accel is Accel.TCG
    assert len(probes) == 1


def test_first_error_line_of_qemu_stderr() -> None:
    stderr = (
        "qemu-system-x86_64: warning: host doesn't support requested feature\n"
        "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
        "qemu-system-x86_64: ../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n"
    )
    assert (
        accel._first_error(stderr) == "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"
    )
    assert accel._first_error("") == ""
