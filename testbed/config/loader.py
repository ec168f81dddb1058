"""Strict YAML: safe loading, no duplicate keys, no unknown keys, typed values.

Documents are turned into frozen dataclasses by :func:`load_dataclass`, which walks the YAML
node tree (not the plain Python objects) so that every error names the file, the line and
the dotted key that is wrong, e.g.::

    qemu-devices/machines/default.yaml:7: devices[1].bar_size: expected a size such as
    64M or 1G, got 'big'

Supported field types: ``str``, ``int``, ``float``, ``bool``, :class:`enum.Enum` subclasses
(by value), :class:`Size` (``"64M"``), ``tuple[T, ...]``, ``dict[str, str]``, ``T | None``
and nested dataclasses. Fields with defaults are optional; all others are required. A
dataclass with a ``source`` field gets ``"file:line"`` of its mapping there, so later checks
(a device type that does not exist, say) can still point at the right line.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml

from testbed.errors import ConfigError

T = TypeVar("T")


class Size(int):
    """A byte count written with an optional binary suffix: ``65536``, ``64K``, ``64M``, ``1G``."""

    _UNITS: typing.ClassVar[dict[str, int]] = {
        "": 1,
        "K": 1 << 10,
        "M": 1 << 20,
        "G": 1 << 30,
        "T": 1 << 40,
    }
    _RE: typing.ClassVar[re.Pattern[str]] = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.I)

    @classmethod
    def parse(cls, text: str | int) -> Size:
        if isinstance(text, int):
            return cls(text)
        match = cls._RE.match(text)
        if not match:
            raise ValueError(f"expected a size such as 64M or 1G, got {text!r}")
        return cls(int(match.group(1)) * cls._UNITS[match.group(2).upper()])

    def human(self) -> str:
        for suffix in ("T", "G", "M", "K"):
            unit = self._UNITS[suffix]
            if self >= unit and self % unit == 0:
                return f"{self // unit}{suffix}"
        return str(int(self))


class FieldError(ValueError):
    """A ``__post_init__`` check that knows which field (and which item of it) is wrong.

    The loader points the error at that field's line -- or at the item's, ``item`` being a
    list index or a mapping key -- instead of at the line where the whole mapping starts.
    """

    def __init__(self, message: str, field: str, item: int | str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.item = item


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings reject duplicate keys."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call,unused-ignore]
        if key in seen:
            raise ConfigError(
                f"duplicate key (first given on line {seen[key]})",
                path=getattr(loader, "name", None),
                line=key_node.start_mark.line + 1,
                key=str(key),
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _no_duplicates,  # type: ignore[arg-type,unused-ignore]
)


def compose_file(path: Path) -> yaml.Node:
    """Parse ``path`` into a YAML node tree, with duplicate-key and syntax errors located."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError("file not found", path=path) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text; save the file as UTF-8", path=path, line=line) from exc
    return compose_text(text, path)


def compose_text(text: str, path: Path | str) -> yaml.Node:
    try:
        loader = _StrictLoader(text)  # checks for characters YAML does not allow
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        raise ConfigError(f"invalid YAML: {exc}", path=path, line=line) from exc
    loader.name = str(path)
    try:
        node = loader.get_single_node()  # type: ignore[no-untyped-call,unused-ignore]
        if node is not None:
            # Constructing once runs the duplicate-key check over the whole document.
            loader.construct_document(node)  # type: ignore[no-untyped-call,unused-ignore]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", path=path, line=line) from exc
    finally:
        loader.dispose()  # type: ignore[no-untyped-call,unused-ignore]
    if node is None:
        raise ConfigError("the file is empty; expected a mapping", path=path, line=1)
    return node


def load_dataclass(cls: type[T], path: Path) -> T:
    """Load ``path`` into the frozen dataclass ``cls``, strictly."""
    return typing.cast(T, _Converter(path).convert(compose_file(path), cls, ""))


def load_dataclass_text(cls: type[T], text: str, path: str = "<string>") -> T:
    """Like :func:`load_dataclass` for text in memory (tests, command-line overrides)."""
    return typing.cast(T, _Converter(Path(path)).convert(compose_text(text, path), cls, ""))


