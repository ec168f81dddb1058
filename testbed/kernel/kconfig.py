"""Kernel config fragments as values: parse, merge, and check what ``olddefconfig`` kept.

A fragment is a ``.config`` excerpt (``CONFIG_X=y``, ``CONFIG_X=m``, ``CONFIG_X="text"``,
``CONFIG_X=123`` or ``# CONFIG_X is not set``). Fragments are merged in order, later ones
overriding earlier ones (as the kernel's ``scripts/kconfig/merge_config.sh`` does); after the
kernel's ``make olddefconfig`` every requested option is compared with the resulting
``.config``, and a miss is reported kunit-style with the option's ``depends on`` line read
from the kernel's own Kconfig files::

    guest-kernel-config/base.config:71: requested CONFIG_ZONE_DEVICE=y, got: not set
      (depends on MEMORY_HOTPLUG && MEMORY_HOTREMOVE && SPARSEMEM_VMEMMAP)

Everything here is pure logic over text (the Kconfig index reads files but runs nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import ConfigError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_VALUE = re.compile(r'^(y|m|n|-?\d+|0x[0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$')

NOT_SET = "n"  #: how an unset option (``# CONFIG_X is not set`` or absent) is represented


@dataclass(frozen=True)
class Option:
    """One requested option: ``name`` is ``CONFIG_X``, ``value`` ``y``/``m``/``n``/text."""

    name: str
    value: str
    path: str  #: the fragment it came from
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def request(self) -> str:
        return f"{self.name}={self.value}" if self.value != NOT_SET else f"{self.name}=n"


@dataclass(frozen=True)
class Fragment:
    """A parsed config fragment; ``text`` is kept for hashing and for ``merge_config.sh``."""

    path: str
    text: str
    options: tuple[Option, ...]


def parse_fragment(text: str, path: str | Path) -> Fragment:
    """Parse a fragment strictly: a line that is neither an option, a comment nor blank is
    an error naming file and line, and so is an option given twice in one file."""
    options: list[Option] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        unset = _UNSET.match(line)
        if unset:
            name, value = unset.group(1), NOT_SET
        elif line.startswith("#"):
            continue
        else:
            match = _SET.match(line)
            if not match:
                raise ConfigError(
                    f"not a config line: {raw!r}; write CONFIG_NAME=y|m|VALUE or "
                    "'# CONFIG_NAME is not set'",
                    path=path,
                    line=number,
                )
            name, value = match.group(1), match.group(2)
            if not _VALUE.match(value):
                raise ConfigError(
                    f'{name}: value {value!r} is not y, m, n, a number or a "quoted string"',
                    path=path,
                    line=number,
                )
        if name in seen:
            raise ConfigError(
                f"{name} is given twice (first on line {seen[name]}); keep one",
                path=path,
                line=number,
            )
        seen[name] = number
        options.append(Option(name, value, str(path), number))
    return Fragment(str(path), text, tuple(options))


def read_fragment(path: Path) -> Fragment:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            "config fragment not found; check the kernel description's 'fragments'", path=path
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config fragment: {exc}", path=path) from exc
    return parse_fragment(text, path)


@dataclass(frozen=True)
class Override:
    """A later fragment changing what an earlier one requested (allowed, but reported)."""

    earlier: Option
    later: Option

    def describe(self) -> str:
        return (
            f"{self.later.where}: {self.later.request()} overrides "
            f"{self.earlier.request()} from {self.earlier.where}"
        )


def merge(fragments: Iterable[Fragment]) -> tuple[dict[str, Option], list[Override]]:
    """What the fragments request together, later fragments winning; plus the overrides."""
    merged: dict[str, Option] = {}
    overrides: list[Override] = []
    for fragment in fragments:
        for option in fragment.options:
            earlier = merged.get(option.name)
            if earlier is not None and earlier.value != option.value:
                overrides.append(Override(earlier, option))
            merged[option.name] = option
    return merged, overrides


def parse_dotconfig(text: str) -> dict[str, str]:
    """A ``.config`` as ``{CONFIG_X: value}``; ``is not set`` lines map to ``n``."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        unset = _UNSET.match(line)
        if unset:
            values[unset.group(1)] = NOT_SET
            continue
        match = _SET.match(line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


# --- Kconfig: which symbols exist and what they depend on -----------------------------------

_CONFIG_DECL = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")
_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+?)\s*(?:#.*)?$")
_SELECTED_BY = re.compile(r"^\s*select\s+([A-Za-z0-9_]+)")
_PROMPT = re.compile(r'^\s*(?:bool|tristate|string|int|hex)\s+"|^\s*prompt\s+"')
_BLOCK_END = re.compile(
    r"^\s*(?:config|menuconfig|choice|endchoice|menu|endmenu|if|endif|comment|source)\b"
    r"|^\s*-*help-*\s*$"  # the help text ends an entry's attributes
)


_IF = re.compile(r"^\s*if\s+(.+?)\s*(?:#.*)?$")
_OPEN = re.compile(r"^\s*(menu|choice)\b")
_CLOSE = re.compile(r"^\s*(endif|endmenu|endchoice)\b")
_HELP = re.compile(r"^\s*-*help-*\s*$")


@dataclass(frozen=True)
class Symbol:
    """What the Kconfig files say about one symbol (merged over all its definitions)."""

    name: str
    depends: tuple[str, ...]  #: each ``depends on`` expression, in order
    has_prompt: bool  #: False: hidden, can only be ``select``ed
    selected_by: tuple[str, ...]  #: symbols that ``select`` it
    where: str  #: ``Kconfig file:line`` of its first definition
    #: conditions of the ``if``/``menu``/``choice`` blocks around its first definition, each as
    #: ``(expression, "file:line" of the block)``, outermost first
    enclosing: tuple[tuple[str, str], ...] = ()


@dataclass
class _Block:
    kind: str  #: ``if``, ``menu`` or ``choice``
    where: str
    condition: str | None  #: an ``if``'s expression, or a menu's/choice's ``depends on``


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def index_kconfig(files: Mapping[str, str]) -> dict[str, Symbol]:
    """Index ``config``/``menuconfig`` entries of Kconfig ``files`` (``{path: text}``).

    This is a line scanner, not a Kconfig parser: it records each symbol's own ``depends on``
    lines, whether it has a prompt, who ``select``s it, and the conditions of the ``if``,
    ``menu`` and ``choice`` blocks around it in its own file -- what a human needs to read a
    miss (``TEST_HMM`` sits inside ``if RUNTIME_TESTING_MENU``). Blocks around a ``source``
    line in another file are not followed. Help texts are skipped, so a help line starting
    with "if" opens nothing.
    """
    depends: dict[str, list[str]] = {}
    prompt: dict[str, bool] = {}
    selected: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    enclosing: dict[str, tuple[tuple[str, str], ...]] = {}
    for path, text in files.items():
        current: str | None = None
        stack: list[_Block] = []
        header: _Block | None = None  #: a menu/choice whose ``depends on`` lines may follow
        help_indent: int | None = None  #: inside a help text: the indent of its help keyword
        text_indent: int | None = None  #: the indent of the help text's first line
        for number, line in _logical_lines(text):
            if help_indent is not None:
                if not line.strip():
                    continue
                if text_indent is None and _indent(line) > help_indent:
                    text_indent = _indent(line)
                if text_indent is not None and _indent(line) >= text_indent:
                    continue
                help_indent = text_indent = None
            decl = _CONFIG_DECL.match(line)
            if decl:
                current, header = decl.group(1), None
                depends.setdefault(current, [])
                prompt.setdefault(current, False)
                if current not in where:
                    where[current] = f"{path}:{number}"
                    enclosing[current] = tuple(
                        (b.condition, b.where) for b in stack if b.condition is not None
                    )
                continue
            if _HELP.match(line):
                current, header, help_indent = None, None, _indent(line)
                continue
            opened, closed, cond = _OPEN.match(line), _CLOSE.match(line), _IF.match(line)
            if opened or closed or cond or _BLOCK_END.match(line):
                current = header = None
                if cond:
                    stack.append(_Block("if", f"{path}:{number}", cond.group(1)))
                elif opened:
                    header = _Block(opened.group(1), f"{path}:{number}", None)
                    stack.append(header)
                elif closed and stack:
                    stack.pop()
                continue
            dep = _DEPENDS.match(line)
            if header is not None and dep:
                header.condition = (
                    dep.group(1)
                    if header.condition is None
                    else f"{header.condition} && {dep.group(1)}"
                )
                continue
            if current is None:
                continue
            if dep:
                if dep.group(1) not in depends[current]:
                    depends[current].append(dep.group(1))
                continue
            if _PROMPT.match(line):
                prompt[current] = True
                continue
            sel = _SELECTED_BY.match(line)
            if sel:
                selected.setdefault(sel.group(1), []).append(current)
    return {
        name: Symbol(
            name,
            tuple(depends[name]),
            prompt[name],
            tuple(dict.fromkeys(selected.get(name, ()))),
            where[name],
            enclosing[name],
        )
        for name in depends
    }


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, each with its first line's number."""
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip() if pending else line[:-1].rstrip())
            continue
        pending.append(line.strip() if pending else line)
        yield start, " ".join(pending)
        pending = []
    if pending:
        yield start, " ".join(pending)


