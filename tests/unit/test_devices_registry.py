"""The device-type and machine registries (testbed.devices.registry).

The first tests read the project's real ``qemu-devices/``; the others build a small registry in
a temporary folder, either passed as ``root`` or selected with ``TESTBED_DEVICES_DIR``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import paths
from testbed.config.schema import Hotplug
from testbed.devices import registry
from testbed.errors import ConfigError, UnknownNameError

REAL = paths.PROJECT_ROOT / "qemu-devices"


@pytest.fixture(autouse=True)
def _no_devices_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_DEVICES_DIR", raising=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_registry(root: Path) -> Path:
    write(
        root / "alpha" / "device.yaml",
        'name: alpha\ndescription: a\nqemu-driver: edu\npci-id: "1234:11e8"\n',
    )
    write(
        root / "beta" / "device.yaml",
        "name: beta\ndescription: b\nqemu-driver: ivshmem-plain\n"
        'pci-id: "1af4:1110"\nbacking:\n  size: 1M\n',
    )
    write(
        root / "machines" / "tiny.yaml",
        "name: tiny\nmemory: 256M\ndevices:\n  - id: a0\n    type: alpha\n"
        "  - id: b0\n    type: beta\n    bar-size: 2M\n",
    )
    return root


# --- the real registry -----------------------------------------------------------------------


def test_real_machine_names() -> None:
    names = registry.machine_names()
    assert {"default", "native-hotplug"} <= set(names)
    assert names == sorted(names)


def test_load_default_machine() -> None:
    machine = registry.load_machine("default")
    spec = machine.spec
    assert spec.name == "default"
    assert spec.hotplug is Hotplug.ACPI
    assert spec.memory == 1 << 30
    assert [d.id for d in spec.devices] == ["gpu-exporter", "importer"]
    path = REAL / "machines" / "default.yaml"
    first_key = next(
        n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith("name:")
    )
    assert spec.source == f"{path}:{first_key}"

    gpu = machine.type_of(spec.device("gpu-exporter"))
    assert gpu.qemu_driver == "ivshmem-plain"
    assert gpu.pci_id == "1af4:1110"
    assert gpu.backing is not None
    assert gpu.backing.size == 64 << 20

    importer = machine.type_of(spec.device("importer"))
    assert importer.qemu_driver == "edu"
    assert importer.pci_id == "1234:11e8"
    assert importer.backing is None
    assert importer.properties == {"dma_mask": "0xffffffffffffffff"}


def test_load_native_hotplug_machine() -> None:
    machine = registry.load_machine("native-hotplug")
    assert machine.spec.name == "native-hotplug"
    assert machine.spec.hotplug is Hotplug.NATIVE
    assert set(machine.types) == {"gpu-exporter", "importer"}


def test_load_machine_by_path() -> None:
    machine = registry.load_machine(REAL / "machines" / "native-hotplug.yaml")
    assert machine.spec.name == "native-hotplug"


def test_real_device_types_match_their_folders() -> None:
    types = registry.device_types()
    assert {"gpu-exporter", "importer"} <= set(types)
    for name, dtype in types.items():
        assert dtype.name == name
        assert dtype.source.startswith(str(REAL / name / "device.yaml") + ":")


def test_unknown_machine_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        registry.load_machine("defualt")
    err = info.value
    assert err.kind == "machine"
    assert err.name == "defualt"
    assert {"default", "native-hotplug"} <= set(err.known)
    assert "unknown machine 'defualt'" in str(err)
    assert "default, " in str(err)
    assert "native-hotplug" in str(err)
    assert isinstance(err, ConfigError)


def test_unknown_device_id_lists_known_ids() -> None:
    spec = registry.load_machine("default").spec
    with pytest.raises(UnknownNameError) as info:
        spec.device("gpu")
    assert info.value.known == ("gpu-exporter", "importer")
    assert "unknown device id 'gpu'; known: gpu-exporter, importer" in str(info.value)


# --- a registry in a temporary folder --------------------------------------------------------


def test_root_argument(tmp_path: Path) -> None:
    root = make_registry(tmp_path)
    machine = registry.load_machine("tiny", root)
    assert machine.spec.memory == 256 << 20
    assert set(machine.types) == {"alpha", "beta"}
    assert machine.spec.device("b0").bar_size == 2 << 20
    assert registry.machine_names(root) == ["tiny"]


def test_devices_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_registry(tmp_path / "devs")
    monkeypatch.setenv("TESTBED_DEVICES_DIR", str(root))
    assert paths.devices_dir() == root
    assert registry.machine_names() == ["tiny"]
    assert set(registry.device_types()) == {"alpha", "beta"}
    assert registry.load_machine("tiny").spec.name == "tiny"
    with pytest.raises(UnknownNameError) as info:
        registry.load_machine("default")
    assert info.value.known == ("tiny",)


def test_empty_registry_says_none(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"known: \(none\)"):
        registry.load_machine("default", tmp_path)


def test_unknown_device_type_names_file_line_and_known_types(tmp_path: Path) -> None:
    root = make_registry(tmp_path)
    machine_file = write(
        root / "machines" / "typo.yaml",
        "name: typo\ndevices:\n  - id: a0\n    type: alpha\n  - id: g0\n    type: gamma\n",
    )
    with pytest.raises(UnknownNameError) as info:
        registry.load_machine("typo", root)
    err = info.value
    assert err.kind == "device type"
    assert err.known == ("alpha", "beta")
    assert err.path == machine_file
    assert err.line == 5  # the "- id: g0" mapping
    assert err.key == "type"
    assert str(err) == f"{machine_file}:5: type: unknown device type 'gamma'; known: alpha, beta"


def test_unknown_device_type_in_the_real_registry(tmp_path: Path) -> None:
    machine_file = write(tmp_path / "m.yaml", "name: m\ndevices:\n  - id: x\n    type: gpu\n")
    with pytest.raises(UnknownNameError) as info:
        registry.load_machine(machine_file)
    assert {"gpu-exporter", "importer"} <= set(info.value.known)


def test_device_folder_name_must_match(tmp_path: Path) -> None:
    root = make_registry(tmp_path)
    bad = write(
        root / "gamma" / "device.yaml",
        'name: delta\ndescription: d\nqemu-driver: edu\npci-id: "1234:11e8"\n',
    )
    with pytest.raises(ConfigError) as info:
        registry.device_types(root)
    assert info.value.path == bad
    assert "'delta' does not match the folder name 'gamma'" in str(info.value)


def test_bad_device_yaml_is_located(tmp_path: Path) -> None:
    root = make_registry(tmp_path)
    bad = write(
        root / "gamma" / "device.yaml",
        'name: gamma\ndescription: d\nqemu-driver: edu\npci-id: "1234:11e8"\ncolour: red\n',
    )
    with pytest.raises(ConfigError) as info:
        registry.load_machine("tiny", root)
    assert info.value.path == bad
    assert info.value.line == 5


def test_bar_size_needs_a_backed_type(tmp_path: Path) -> None:
    root = make_registry(tmp_path)
    machine_file = write(
        root / "machines" / "bad.yaml",
        "name: bad\ndevices:\n  - id: a0\n    type: alpha\n    bar-size: 1M\n",
    )
    with pytest.raises(ConfigError) as info:
        registry.load_machine("bad", root)
    text = str(info.value)
    assert text.startswith(f"{machine_file}:3: bar-size: ")
    assert "'alpha' has no host-backed BAR" in text


def test_bar_size_error_has_separate_path_and_line(tmp_path: Path) -> None:
    root = make_registry(tmp_path)
    machine_file = write(
        root / "machines" / "bad.yaml",
        "name: bad\ndevices:\n  - id: a0\n    type: alpha\n    bar-size: 1M\n",
    )
    with pytest.raises(ConfigError) as info:
        registry.load_machine("bad", root)
    assert info.value.path == machine_file
    assert info.value.line == 3


def test_machine_types_are_only_those_used(tmp_path: Path) -> None:
    root = make_registry(tmp_path)
    write(root / "machines" / "solo.yaml", "name: solo\ndevices:\n  - id: a0\n    type: alpha\n")
    assert set(registry.load_machine("solo", root).types) == {"alpha"}


def test_bars_that_add_up_beyond_the_64bit_window_point_at_the_device(tmp_path: Path) -> None:
    root = make_registry(tmp_path)
    write(
        root / "machines" / "wide.yaml",
        "name: wide\ndevices:\n  - id: b0\n    type: beta\n    bar-size: 8G\n"
        "  - id: b1\n    type: beta\n    bar-size: 8G\n"
        "  - id: b2\n    type: beta\n    bar-size: 1G\n",
    )
    with pytest.raises(ConfigError) as info:
        registry.load_machine("wide", root)
    assert info.value.line == 9, str(info.value)
    assert "add up to 17G" in str(info.value)
