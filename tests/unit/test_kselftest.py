"""testbed.kselftest's pure logic: the spec files, the harness's ``-l`` listing (captured from
the real hmm-tests), the binary's cache key, the kernel checks on small fake kernels, and the
plugin's view of a parsed run. Nothing is compiled and nothing boots here; the real run is
ci/test.sh's ``testbed run --kernel hmm --kselftest mm/hmm-tests``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from testbed import paths
from testbed.config.kernels import BaseConfig
from testbed.config.kselftests import (
    KselftestSpec,
    kselftest_names,
    load_kselftest,
    spec_path,
)
from testbed.config.loader import load_dataclass_text
from testbed.errors import ConfigError, UnknownNameError
from testbed.kernel import build as kbuild
from testbed.kernel import kconfig
from testbed.kernel.image import Kernel
from testbed.kernel.source import Source
from testbed.kselftest import guest
from testbed.kselftest.build import KselftestError, cache_key, compile_argv, parse_listing

DATA = Path(__file__).parent / "data" / "ktap"
CONFIG = paths.kernel_config_dir()


def hmm_spec() -> KselftestSpec:
    return load_kselftest(spec_path(CONFIG, "mm/hmm-tests"))


# ---- spec files --------------------------------------------------------------------------------


def test_hmm_tests_spec_loads_and_names_its_fragment() -> None:
    spec = hmm_spec()
    assert spec.program == "hmm-tests"
    assert spec.file == "tools/testing/selftests/mm/hmm-tests.c"
    assert spec.modules == ("test_hmm",) and spec.config == ("CONFIG_TEST_HMM",)
    assert spec.kernel_args == ("hugepages=16",)
    assert (CONFIG / spec.fragment).is_file()
    assert "CONFIG_TEST_HMM=m" in (CONFIG / spec.fragment).read_text()
    assert "mm/hmm-tests" in kselftest_names(CONFIG)


def test_the_hmm_kernel_carries_the_fragment_the_kselftest_needs() -> None:
    from testbed.config.kernels import find_kernel_spec

    kernel = find_kernel_spec(CONFIG / "kernels", "hmm")
    base = find_kernel_spec(CONFIG / "kernels", "base")
    assert kernel.fragments == (*base.fragments, hmm_spec().fragment)
    assert (kernel.tree, kernel.base, kernel.series) == (base.tree, base.base, None)


def test_unknown_kselftest_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown kselftest 'mm/nope'; known: mm/hmm"):
        spec_path(CONFIG, "mm/nope")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "hmm-tests", "must be <dir>/<program>"),
        ("file", "lib/test_hmm.c", "must be a tools/testing/selftests/ .c file"),
        ("config", "[TEST_HMM]", "is not a CONFIG_ option name"),
        ("kernel_args", "['a b']", "is not a plain name=value argument"),
        ("libraries", "['-lm']", "is not a library name"),
    ],
)
def test_spec_errors_name_the_field(field: str, value: str, message: str) -> None:
    good = {
        "name": "mm/x",
        "file": "tools/testing/selftests/mm/x.c",
        "fragment": "hmm.config",
    }
    good[field] = value
    text = "\n".join(f"{k}: {v}" for k, v in good.items()) + "\n"
    with pytest.raises(ConfigError, match=message) as info:
        load_dataclass_text(KselftestSpec, text, "mm/x.yaml")
    assert info.value.key is not None and info.value.key.startswith(field)


def test_spec_name_must_match_its_place(tmp_path: Path) -> None:
    path = tmp_path / "kselftests" / "mm" / "other.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("name: mm/x\nfile: tools/testing/selftests/mm/x.c\nfragment: a.config\n")
    with pytest.raises(ConfigError, match=r"differs from the file's place 'mm/other'"):
        load_kselftest(path)


# ---- the -l listing ------------------------------------------------------------------------


def test_listing_of_the_real_hmm_tests_gives_58_tests_in_run_order() -> None:
    names = parse_listing((DATA / "hmm-tests-list.txt").read_text())
    assert len(names) == 58
    assert names[:2] == ("hmm.hmm_device_private.open_close", "hmm.hmm_device_private.anon_read")
    assert names[26] == "hmm.hmm_device_coherent.open_close"  # variants x tests
    assert names[-1] == "hmm2.hmm2_device_coherent.double_map"
    assert len(set(names)) == 58
    # the same names, in the same order, as the program printed them in the guest
    from testbed import ktap

    run = ktap.parse((DATA / "hmm-tests.tap").read_text())
    assert tuple(c.name for c in run.results) == names


def test_listing_fixture_without_variants() -> None:
    text = (
        f"{'# FIXTURE':<20} {'VARIANT':<25} TEST\n"
        f"{'global':<20} {'':<25} plain_test\n"
        f"{'':<20} {'':<25} other\n"
    )
    assert parse_listing(text) == ("global.plain_test", "global.other")


def test_listing_out_of_its_columns_is_an_error_not_a_guess() -> None:
    text = f"{'# FIXTURE':<20} {'VARIANT':<25} TEST\n{'a' * 24} {'v':<25} t\n"
    with pytest.raises(KselftestError, match="line 2 of the -l listing"):
        parse_listing(text)


# ---- the binary's cache key ----------------------------------------------------------------


def request(tmp_path: Path, frag: str = "CONFIG_A=y\n", compiler: str = "gcc 12") -> kbuild.Request:
    src = Source("tarball", tmp_path / "linux.tar.xz", "sha256:00ff", "linux.tar.xz")
    fragment = kconfig.parse_fragment(frag, tmp_path / "base.config")
    return kbuild.Request("hmm", src, BaseConfig.TINYCONFIG, (fragment,), None, compiler)


def test_cache_key_follows_source_and_compiler_not_fragments(tmp_path: Path) -> None:
    spec = hmm_spec()
    key = cache_key(spec, request(tmp_path))
    assert key == cache_key(spec, request(tmp_path))
    assert key == cache_key(spec, request(tmp_path, frag="CONFIG_B=y\n"))
    assert key != cache_key(spec, request(tmp_path, compiler="gcc 13"))
    assert key != cache_key(dataclasses.replace(spec, libraries=("m",)), request(tmp_path))


def test_compile_argv_is_the_facts_files_command(tmp_path: Path) -> None:
    argv = compile_argv(hmm_spec(), tmp_path / "out")
    assert argv == [
        "gcc",
        "-O2",
        "-I.",
        "-Itools/include",
        "-static",
        "-o",
        f"{tmp_path}/out",
        "tools/testing/selftests/mm/hmm-tests.c",
        "-lrt",
        "-lpthread",
        "-lm",
    ]


# ---- what the kernel must provide ----------------------------------------------------------


def fake_kernel(tmp_path: Path, config: str, modules: dict[str, str] | None) -> Kernel:
    build = tmp_path / "build"
    build.mkdir()
    (build / ".config").write_text(config)
    moddir = None
    if modules is not None:
        moddir = tmp_path / "lib" / "modules" / "6.12.0"
        moddir.mkdir(parents=True)
        (moddir / "modules.dep").write_text("".join(f"{p}: {d}\n" for p, d in modules.items()))
        (moddir / "modules.builtin").write_text("")
    return Kernel("6.12.0", tmp_path / "bzImage", moddir, build, "test")


def test_check_kernel_gives_the_module_to_load(tmp_path: Path) -> None:
    kernel = fake_kernel(
        tmp_path, "CONFIG_TEST_HMM=m\n", {"kernel/lib/test_hmm.ko": "", "kernel/x.ko": ""}
    )
    assert guest.check_kernel(hmm_spec(), kernel, "hmm") == (
        tmp_path / "lib/modules/6.12.0/kernel/lib/test_hmm.ko",
    )


def test_check_kernel_without_the_option_names_kernel_fragment_and_yaml(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, "# CONFIG_TEST_HMM is not set\n", {})
    with pytest.raises(KselftestError) as info:
        guest.check_kernel(hmm_spec(), kernel, "base")
    message = str(info.value)
    assert "kernel base (6.12.0) lacks CONFIG_TEST_HMM (is not set)" in message
    assert "add hmm.config to the fragments of guest-kernel-config/kernels/base.yaml" in message


def test_check_kernel_with_the_option_but_no_module_says_so(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, "CONFIG_TEST_HMM=m\n", {"kernel/x.ko": ""})
    with pytest.raises(KselftestError, match=r"kernel mine: .*'test_hmm'.*add hmm.config"):
        guest.check_kernel(hmm_spec(), kernel, "mine")


@pytest.mark.parametrize("selection", [None, "stock", "/boot/vmlinuz", "./linux"])
def test_a_kernel_without_source_cannot_build_the_program(selection: str | None) -> None:
    with pytest.raises(KselftestError, match=r"built from the kernel's own source.*--kernel hmm"):
        guest.request_for(selection, hmm_spec())