class _Converter:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, node: yaml.Node, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, line=node.start_mark.line + 1, key=key or None)

    def scalar(self, node: yaml.Node, key: str, what: str) -> object:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, key, f"expected {what}, got a {_kind(node)}")
        loader = _StrictLoader("")
        try:
            return loader.construct_object(node)  # type: ignore[no-untyped-call,unused-ignore]
        finally:
            loader.dispose()  # type: ignore[no-untyped-call,unused-ignore]

    def convert(self, node: yaml.Node, tp: Any, key: str) -> Any:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if (
                isinstance(node, yaml.ScalarNode)
                and node.tag.endswith(":null")
                and type(None) in get_args(tp)
            ):
                return None
            if len(args) != 1:
                raise TypeError(f"unsupported union {tp}")
            return self.convert(node, args[0], key)
        if dataclasses.is_dataclass(tp):
            return self.dataclass(node, typing.cast(type[Any], tp), key)
        if origin is tuple:
            (item_tp, _ellipsis) = get_args(tp)
            if not isinstance(node, yaml.SequenceNode):
                raise self.error(node, key, f"expected a list, got a {_kind(node)}")
            return tuple(
                self.convert(item, item_tp, f"{key}[{i}]") for i, item in enumerate(node.value)
            )
        if origin is dict:
            if not isinstance(node, yaml.MappingNode):
                raise self.error(node, key, f"expected a mapping, got a {_kind(node)}")
            out: dict[str, str] = {}
            for k_node, v_node in node.value:
                k = str(self.scalar(k_node, key, "a key"))
                value = self.scalar(v_node, f"{key}.{k}" if key else k, "a scalar")
                if value is None:
                    raise self.error(
                        v_node, f"{key}.{k}" if key else k, "no value; write '' for an empty one"
                    )
                out[k] = _scalar_text(value)
            return out
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            value = self.scalar(node, key, "one of " + ", ".join(str(m.value) for m in tp))
            try:
                return tp(value)
            except ValueError:
                allowed = ", ".join(repr(m.value) for m in tp)
                raise self.error(node, key, f"expected one of {allowed}, got {value!r}") from None
        if tp is Size:
            value = self.scalar(node, key, "a size")
            if isinstance(value, bool):
                raise self.error(node, key, f"expected a size such as 64M, got {value!r}")
            try:
                return Size.parse(typing.cast(str | int, value))
            except (ValueError, TypeError) as exc:
                raise self.error(node, key, str(exc)) from None
        if tp is bool:
            value = self.scalar(node, key, "true or false")
            if not isinstance(value, bool):
                raise self.error(node, key, f"expected true or false, got {value!r}")
            return value
        if tp is int:
            value = self.scalar(node, key, "an integer")
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(node, key, f"expected an integer, got {value!r}")
            return value
        if tp is float:
            value = self.scalar(node, key, "a number")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(node, key, f"expected a number, got {value!r}")
            return float(value)
        if tp is str:
            value = self.scalar(node, key, "a string")
            if not isinstance(value, str):
                raise self.error(
                    node, key, f"expected a string, got {value!r} (quote it if it is meant as text)"
                )
            return value
        raise TypeError(f"unsupported field type {tp!r}")

    def dataclass(self, node: yaml.Node, cls: type[Any], key: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected a mapping, got a {_kind(node)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        settable = {n for n in fields if n != "source"}
        values: dict[str, Any] = {}
        nodes: dict[str, tuple[yaml.Node, yaml.Node, str]] = {}
        for k_node, v_node in node.value:
            name = self.scalar(k_node, key, "a key")
            sub = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str) or name.replace("-", "_") not in settable:
                known = ", ".join(sorted(f.replace("_", "-") for f in settable))
                raise self.error(k_node, sub, f"unknown key; known keys here: {known}")
            attr = name.replace("-", "_")
            if attr in values:
                raise self.error(k_node, sub, "given twice (as '-' and '_' spellings)")
            values[attr] = self.convert(v_node, hints[attr], sub)
            nodes[attr] = (k_node, v_node, sub)
        missing = [
            n
            for n, f in fields.items()
            if n not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            names = ", ".join(m.replace("_", "-") for m in missing)
            raise self.error(node, key, f"missing required key(s): {names}")
        if "source" in fields and "source" not in values:
            values["source"] = f"{self.path}:{node.start_mark.line + 1}"
        try:
            return cls(**values)
        except FieldError as exc:  # __post_init__ validation that names its field
            if exc.field not in nodes:
                raise self.error(node, key, str(exc)) from None
            k_node, v_node, sub = nodes[exc.field]
            where: yaml.Node = k_node
            if isinstance(exc.item, int) and isinstance(v_node, yaml.SequenceNode):
                where, sub = v_node.value[exc.item], f"{sub}[{exc.item}]"
            elif isinstance(exc.item, str) and isinstance(v_node, yaml.MappingNode):
                for item_key, _ in v_node.value:
                    if str(item_key.value) == exc.item:
                        where, sub = item_key, f"{sub}.{exc.item}"
                        break
            raise self.error(where, sub, str(exc)) from None
        except ValueError as exc:  # __post_init__ validation
            raise self.error(node, key, str(exc)) from None


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return f"scalar ({node.value!r})"


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
