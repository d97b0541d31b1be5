"""Grids of config values: parsing, validation, expansion, and combination ids."""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from schemas.config import TrendflowConfig
from stages.common.config import apply_overrides, config_from_dict, read_config_file
from stages.common.errors import ConfigError


def _values(key: str, spec: Any, source: str) -> list:
    """A list as given, or a range {"start", "stop", "step"} (stop inclusive, like a human writes it)."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{source}: key '{key}' has an empty list of values")
        return spec
    if isinstance(spec, dict) and {"start", "stop", "step"} <= set(spec) and len(spec) == 3:
        start, stop, step = spec["start"], spec["stop"], spec["step"]
        if not all(isinstance(v, (int, float)) for v in (start, stop, step)) or step <= 0 or stop < start:
            raise ConfigError(f"{source}: key '{key}': range needs numbers with step > 0 and stop >= start")
        count = int(np.floor((stop - start) / step + 1e-9)) + 1
        values = [start + i * step for i in range(count)]
        if all(isinstance(v, int) for v in (start, stop, step)):
            return [int(v) for v in values]
        return [round(float(v), 12) for v in values]
    raise ConfigError(f"{source}: key '{key}' must map to a list of values or {{\"start\", \"stop\", \"step\"}}")


def load_grid(path: str | Path, base: dict) -> dict[str, list]:
    """Read a grid file {"risk.atr_multiplier": [1.5, 2, 2.5], ...}; every key and value is checked
    against the config model (unknown key or bad value -> ConfigError naming it)."""
    raw = read_config_file(path)
    if not raw:
        raise ConfigError(f"{path}: the grid names no config keys")
    grid = {key: _values(key, spec, str(path)) for key, spec in raw.items()}
    for key, values in grid.items():
        for value in values:
            config_for(base, {key: value}, source=f"{path}: key '{key}' = {value!r}")
    return grid


def expand(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination, in a stable order (grid keys in file order, values in list order)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def config_for(base: dict, combo: dict[str, Any], source: str = "sweep") -> TrendflowConfig:
    overrides = [f"{key}={json.dumps(value)}" for key, value in combo.items()]
    return config_from_dict(apply_overrides(json.loads(json.dumps(base)), overrides), source)


def combo_id(combo: dict[str, Any]) -> str:
    """Short stable id of a combination (same values -> same id across runs, for resuming)."""
    return hashlib.sha256(json.dumps(combo, sort_keys=True).encode()).hexdigest()[:12]


def base_config_dict(config_path: str | None, overrides: list[str]) -> dict:
    from stages.common.config import load_config

    return load_config(config_path, overrides).model_dump(mode="json")
