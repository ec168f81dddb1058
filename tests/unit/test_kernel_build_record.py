"""The request a built kernel's cache entry records (``request.json``), so that a kernel handed
on as ``<entry>/bzImage`` (testbed regress and bisect) still names its source and series: a
kselftest is built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.config.kernels import BaseConfig
from testbed.errors import KernelError
from testbed.kernel import build as kbuild
from testbed.kernel import kconfig, series
from testbed.kernel.source import Source


def fake_request(with_series: bool = True) -> kbuild.Request:
    patches = (
        series.Patch("0001-a.patch", Path("/s/0001-a.patch"), 1, b"diff --git a/x b/x\n\xff\n", 1),
        series.Patch("0002-b.patch", Path("/s/0002-b.patch"), 1, b"diff --git a/y b/y\n", 2),
    )
    return kbuild.Request(
        name="demo[:2]",
        source=Source("tarball", Path("/usr/src/linux.tar.xz"), "sha256:abc", "linux.tar.xz"),
        base=BaseConfig.TINYCONFIG,
        fragments=(kconfig.parse_fragment("CONFIG_PCI=y\n# CONFIG_X is not set\n", "b.config"),),
        series=series.Series("demo[:2]", Path("/s"), patches) if with_series else None,
        compiler="gcc 12",
    )


@pytest.mark.parametrize("with_series", [True, False])
def test_a_request_survives_its_record_with_the_same_key(with_series: bool) -> None:
    request = fake_request(with_series)
    data = json.loads(json.dumps(kbuild.request_json(request)))
    again = kbuild.request_from_json(data)
    assert again.key() == request.key()
    assert again.work_id() == request.work_id()
    assert again == request


def test_a_record_whose_content_does_not_match_its_key_is_refused() -> None:
    data = kbuild.request_json(fake_request())
    assert isinstance(data["fragments"], list)
    data["fragments"][0]["text"] = "CONFIG_PCI=n\n"
    with pytest.raises(KernelError, match="says key"):
        kbuild.request_from_json(data)


def test_a_malformed_record_is_a_kernel_error() -> None:
    with pytest.raises(KernelError, match="malformed"):
        kbuild.request_from_json({"name": "x"})


def test_request_of_image_reads_the_entry_beside_a_bzimage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    request = fake_request()
    entry = kbuild.entry_dir(request)
    entry.mkdir(parents=True)
    (entry / "bzImage").write_bytes(b"image")
    assert kbuild.request_of_image(entry / "bzImage") is None  # no record yet
    kbuild.record_request(request)
    assert kbuild.request_of_image(entry / "bzImage") == request
    elsewhere = tmp_path / "vmlinuz"
    elsewhere.write_bytes(b"image")
    assert kbuild.request_of_image(elsewhere) is None
