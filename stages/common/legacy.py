"""The older design's config.json (signal_pipeline / V4), converted to trendflow's config, in one place.

The older file has a `strategies: [{type: ...}]` list with per-strategy parameters,
`scoring.buffer_thresholds.{buy_top_n, hold_until_rank}`, `momentum_weights` keyed "20d"/"60d"/"120d",
and sections (env, modes, universe, io) trendflow has no use for. `convert` maps every key it knows,
and lists what it mapped and what it dropped (and why); `trendflow config import old.json > new.json`
prints the result, and `load_config` converts an old file in memory with one WARNING.

This module lives in stages/common (an installed package) rather than config/, which holds JSON only
and is not a Python package: the config loader beside it calls `convert`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from schemas.config import TrendflowConfig

# Parameters of one older strategy entry -> trendflow key (same meaning, same units).
STRATEGY_PARAMETERS: dict[str, str] = {
    "fast_period": "strategy.macd.fast",
    "slow_period": "strategy.macd.slow",
    "signal_period": "strategy.macd.signal",
    "kama_period": "strategy.kama.er_window",
    "kama_fast": "strategy.kama.fast",
    "kama_slow": "strategy.kama.slow",
    "slope_lookback": "strategy.kama.slope_window",
    "enable_adx_filter": "strategy.filters.adx_enabled",
    "adx_period": "strategy.filters.adx_window",
    "adx_threshold": "strategy.filters.adx_threshold",
    "enable_volume_filter": "strategy.filters.volume_enabled",
    "volume_period": "strategy.filters.volume_window",
    "volume_ratio": "strategy.filters.volume_multiplier",
    "enable_slope_filter": "strategy.filters.slope_enabled",
}
# The older combo's `mode` -> strategy.combo_mode ("split", capital split between strategies, has no counterpart).
COMBO_MODES = {"and": "both", "or": "either"}
# Older keys that moved.
MOVED: dict[str, str] = {
    "scoring.buffer_thresholds.buy_top_n": "scoring.buy_top_n",
    "scoring.buffer_thresholds.hold_until_rank": "scoring.hold_until_rank",
}
# Sections whose keys keep their names in trendflow; any other key in them is dropped.
SAME_NAME_SECTIONS = ("scoring", "clustering", "risk", "position_sizing", "execution")
# Why the older keys with no counterpart are dropped.
DROPPED_BECAUSE: dict[str, str] = {
    "env": "paths of the older installation (use --data/--out)",
    "modes": "run mode and date (use trendflow run / trendflow daily --as-of-date)",
    "universe": "symbol pool file (use data.symbols or --data)",
    "io": "file locations (use --data/--out)",
    "position_sizing.min_cash_reserve": "the cash left is 1 - position_sizing.max_total_exposure",
    "risk.enable_t1_restriction": "not a trendflow setting",
}
_OLD_MARKERS = ("strategies", "env", "modes", "universe", "io")


def is_legacy(raw: dict[str, Any]) -> bool:
    """True for a config in the older format (any of its distinctive keys present)."""
    scoring = raw.get("scoring") if isinstance(raw.get("scoring"), dict) else {}
    weights = scoring.get("momentum_weights") if isinstance(scoring.get("momentum_weights"), dict) else {}
    return (any(k in raw for k in _OLD_MARKERS) or "buffer_thresholds" in scoring
            or any(isinstance(k, str) and k.endswith("d") and k[:-1].isdigit() for k in weights))


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _known(path: str) -> bool:
    """Is `path` a key of trendflow's config model?"""
    model: Any = TrendflowConfig
    for part in path.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


class _Conversion:
    def __init__(self) -> None:
        self.new: dict[str, Any] = {}
        self.mapped: list[str] = []
        self.dropped: list[str] = []

    def map(self, old: str, new: str, value: Any) -> None:
        _set(self.new, new, value)
        self.mapped.append(f"{old} -> {new}" if old != new else old)

    def drop(self, old: str, why: str) -> None:
        self.dropped.append(f"{old} ({why})")


