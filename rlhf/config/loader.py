"""YAML + `--set a.b=c` overrides -> a validated `Config`.

The accepted keys and their types are read off the dataclasses in `schema.py`;
nothing here lists them again.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from rlhf.config.device_defaults import resolve_device_defaults
from rlhf.config.schema import Config, ConfigError


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


YAML11_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of {sorted(f.name for f in dataclasses.fields(tp))}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and YAML11_EXPONENT.match(value):
            return float(value)  # YAML 1.1 reads `5e-5` (no dot) as a string; users write it all the time
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is typing.Any:  # free-form values handed on as they are (rollout.env_kwargs)
        return value
    elif typing.get_origin(tp) is dict:
        key_tp, value_tp = typing.get_args(tp)
        if isinstance(value, dict):
            return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    else:  # pragma: no cover - a schema type the loader does not know is a bug here
        raise TypeError(f"{key}: unsupported config type {tp}")
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{key}: expected {name}, got {type(value).__name__} {value!r}")


def _build(cls: type, raw: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in known:
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{where}: unknown key (known here: {', '.join(sorted(known))})")
    kwargs = {
        name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in raw.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError as err:
        message = str(err)
        # Sections reused under several names (ray.policy, ray.critic, ...) only know their own keys.
        if prefix and not message.startswith(prefix.split(".")[0] + "."):
            message = f"{prefix}.{message}"
        raise ConfigError(message) from None


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """tree[a][b][c] = value for `a.b.c`, creating sections on the way."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", c), the value parsed as YAML (so 3 is an int, null is None)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    return key, yaml.safe_load(raw) if raw.strip() else ""


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load(path: Optional[str | Path] = None, overrides: Iterable[str] = (), validate: bool = True) -> Config:
    """Read a YAML config, apply `key.sub=value` overrides, type-check and validate.

    Raises ConfigError naming the dotted key on an unknown key, a wrong type or a value out of range.
    """
    raw = read_yaml(path) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    return from_dict(raw, validate)


def from_dict(raw: dict, validate: bool = True) -> Config:
    """A config tree of plain data (the shape of the YAML) -> a type-checked, validated `Config`."""
    config = _build(Config, raw, "")
    if validate:
        config.validate()
    resolve_device_defaults(config)
    return config


def to_dict(config: Any) -> dict:
    """The config as plain data, the exact shape `load` reads back."""
    return dataclasses.asdict(config)


def dump(config: Config, path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts (frozen by a snapshot test)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        inner, _ = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):
            keys.extend(all_keys(inner, dotted + "."))
        else:
            keys.append(dotted)
    return keys
