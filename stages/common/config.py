"""Load the config model from JSON files and `--set key.path=value` overrides.

Every error names the file and the key path and says what was expected.
"""
from __future__ import annotations

import difflib
import json
import logging
import typing
from pathlib import Path
from types import UnionType
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from schemas.config import TrendflowConfig
from stages.common.errors import ConfigError
from stages.common.legacy import convert, is_legacy

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "default.json"


def _model_at(path: tuple) -> type[BaseModel] | None:
    """The config section (pydantic model) at a key path, or None when the path leaves the model."""
    model: Any = TrendflowConfig
    for part in path:
        field = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _describe_error(err: dict) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        section = _model_at(tuple(err["loc"][:-1]))
        known = sorted(section.model_fields) if section is not None else []
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else (f" (known keys: {', '.join(known)})" if known else "")
        return f"unknown key '{path}'{hint}"
    if kind == "missing":
        return f"missing key '{path}'"
    if kind == "value_error":  # a model validator: its message already says what is wrong
        return f"key '{path}': {err['msg'].removeprefix('Value error, ')}"
    got = err.get("input")
    got_text = f"{got!r} ({type(got).__name__})" if not isinstance(got, dict) else "an object"
    return f"key '{path}': {err['msg']}; got {got_text}"


def _json_kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> TrendflowConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object, got {_json_kind(raw)}")
    try:
        return TrendflowConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe_error(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a JSON file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        raw = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise ConfigError(f"config file {path}: {exc} (NaN and Infinity are not allowed)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: the top level must be a JSON object, got {_json_kind(raw)}")
    return raw


def _field_options(path: list[str]) -> list[Any]:
    """The types a config key accepts, e.g. [str, NoneType] or [list[str], NoneType]; empty when unknown."""
    section = _model_at(tuple(path[:-1]))
    field = section.model_fields.get(path[-1]) if section is not None else None
    if field is None:
        return []
    union = typing.get_origin(field.annotation) in (typing.Union, UnionType)
    return list(typing.get_args(field.annotation)) if union else [field.annotation]


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError:  # JSONDecodeError included
        return text


def parse_override(text: str) -> tuple[list[str], Any]:
    """`risk.atr_multiplier=2.5` -> (['risk', 'atr_multiplier'], 2.5).

    The value is read as JSON when it parses (numbers, true/false, null, lists, objects) and kept as
    text otherwise, or when the key is a string setting; a list setting also takes `a,b,c`.
    NaN and Infinity are not numbers here.
    """
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. risk.atr_multiplier=2.5)")
    path = [part.strip() for part in key.split(".")]
    parsed = _json_or_text(value)
    options = _field_options(path)
    lists = [option for option in options if typing.get_origin(option) is list]
    if str in options and not isinstance(parsed, str) and parsed is not None:
        parsed = value  # a text setting: --set reporting.benchmark=510300 stays "510300"
    elif lists and isinstance(parsed, (str, int, float)) and not isinstance(parsed, bool):
        items = [item.strip() for item in value.split(",") if item.strip()]  # a,b,c -> a list
        text_items = str in typing.get_args(lists[0])
        parsed = items if text_items else [_json_or_text(item) for item in items]
    return path, parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw))  # deep copy, JSON-typed
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"override {text!r}: '{where}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrendflowConfig:
    """Config from a file (default: config/default.json) with `--set` overrides applied on top."""
    source_path = Path(path) if path else DEFAULT_CONFIG_PATH
    raw = read_config_file(source_path) if (path or source_path.exists()) else {}
    if is_legacy(raw):
        raw, mapped, dropped = convert(raw)
        log.warning("%s is in the older signal_pipeline format: used as converted (%d keys mapped, %d dropped); "
                    "convert it once with `trendflow config import %s > new.json`", source_path, len(mapped),
                    len(dropped), source_path)
    overrides = list(overrides)
    raw = apply_overrides(raw, overrides)
    source = str(source_path) + (f" (with overrides {', '.join(overrides)})" if overrides else "")
    return config_from_dict(raw, source)