def convert(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(trendflow config dict, 'old -> new' lines, 'old (why)' lines). Keys already in trendflow's
    format pass through unchanged."""
    c = _Conversion()
    for section, value in raw.items():
        if section == "strategies":
            _strategies(value, c)
        elif section in SAME_NAME_SECTIONS and isinstance(value, dict):
            for key, item in value.items():
                _section_key(f"{section}.{key}", item, c)
        elif section in DROPPED_BECAUSE:
            c.drop(section, DROPPED_BECAUSE[section])
        elif _known(section):
            c.new[section] = value
            c.mapped.append(section)
        else:
            c.drop(section, "no such setting in trendflow")
    return c.new, c.mapped, c.dropped


def _section_key(path: str, value: Any, c: _Conversion) -> None:
    if path == "scoring.buffer_thresholds" and isinstance(value, dict):
        for key, item in value.items():
            old = f"{path}.{key}"
            if old in MOVED:
                c.map(old, MOVED[old], item)
            else:
                c.drop(old, "no such setting in trendflow")
    elif path == "scoring.momentum_weights" and isinstance(value, dict):
        weights = {}
        for window, weight in value.items():
            text = str(window)
            weights[text[:-1] if text.endswith("d") and text[:-1].isdigit() else text] = weight
        _set(c.new, path, weights)
        c.mapped.append(f"{path} (windows {', '.join(map(str, value))} -> {', '.join(weights)})")
    elif path in DROPPED_BECAUSE:
        c.drop(path, DROPPED_BECAUSE[path])
    elif _known(path):
        c.map(path, path, value)
    else:
        c.drop(path, "no such setting in trendflow")


def _strategies(entries: Any, c: _Conversion) -> None:
    """One entry -> its type and parameters; several -> combo of their parameters (both must agree)."""
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        c.drop("strategies", "expected a list of {type: ...} objects")
        return
    types = [str(e.get("type", "")) for e in entries]
    if len(entries) == 1:
        c.map("strategies[0].type", "strategy.name", types[0])
    else:
        c.map("strategies[*].type", "strategy.name", "combo")
        c.map("strategies (several)", "strategy.combo_mode", "both")
    for k, entry in enumerate(entries):
        for key, value in entry.items():
            old = f"strategies[{k}].{key}"
            if key == "type":
                continue
            if key in ("macd_config", "kama_config") and isinstance(value, dict):
                for sub, item in value.items():
                    _strategy_parameter(f"{old}.{sub}", sub, item, c)
            elif key == "mode" and types[k] == "combo":
                if value in COMBO_MODES:
                    c.map(old, "strategy.combo_mode", COMBO_MODES[value])
                else:
                    c.drop(old, f"combo mode {value!r} has no trendflow counterpart (both | either)")
            else:
                _strategy_parameter(old, key, value, c)


def _strategy_parameter(old: str, key: str, value: Any, c: _Conversion) -> None:
    if key in STRATEGY_PARAMETERS:
        c.map(old, STRATEGY_PARAMETERS[key], value)
    else:
        c.drop(old, "no such strategy parameter in trendflow")


# --------------------------------------------------------------------------- trendflow config import
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`trendflow config import OLD.json > NEW.json`: the converted config on stdout (checked against
    the config model), what was mapped and dropped on stderr."""
    from stages.common.cli import run_command, setup_logging
    from stages.common.config import config_from_dict, read_config_file

    parser = argparse.ArgumentParser(prog=prog or "trendflow config", description="Convert configs.")
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser("import", help="convert an older signal_pipeline config.json; prints the new one")
    imp.add_argument("path", metavar="OLD.json")
    args = parser.parse_args(argv)
    setup_logging("WARNING")

    def body(args: argparse.Namespace) -> int:
        new, mapped, dropped = convert(read_config_file(args.path))
        config_from_dict(new, f"{args.path} (converted)")
        for line in mapped:
            print(f"mapped  {line}", file=sys.stderr)
        for line in dropped:
            print(f"dropped {line}", file=sys.stderr)
        print(json.dumps(new, indent=2, ensure_ascii=False))
        return 0

    return run_command(body, args)
