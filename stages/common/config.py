"""Load the config model from JSON files and `--set key.path=value` overrides.

Every error names the file and the key path and says what was expected.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from schemas.config import TrendflowConfig
from stages.common.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "default.json"


def _describe_error(err: dict) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{path}'"
    if kind == "missing":
        return f"missing key '{path}'"
    got = err.get("input")
    got_text = f"{got!r} ({type(got).__name__})" if not isinstance(got, dict) else "an object"
    return f"key '{path}': {err['msg']}; got {got_text}"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> TrendflowConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object, got {type(raw).__name__}")
    try:
        return TrendflowConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe_error(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: the top level must be a JSON object")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """`risk.atr_multiplier=2.5` -> (['risk', 'atr_multiplier'], 2.5). Values are JSON when they parse."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw))  # deep copy, JSON-typed
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrendflowConfig:
    """Config from a file (default: config/default.json) with `--set` overrides applied on top."""
    source_path = Path(path) if path else DEFAULT_CONFIG_PATH
    raw = read_config_file(source_path) if (path or source_path.exists()) else {}
    overrides = list(overrides)
    raw = apply_overrides(raw, overrides)
    source = str(source_path) + (f" (with overrides {', '.join(overrides)})" if overrides else "")
    return config_from_dict(raw, source)
