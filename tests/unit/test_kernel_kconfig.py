"""Config fragments (testbed.kernel.kconfig): parsing, merging, and the post-olddefconfig
check against a .config and Kconfig files captured from Debian's 6.12 source
(tests/data/kconfig/README.md says how)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel import kconfig
from testbed.paths import PROJECT_ROOT

DATA = Path(__file__).parent.parent / "data" / "kconfig"


def test_parse_fragment_values_and_lines() -> None:
    frag = kconfig.parse_fragment(
        '# comment\n\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D="x y"\n'
        "CONFIG_E=0x10\nCONFIG_F=-3\n",
        "f.config",
    )
    got = [(o.name, o.value, o.line) for o in frag.options]
    assert got == [
        ("CONFIG_A", "y", 3),
        ("CONFIG_B", "m", 4),
        ("CONFIG_C", "n", 5),
        ("CONFIG_D", '"x y"', 6),
        ("CONFIG_E", "0x10", 7),
        ("CONFIG_F", "-3", 8),
    ]
    assert frag.options[0].where == "f.config:3"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("CONFIG_A=y\nA=y\n", 2, "not a config line"),
        ("CONFIG_A=yes\n", 1, "is not y, m, n"),
        ("CONFIG_A=unquoted text\n", 1, "quoted string"),
        ("CONFIG_A=y\n\nCONFIG_A=m\n", 3, r"given twice \(first on line 1\)"),
    ],
)
def test_parse_fragment_errors_name_file_and_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        kconfig.parse_fragment(text, "frag.config")
    assert info.value.path == Path("frag.config")
    assert info.value.line == line


def test_merge_later_wins_and_reports_overrides() -> None:
    a = kconfig.parse_fragment("CONFIG_A=y\nCONFIG_B=y\n", "a.config")
    b = kconfig.parse_fragment("CONFIG_B=m\nCONFIG_C=y\nCONFIG_A=y\n", "b.config")
    merged, overrides = kconfig.merge([a, b])
    assert {k: v.value for k, v in merged.items()} == {
        "CONFIG_A": "y",
        "CONFIG_B": "m",
        "CONFIG_C": "y",
    }
    assert merged["CONFIG_B"].where == "b.config:1"
    assert [o.describe() for o in overrides] == [
        "b.config:1: CONFIG_B=m overrides CONFIG_B=y from a.config:2"
    ]


def test_parse_dotconfig() -> None:
    values = kconfig.parse_dotconfig(
        '#\n# Automatically generated\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S="t"\n'
    )
    assert values == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_S": '"t"'}


def test_index_kconfig_depends_prompt_selects() -> None:
    symbols = kconfig.index_kconfig(
        {
            "a/Kconfig": 'config FOO\n\tbool "foo"\n\tdepends on BAR && BAZ\n\tdepends on QUX\n'
            "\tselect HIDDEN\n\thelp\n\t  depends on NOT_THIS\n\nconfig HIDDEN\n\tbool\n",
            "b/Kconfig": 'menuconfig BAR\n\tprompt "bar"\n\nif BAR\nconfig X\n\ttristate\nendif\n',
        }
    )
    foo = symbols["FOO"]
    assert foo.depends == ("BAR && BAZ", "QUX")
    assert foo.has_prompt and foo.where == "a/Kconfig:1"
    assert symbols["HIDDEN"].has_prompt is False
    assert symbols["HIDDEN"].selected_by == ("FOO",)
    assert symbols["BAR"].has_prompt is True
    assert symbols["X"].depends == ()
    assert symbols["X"].enclosing == (("BAR", "b/Kconfig:4"),)
    assert foo.enclosing == ()


def test_index_kconfig_enclosing_blocks_nest_and_close() -> None:
    text = (
        'menu "Outer"\n\tdepends on OUTER && ALSO\n\n'  # a menu's condition
        "if A\n"
        'config IN_BOTH\n\tbool "x"\n'
        "\thelp\n\t  if you say Y here, nothing happens\n\t  endif is just a word here\n\n"
        "endif # A\n"
        'config IN_MENU\n\tbool "y"\n'
        "endmenu\n"
        'choice\n\tprompt "pick"\n\tdepends on CHOOSER\nconfig CHOICE_A\n\tbool "a"\nendchoice\n'
        'config OUTSIDE\n\tbool "z"\n'
    )
    symbols = kconfig.index_kconfig({"K": text})
    assert symbols["IN_BOTH"].enclosing == (("OUTER && ALSO", "K:1"), ("A", "K:4"))
    assert symbols["IN_MENU"].enclosing == (("OUTER && ALSO", "K:1"),)
    assert symbols["CHOICE_A"].enclosing == (("CHOOSER", "K:15"),)
    assert symbols["OUTSIDE"].enclosing == ()


def test_index_kconfig_joins_continued_depends() -> None:
    text = 'menuconfig KASAN\n\tbool "k"\n\tdepends on (A && \\\n\t\t    B) || \\\n\t\tC\n'
    assert kconfig.index_kconfig({"K": text})["KASAN"].depends == ("(A && B) || C",)


def _captured_symbols() -> dict[str, kconfig.Symbol]:
    return kconfig.read_kconfig_tree(DATA / "Kconfig")


def test_check_captured_olddefconfig_names_the_missing_dependency() -> None:
    """The real case: base.config without MEMORY_HOTREMOVE loses ZONE_DEVICE and PCI_P2PDMA."""
    frag = kconfig.read_fragment(DATA / "no-hotremove.fragment")
    requested, _ = kconfig.merge([frag])
    dotconfig = kconfig.parse_dotconfig((DATA / "olddefconfig-no-hotremove.config").read_text())
    misses = kconfig.check(requested, dotconfig)
    assert [m.name for m in misses] == [
        "CONFIG_ZONE_DEVICE",
        "CONFIG_PCI_P2PDMA",
        "CONFIG_DEVICE_PRIVATE",  # depends on ZONE_DEVICE
        "CONFIG_TEST_HMM",  # depends on DEVICE_PRIVATE
        "CONFIG_P2P_TESTBED_NO_SUCH_OPTION",
    ]
    lines = [m.describe() for m in kconfig.explain(misses, dotconfig, _captured_symbols())]
    where = str(DATA / "no-hotremove.fragment")
    zone_line = next(o.line for o in frag.options if o.name == "CONFIG_ZONE_DEVICE")
    assert lines[0] == (
        f"{where}:{zone_line}: requested CONFIG_ZONE_DEVICE=y, got: not set (depends on "
        "MEMORY_HOTPLUG && MEMORY_HOTREMOVE && SPARSEMEM_VMEMMAP && ARCH_HAS_PTE_DEVMAP)"
    )
    assert (
        "requested CONFIG_PCI_P2PDMA=y, got: not set (depends on ZONE_DEVICE && 64BIT; "
        "inside 'if PCI' (drivers/pci/Kconfig:29))" in lines[1]
    )
    assert "requested CONFIG_TEST_HMM=m, got: not set (depends on TRANSPARENT_HUGEPAGE" in lines[3]
    assert "CONFIG_P2P_TESTBED_NO_SUCH_OPTION does not exist in this kernel's Kconfig" in lines[4]


def test_hidden_option_says_who_selects_it() -> None:
    opt = kconfig.Option("CONFIG_MMU_NOTIFIER", "y", "f.config", 4)
    (miss,) = kconfig.explain([opt], {}, _captured_symbols())
    text = miss.describe()
    assert text.startswith("f.config:4: requested CONFIG_MMU_NOTIFIER=y, got: not set")
    assert "hidden: only selected, by TEST_HMM" in text


def test_wrong_value_is_a_miss_too() -> None:
    opt = kconfig.Option("CONFIG_TEST_HMM", "y", "f.config", 1)
    assert kconfig.check({opt.name: opt}, {"CONFIG_TEST_HMM": "m"}) == [opt]
    unset = kconfig.Option("CONFIG_X", "n", "f.config", 2)
    assert kconfig.check({unset.name: unset}, {}) == []  # absent counts as not set


@pytest.mark.parametrize("name", ["base.config", "debug.config", "hmm.config"])
def test_shipped_fragments_parse(name: str) -> None:
    frag = kconfig.read_fragment(PROJECT_ROOT / "guest-kernel-config" / name)
    assert frag.options, f"{name} requests nothing"
