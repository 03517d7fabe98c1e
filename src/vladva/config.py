"""Dataclass configs from YAML recipes plus `key.sub=value` overrides, with strict key checking.

Every run writes its resolved config (`save_config`) next to its outputs so a result can be
reproduced. Unknown or misspelt keys are errors that name the key and suggest the closest one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config key or value; the message names the key (dotted path) and the source."""


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key + ".", source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{source}: bad value for '{key}'")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{source}: '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
    return value


def build_config(cls: type[T], data: dict, source: str, base: T | None = None, prefix: str = "") -> T:
    """Apply a (partial, nested) mapping onto `base` (default: `cls()`) with the same strict key
    and type checks as a YAML file; `source` names where the mapping came from in errors and
    `prefix` is put before key names in them (e.g. "model.")."""
    return _build(cls, data, prefix, source, base=base)


def _build(cls: type[T], data: dict, prefix: str, source: str, base: T | None = None) -> T:
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, list(types_), n=1)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(types_)}"
        raise ConfigError(f"{source}: unknown config key '{prefix}{k}'{hint}")
    obj = base if base is not None else cls()
    kwargs = {}
    for k, v in data.items():
        tp = types_[k]
        current = getattr(obj, k)
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            kwargs[k] = _build(tp, v, f"{prefix}{k}.", source, base=current)
        else:
            kwargs[k] = _coerce(v, tp, prefix + k, source)
    out = dataclasses.replace(obj, **kwargs)
    if hasattr(out, "validate"):
        try:
            out.validate()
        except ValueError as e:
            msg = str(e)
            # Validators name keys from their own section ("lora.r"); give the full path ("model.lora.r").
            short = prefix.rstrip(".").rsplit(".", 1)[-1] + "."
            if prefix and msg.startswith(short) and not msg.startswith(prefix):
                msg = prefix[: -len(short)] + msg
            raise ConfigError(f"{source}: {msg}") from None
    return out


def parse_overrides(overrides: list[str]) -> dict:
    """`["train.lr=1e-4", "seed=3"]` -> nested dict; values are parsed as YAML scalars."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def read_config_file(path: Path | str) -> dict:
    """The mapping of config keys in the YAML file at `path`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys")
    return data


def load_config(cls: type[T], path: Path | str | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of `cls`, then the YAML file at `path`, then `overrides`."""
    cfg = cls()
    if path is not None:
        cfg = _build(cls, read_config_file(path), "", str(path), base=cfg)
    if overrides:
        cfg = _build(cls, parse_overrides(overrides), "", "command line", base=cfg)
    return cfg


def config_to_dict(cfg) -> dict:
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(dataclasses.asdict(cfg))


def save_config(cfg, path: Path | str) -> None:
    """Write the resolved config as YAML (atomically)."""
    from vladva.storage import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
