"""Typed configuration: YAML files loaded into dataclasses, checked at start-up.

Every config of the project is a dataclass; `load_config(Cls, path)` reads YAML into it and fails
with `ConfigError` naming the file, the dotted key and the reason for an unknown key (with a
close-match suggestion), a missing required key or a wrong type. Nothing is silently ignored.

    @dataclass
    class Camera:
        serial: str
        fps: int = 30

    cam = load_config(Camera, "config/camera.yaml", overrides={"fps": 15})
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot be used; the message names file, key and reason."""


def _fail(source: str, key: str, reason: str) -> typing.NoReturn:
    where = f"{source}: " if source else ""
    raise ConfigError(f"{where}{key or '<root>'}: {reason}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        _fail(source, key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(c) for c in get_args(tp))
            _fail(source, key, f"must be one of {choices}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            _fail(source, key, f"expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, key, source)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            _fail(source, key, f"expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                _fail(source, key, f"expected {len(args)} items, got {len(value)}")
            return tuple(
                _convert(a, v, f"{key}[{i}]", source)
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            _fail(source, key, f"expected a mapping, got {type(value).__name__}")
        kt, vt = get_args(tp) or (Any, Any)
        return {
            _convert(kt, k, f"{key}.<key>", source): _convert(vt, v, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            _fail(source, key, f"expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(source, key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(source, key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(source, key, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            _fail(source, key, f"expected a path string, got {type(value).__name__} {value!r}")
        return Path(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    _fail(source, key, f"unsupported config type {_type_name(tp)}")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, source: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            dotted = f"{prefix}.{name}" if prefix else str(name)
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
            _fail(source, dotted, f"unknown key{hint}")
    kwargs = {}
    for name, field in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], dotted, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            _fail(source, dotted, "required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        _fail(source, prefix, str(exc))


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        head, _, rest = str(key).partition(".")
        if rest:
            out[head] = _merge(dict(out.get(head) or {}), {rest: value})
        elif isinstance(value, Mapping) and isinstance(out.get(head), Mapping):
            out[head] = _merge(dict(out[head]), value)
        else:
            out[head] = value
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "") -> T:
    """Build a config dataclass from plain data, with the same checks as `load_config`."""
    if not isinstance(data, Mapping):
        _fail(source, "", f"expected a mapping at the top level, got {type(data).__name__}")
    return _build(cls, data, "", source)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc


def load_config(cls: type[T], path: str | Path, overrides: Mapping[str, Any] | None = None) -> T:
    """Load YAML at `path` into `cls`; `overrides` use dotted keys ({"hand.name": "allegro"})."""
    data = load_yaml(path)
    if overrides:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = _merge(dict(data), overrides)
    return from_dict(cls, data, source=str(path))


def to_dict(config: Any) -> dict[str, Any]:
    """Plain data (for YAML/JSON reports) of a config dataclass."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)
