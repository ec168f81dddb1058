"""Strict YAML loading (testbed.config.loader) into the schema (testbed.config.schema).

Every rejected document must raise :class:`ConfigError` whose message names the file, the
line and the key, so a user can jump straight to the mistake. The documents live in
``tests/data/yaml/``; the line numbers asserted below are the lines in those files.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

import pytest

from testbed.config.loader import Size, load_dataclass, load_dataclass_text
from testbed.config.schema import (
    Accel,
    Backing,
    DeviceInstance,
    DeviceType,
    Hotplug,
    MachineSpec,
)
from testbed.errors import ConfigError, TestbedError

YAML = Path(__file__).resolve().parent.parent / "data" / "yaml"


def load_error(cls: type, name: str) -> ConfigError:
    path = YAML / name
    with pytest.raises(ConfigError) as info:
        load_dataclass(cls, path)
    return info.value


def assert_located(err: ConfigError, name: str, line: int, key: str | None) -> None:
    """The error points at ``name``:``line`` and mentions ``key`` in its message."""
    path = YAML / name
    text = str(err)
    assert err.path == path
    assert err.line == line
    assert text.startswith(f"{path}:{line}: "), text
    if key is not None:
        assert key in text, text


# --- documents that load -----------------------------------------------------------------


def test_full_machine_hyphen_keys_become_fields() -> None:
    spec = load_dataclass(MachineSpec, YAML / "machine_full.yaml")
    assert spec.name == "full"
    assert spec.description == "every field set"
    assert spec.memory == 2 << 30
    assert isinstance(spec.memory, Size)
    assert spec.cpus == 2
    assert spec.cpu_model == "Skylake-Server"
    assert spec.accel is Accel.TCG
    assert spec.hotplug is Hotplug.NATIVE
    assert spec.kernel_args == ("quiet", "loglevel=7")
    assert [d.id for d in spec.devices] == ["gpu0", "nic0"]
    gpu, nic = spec.devices
    assert isinstance(gpu, DeviceInstance)
    assert gpu.type == "gpu-exporter"
    assert gpu.bar_size == 128 << 20
    assert nic.bar_size is None
    assert nic.properties == {"dma_mask": "0xffff"}


def test_minimal_machine_gets_defaults() -> None:
    spec = load_dataclass(MachineSpec, YAML / "machine_minimal.yaml")
    assert spec == MachineSpec(name="minimal")
    assert spec.memory == 1 << 30
    assert spec.cpus == 1
    assert spec.cpu_model is None
    assert spec.accel is Accel.AUTO
    assert spec.hotplug is Hotplug.ACPI
    assert spec.devices == ()


def test_full_device_type() -> None:
    dtype = load_dataclass(DeviceType, YAML / "device_full.yaml")
    assert dtype.name == "my-dev"
    assert dtype.qemu_driver == "ivshmem-plain"
    assert dtype.pci_id == "1af4:1110"
    assert dtype.properties == {"vectors": "2", "use64": "1"}
    assert dtype.backing == Backing(Size(32 << 20))
    assert dtype.guest_module == "my_module"


def test_source_is_file_and_line_of_each_mapping() -> None:
    path = YAML / "machine_full.yaml"
    spec = load_dataclass(MachineSpec, path)
    # The top-level mapping starts at its first key (line 2, after the comment);
    # each device's mapping starts at its "- id:" line.
    assert spec.source == f"{path}:2"
    assert [d.source for d in spec.devices] == [f"{path}:13", f"{path}:16"]


def test_source_cannot_be_set_from_yaml() -> None:
    err = load_error(MachineSpec, "source_key.yaml")
    assert_located(err, "source_key.yaml", 2, "source")
    assert "unknown key" in str(err)


def test_load_dataclass_text_names_the_given_path() -> None:
    spec = load_dataclass_text(MachineSpec, "name: x\ncpus: 3\n", "inline.yaml")
    assert spec.cpus == 3
    assert spec.source == "inline.yaml:1"
    with pytest.raises(ConfigError, match=r"^inline\.yaml:2: cpus: "):
        load_dataclass_text(MachineSpec, "name: x\ncpus: many\n", "inline.yaml")


# --- unknown keys --------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    err = load_error(MachineSpec, "unknown_key_top.yaml")
    assert_located(err, "unknown_key_top.yaml", 2, "memroy")
    assert err.key == "memroy"
    # The known keys are listed, hyphenated as the user writes them.
    assert "memory" in str(err)
    assert "kernel-args" in str(err)
    assert "source" not in str(err).split("known keys here:")[1]


def test_unknown_nested_key_names_dotted_path() -> None:
    err = load_error(MachineSpec, "unknown_key_nested.yaml")
    assert_located(err, "unknown_key_nested.yaml", 7, "devices[1].bar-sise")
    assert "bar-size" in str(err)


def test_configerror_is_a_testbed_error() -> None:
    err = load_error(MachineSpec, "unknown_key_top.yaml")
    assert isinstance(err, TestbedError)


# --- wrong types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "line", "key", "words"),
    [
        ("wrong_type_int.yaml", 3, "cpus", "expected an integer, got 'two'"),
        ("wrong_type_str.yaml", 2, "description", "expected a string, got 42"),
        ("wrong_type_list.yaml", 2, "devices", "expected a list"),
        ("wrong_type_mapping.yaml", 3, "devices[0]", "expected a mapping"),
        ("wrong_type_bool_cpus.yaml", 2, "cpus", "expected an integer, got True"),
        ("bad_size.yaml", 2, "memory", "expected a size such as 64M or 1G, got 'lots'"),
    ],
)
def test_wrong_type(name: str, line: int, key: str, words: str) -> None:
    err = load_error(MachineSpec, name)
    assert_located(err, name, line, key)
    assert err.key == key
    assert words in str(err)


def test_top_level_must_be_a_mapping() -> None:
    err = load_error(MachineSpec, "not_a_mapping.yaml")
    assert err.path == YAML / "not_a_mapping.yaml"
    assert err.line == 1
    assert "expected a mapping, got a list" in str(err)


def test_enum_by_value_lists_allowed_values() -> None:
    err = load_error(MachineSpec, "bad_enum.yaml")
    assert_located(err, "bad_enum.yaml", 2, "hotplug")
    assert "'acpi'" in str(err)
    assert "'native'" in str(err)
    assert "'pciehp'" in str(err)


@pytest.mark.parametrize(("text", "expected"), [("acpi", Hotplug.ACPI), ("native", Hotplug.NATIVE)])
def test_enum_values_load(text: str, expected: Hotplug) -> None:
    spec = load_dataclass_text(MachineSpec, f"name: x\nhotplug: {text}\n")
    assert spec.hotplug is expected


def test_enum_rejects_member_name() -> None:
    with pytest.raises(ConfigError, match="hotplug"):
        load_dataclass_text(MachineSpec, "name: x\nhotplug: ACPI\n")


def test_enum_rejects_a_list() -> None:
    with pytest.raises(ConfigError, match=r"<string>:2: accel: expected one of auto, kvm, tcg"):
        load_dataclass_text(MachineSpec, "name: x\naccel: [kvm]\n")


class _Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class _AllTypes:
    flag: bool
    ratio: float
    colour: _Colour
    size: Size
    names: tuple[str, ...] = ()
    extra: dict[str, str] = dataclasses.field(default_factory=dict)
    maybe: int | None = None


def test_scalar_types_of_a_custom_dataclass() -> None:
    obj = load_dataclass_text(
        _AllTypes,
        "flag: true\nratio: 2\ncolour: blue\nsize: 4K\nnames: [a, b]\n"
        "extra: {on: true, n: 3}\nmaybe: ~\n",
    )
    assert obj.flag is True
    assert obj.ratio == 2.0
    assert isinstance(obj.ratio, float)
    assert obj.colour is _Colour.BLUE
    assert obj.size == 4096
    assert obj.names == ("a", "b")
    # dict values are text: booleans as QEMU's on/off, numbers as their digits.
    # ("on" as a key is YAML 1.1 for True, hence "True".)
    assert obj.extra == {"True": "on", "n": "3"}
    assert obj.maybe is None


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("flag: 1", "flag: expected true or false, got 1"),
        ("flag: 'yes'", "flag: expected true or false, got 'yes'"),
        ("ratio: fast", "ratio: expected a number, got 'fast'"),
        ("ratio: false", "ratio: expected a number, got False"),
        ("colour: green", "colour: expected one of 'red', 'blue', got 'green'"),
        ("names: a", "names: expected a list"),
        ("names: [a, [b]]", "names[1]: expected a string, got a list"),
        ("extra: [a]", "extra: expected a mapping, got a list"),
        ("extra: {a: [1]}", "extra.a: expected a scalar, got a list"),
        ("maybe: x", "maybe: expected an integer, got 'x'"),
    ],
)
def test_custom_dataclass_wrong_types(line: str, words: str) -> None:
    lines = {"flag": "flag: true", "ratio": "ratio: 1.5", "colour": "colour: red"}
    lines["size"] = "size: 1"
    key = line.split(":", 1)[0]
    lines[key] = line  # replaces a valid line in place, or appends a new last line
    lineno = list(lines).index(key) + 1
    with pytest.raises(ConfigError) as info:
        load_dataclass_text(_AllTypes, "\n".join(lines.values()) + "\n", "t.yaml")
    assert str(info.value).startswith(f"t.yaml:{lineno}: {words}"), str(info.value)


# --- duplicate keys ------------------------------------------------------------------------


def test_duplicate_top_level_key() -> None:
    err = load_error(MachineSpec, "duplicate_key_top.yaml")
    assert_located(err, "duplicate_key_top.yaml", 4, "memory")
    assert "duplicate key (first given on line 2)" in str(err)


def test_duplicate_key_in_list_item() -> None:
    err = load_error(MachineSpec, "duplicate_key_nested.yaml")
    assert_located(err, "duplicate_key_nested.yaml", 5, "type")
    assert "duplicate key (first given on line 4)" in str(err)


def test_same_field_spelled_with_hyphen_and_underscore_is_a_duplicate() -> None:
    err = load_error(DeviceType, "duplicate_key_alias.yaml")
    assert_located(err, "duplicate_key_alias.yaml", 5, "qemu_driver")


def test_duplicate_device_ids_rejected_at_the_machine() -> None:
    err = load_error(MachineSpec, "duplicate_device_id.yaml")
    # the second entry's line, not the document's first line
    assert_located(err, "duplicate_device_id.yaml", 5, "devices[1]")
    assert "'gpu0' is used twice (first by devices[0])" in str(err)


# --- missing required keys -----------------------------------------------------------------


def test_missing_top_level_key() -> None:
    err = load_error(MachineSpec, "missing_key_top.yaml")
    assert_located(err, "missing_key_top.yaml", 1, None)
    assert "missing required key(s): name" in str(err)


def test_missing_nested_key_points_at_the_item() -> None:
    err = load_error(MachineSpec, "missing_key_nested.yaml")
    assert_located(err, "missing_key_nested.yaml", 5, "devices[1]")
    assert "missing required key(s): type" in str(err)


def test_missing_keys_are_listed_hyphenated() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataclass_text(DeviceType, "name: x\n", "d.yaml")
    assert str(info.value) == (
        "d.yaml:1: missing required key(s): description, qemu-driver, pci-id"
    )


# --- malformed YAML ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("syntax_colon.yaml", {3}),
        ("syntax_indent.yaml", {5}),
        ("syntax_unclosed.yaml", {3, 4}),  # opened on 3, noticed on 4
    ],
)
def test_syntax_error_names_file_and_line(name: str, lines: set[int]) -> None:
    err = load_error(MachineSpec, name)
    assert err.path == YAML / name
    assert err.line in lines
    assert str(err).startswith(f"{YAML / name}:{err.line}: invalid YAML: ")


def test_empty_document() -> None:
    err = load_error(MachineSpec, "empty.yaml")
    assert_located(err, "empty.yaml", 1, None)
    assert "empty" in str(err)


def test_two_documents_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^two\.yaml:2: invalid YAML: .*another document"):
        load_dataclass_text(MachineSpec, "name: a\n---\nname: b\n", "two.yaml")


def test_missing_file() -> None:
    path = YAML / "does-not-exist.yaml"
    with pytest.raises(ConfigError) as info:
        load_dataclass(MachineSpec, path)
    assert info.value.path == path
    assert str(info.value) == f"{path}: file not found"


def test_python_tags_are_not_constructed() -> None:
    with pytest.raises(ConfigError, match=r"^evil\.yaml:1: invalid YAML"):
        load_dataclass_text(MachineSpec, "name: !!python/object/apply:os.getcwd []\n", "evil.yaml")


def test_control_character_is_a_located_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bell.yaml"
    path.write_bytes(b"name: ok\ndescription: ding\x07\n")
    with pytest.raises(ConfigError) as info:
        load_dataclass(MachineSpec, path)
    assert info.value.path == path
    assert info.value.line == 2


def test_non_utf8_file_is_a_located_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_dataclass(MachineSpec, path)
    assert info.value.path == path
    assert info.value.line == 2


# --- schema validation (__post_init__ turned into located errors) -----------------------------


def test_backing_size_must_be_power_of_two() -> None:
    err = load_error(DeviceType, "backing_not_pow2.yaml")
    assert_located(err, "backing_not_pow2.yaml", 6, "backing")
    assert "power of two, got 48M" in str(err)


def test_bar_size_must_be_power_of_two() -> None:
    err = load_error(MachineSpec, "bar_size_not_pow2.yaml")
    assert_located(err, "bar_size_not_pow2.yaml", 3, "devices[0]")
    assert "power of two, got 3M" in str(err)


def test_boolean_size_is_rejected() -> None:
    err = load_error(DeviceType, "backing_bool.yaml")
    assert_located(err, "backing_bool.yaml", 6, "backing.size")


def test_null_property_value_is_not_the_text_none() -> None:
    path = YAML / "property_null.yaml"
    try:
        dtype = load_dataclass(DeviceType, path)
    except ConfigError as err:
        assert err.line == 6
    else:
        assert dtype.properties["romfile"] != "None"


@pytest.mark.parametrize(
    ("size", "ok"),
    [(1, True), (4096, True), (64 << 20, True), (0, False), (3, False), (48 << 20, False)],
)
def test_backing_power_of_two_rule(size: int, ok: bool) -> None:
    if ok:
        assert Backing(Size(size)).size == size
    else:
        with pytest.raises(ValueError, match="power of two"):
            Backing(Size(size))


def test_backing_default_is_64m() -> None:
    assert Backing().size == 64 << 20


def test_memory_lower_bound() -> None:
    err = load_error(MachineSpec, "memory_too_small.yaml")
    assert_located(err, "memory_too_small.yaml", 1, None)
    assert "at least 128M, got 64M" in str(err)


def test_pci_id_must_be_lower_case() -> None:
    err = load_error(DeviceType, "bad_pci_id.yaml")
    assert_located(err, "bad_pci_id.yaml", 1, None)
    assert "'1234:11E8'" in str(err)


@pytest.mark.parametrize("bad", ["0gpu", "has space", "a,b", "x" * 32, ""])
def test_device_id_must_look_like_a_qemu_id(bad: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        DeviceInstance(id=bad, type="t")


def test_port_id() -> None:
    assert DeviceInstance(id="gpu0", type="t").port_id == "rp-gpu0"


# --- Size ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4096", 4096),
        ("64K", 64 << 10),
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("2T", 2 << 40),
        ("64m", 64 << 20),
        ("64MiB", 64 << 20),
        ("64MB", 64 << 20),
        (" 1G ", 1 << 30),
        ("0", 0),
        (512, 512),
    ],
)
def test_size_parse(text: str | int, value: int) -> None:
    size = Size.parse(text)
    assert size == value
    assert isinstance(size, Size)


@pytest.mark.parametrize("bad", ["", "M", "64X", "64P", "-1", "1.5G", "64 M M", "1G2", "big"])
def test_size_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match=f"expected a size such as 64M or 1G, got {bad!r}"):
        Size.parse(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1, "1"),
        (1000, "1000"),
        (1024, "1K"),
        (1536, "1536"),
        (3 << 20, "3M"),
        (1 << 30, "1G"),
        (1536 << 20, "1536M"),
        (4 << 40, "4T"),
    ],
)
def test_size_human(value: int, text: str) -> None:
    assert Size(value).human() == text


@pytest.mark.parametrize("text", ["4100", "64K", "64M", "1G", "3M", "1536M", "2T", "7"])
def test_size_human_round_trips(text: str) -> None:
    assert Size.parse(text).human() == text


# --- option injection and reserved properties (issue 7, section 3) ----------------------------


def device_yaml(extra: str) -> str:
    return 'name: d\ndescription: x\nqemu-driver: edu\npci-id: "1234:11e8"\n' + extra


@pytest.mark.parametrize(
    ("extra", "line", "key", "words"),
    [
        ("properties:\n  a: 1\n  x,romfile: /etc/shadow\n", 7, "properties.x,romfile",
         "must be a QEMU property name"),
        ("properties:\n  x=1: y\n", 6, "properties.x=1", "must be a QEMU property name"),
        ("properties:\n  'has space': y\n", 6, "properties.has space", "QEMU property name"),
        ("properties:\n  dma_mask: 'a,b'\n", 6, "properties.dma_mask", "must not contain ','"),
        ("properties:\n  dma_mask: 'a b'\n", 6, "properties.dma_mask", "whitespace"),
        ("properties:\n  dma_mask: \"a\\nb\"\n", 6, "properties.dma_mask", "whitespace"),
        ("properties:\n  romfile: /etc/shadow\n", 6, "properties.romfile", "is reserved"),
        ("properties:\n  id: other\n", 6, "properties.id", "is reserved"),
        ("properties:\n  bus: pcie.0\n", 6, "properties.bus", "is reserved"),
        ("properties:\n  memdev: m\n", 6, "properties.memdev", "is reserved"),
        ("properties:\n  addr: '0x3'\n", 6, "properties.addr", "is reserved"),
        ("properties:\n  chassis: 9\n", 6, "properties.chassis", "is reserved"),
    ],
)  # fmt: skip
def test_device_type_properties_cannot_inject_options(
    extra: str, line: int, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataclass_text(DeviceType, device_yaml(extra), "dev.yaml")
    assert info.value.line == line, str(info.value)
    assert str(info.value).startswith(f"dev.yaml:{line}: {key}: "), str(info.value)
    assert words in str(info.value)


def test_romfile_may_only_be_switched_off() -> None:
    dtype = load_dataclass_text(DeviceType, device_yaml("properties:\n  romfile: ''\n"))
    assert dtype.properties == {"romfile": ""}


def test_qemu_driver_cannot_inject_options() -> None:
    text = 'name: d\ndescription: x\nqemu-driver: "edu,romfile=/etc/shadow"\npci-id: "1234:11e8"\n'
    with pytest.raises(ConfigError) as info:
        load_dataclass_text(DeviceType, text, "dev.yaml")
    assert str(info.value).startswith("dev.yaml:3: qemu-driver: "), str(info.value)


def test_instance_properties_are_checked_like_type_properties() -> None:
    text = "name: m\ndevices:\n  - id: a\n    type: t\n    properties:\n      bus: x\n"
    with pytest.raises(ConfigError) as info:
        load_dataclass_text(MachineSpec, text, "m.yaml")
    assert str(info.value).startswith("m.yaml:6: devices[0].properties.bus: "), str(info.value)


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("name: 'm,debug-threads=off'\n", 1, "name"),
        ("name: 'has space'\n", 1, "name"),
        ("name: m\ncpu-model: 'max -S'\n", 2, "cpu-model"),
        ("name: m\nkernel-args:\n  - quiet\n  - 'init=/bin/sh panic=0'\n", 4, "kernel-args[1]"),
    ],
)
def test_machine_names_cpu_model_and_kernel_args_are_checked(
    text: str, line: int, key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataclass_text(MachineSpec, text, "m.yaml")
    assert str(info.value).startswith(f"m.yaml:{line}: {key}: "), str(info.value)


def test_cpu_model_may_carry_features() -> None:
    spec = load_dataclass_text(MachineSpec, "name: m\ncpu-model: max,-la57\n")
    assert spec.cpu_model == "max,-la57"


# --- BAR sizes bounded by q35's 64-bit PCI window -------------------------------------------


def test_a_1t_bar_is_rejected_with_its_line() -> None:
    text = "name: m\ndevices:\n  - id: a\n    type: t\n    bar-size: 1T\n"
    with pytest.raises(ConfigError) as info:
        load_dataclass_text(MachineSpec, text, "m.yaml")
    assert str(info.value).startswith("m.yaml:5: devices[0].bar-size: "), str(info.value)
    assert "64-bit PCI window (32G" in str(info.value)


def test_a_1t_backing_is_rejected() -> None:
    with pytest.raises(ConfigError, match="64-bit PCI window") as info:
        load_dataclass_text(DeviceType, device_yaml("backing:\n  size: 1T\n"), "dev.yaml")
    assert info.value.line == 5


def test_a_16g_bar_is_the_largest_allowed() -> None:
    text = "name: m\ndevices:\n  - id: a\n    type: t\n    bar-size: 16G\n"
    assert load_dataclass_text(MachineSpec, text).devices[0].bar_size == 16 << 30