def read_kconfig_tree(source: Path) -> dict[str, Symbol]:
    """Index every ``Kconfig*`` file under a kernel source tree (about 1,700 files)."""
    files: dict[str, str] = {}
    for path in source.rglob("Kconfig*"):
        if path.is_file() and not path.name.endswith((".rst", "~")):
            try:
                files[str(path.relative_to(source))] = path.read_text(
                    encoding="utf-8", errors="replace"
                )
            except OSError:
                continue
    return index_kconfig(files)


# --- the check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Miss:
    """A requested option ``olddefconfig`` did not keep."""

    option: Option
    got: str  #: the value in ``.config`` (``n`` when unset or absent)
    symbol: Symbol | None  #: None: no such symbol in this kernel's Kconfig

    def describe(self) -> str:
        got = "not set" if self.got == NOT_SET else self.got
        text = f"{self.option.where}: requested {self.option.request()}, got: {got}"
        if self.symbol is None:
            return (
                text + f" ({self.option.name} does not exist in this kernel's Kconfig; "
                "check the spelling or drop the line)"
            )
        why: list[str] = []
        if self.symbol.depends:
            why.append(
                "depends on "
                + " && ".join(f"({d})" if "||" in d else d for d in self.symbol.depends)
            )
        for condition, block in self.symbol.enclosing:
            why.append(f"inside 'if {condition}' ({block})")
        if not self.symbol.has_prompt:
            selectors = ", ".join(self.symbol.selected_by[:6]) or "nothing"
            why.append(f"hidden: only selected, by {selectors}")
        return text + (f" ({'; '.join(why)})" if why else "")


def check(requested: Mapping[str, Option], dotconfig: Mapping[str, str]) -> list[Option]:
    """Requested options whose value in ``dotconfig`` differs, in request order."""
    return [opt for opt in requested.values() if dotconfig.get(opt.name, NOT_SET) != opt.value]


def explain(
    misses: Iterable[Option], dotconfig: Mapping[str, str], symbols: Mapping[str, Symbol]
) -> list[Miss]:
    """Attach what Kconfig says to each miss (``symbols`` from :func:`read_kconfig_tree`)."""
    return [
        Miss(opt, dotconfig.get(opt.name, NOT_SET), symbols.get(opt.name.removeprefix("CONFIG_")))
        for opt in misses
    ]
