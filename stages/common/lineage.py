"""Lineage: what each artifact was made from, and whether it still matches the config.

Each artifact depends on a fixed set of config keys -- its stage's (`SIGNAL_KEYS`, `TRADING_KEYS`,
`REPORTING_KEYS` in schemas/config.py) unless `ARTIFACT_KEYS` says otherwise -- and on the artifacts
its stage read. When a stage commits, the manifest entry of each output gets `lineage`:
the hash of those keys' values (`TrendflowConfig.parameters_hash`; the signal stage's equals
`signal_hash`), and the manifest's `lineage` table keeps the values behind each hash, leaf by leaf,
so a difference can be named. The sha256 of every input is already in the entry (`inputs`); the
lineage adds that of each file a config key names (`FILE_KEYS`, e.g. the breaker's index file).

An artifact is *stale* under a config when
- one of its keys has another value now, or a file a key names has changed, or
- an artifact of another stage it was made from has been rewritten since (its sha256 differs), or
  is itself stale.
A stage refuses a stale input made by another stage (`StaleArtifactError`: one line naming the
differing keys, exit 2); `trendflow run` reruns the stale upstream stages instead (`plan_stages`).
Files without a lineage record (raw prices, a folder written before lineage existed, a weights
file made elsewhere) are not judged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.config import REPORTING_KEYS, SIGNAL_KEYS, TRADING_KEYS, TrendflowConfig
from stages.common.errors import TrendflowError

STAGES = ("signal", "trading", "reporting")
STAGE_KEYS: dict[str, tuple[str, ...]] = {"signal": SIGNAL_KEYS, "trading": TRADING_KEYS, "reporting": REPORTING_KEYS}
# Artifacts whose keys are not their stage's: the prices depend on the data keys only; the quality
# report also on when a series counts as ended; the readable twin of the signals applies the trading
# rules to an empty book (stages/signal/target_weights.py), so the trading keys are its keys too.
ARTIFACT_KEYS: dict[str, tuple[str, ...]] = {
    "prices.parquet": ("data",),
    "data_quality.csv": ("data", "risk.data_ended_sessions"),
    "signals_output.csv": tuple(dict.fromkeys(SIGNAL_KEYS + TRADING_KEYS)),
}
# Config keys that name a file a stage reads: its sha256 is recorded too, so an edited file makes the
# artifacts made from it stale. (The price data itself is tracked through prices.parquet.)
FILE_KEYS = ("risk.market_data", "data.corporate_actions", "market.symbol_table")
# What each stage reads from its folder (the ones present are checked; optional ones may be absent).
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "signal": (),
    "trading": ("prices.parquet", "signals_output.parquet"),
    "reporting": ("equity_curve.parquet", "trade_log.csv", "positions.parquet", "signals_output.parquet"),
}


class StaleArtifactError(TrendflowError):
    """An input was made under other settings (or from other inputs) than the ones in force now."""


@dataclass(frozen=True)
class Staleness:
    """Why an artifact is stale ('<subject> <predicate>', e.g. 'signals_output.parquet' 'was made
    with strategy.macd.fast=12, now 5') and the most upstream stage that has to run again."""

    subject: str
    predicate: str
    rerun_from: str

    @property
    def reason(self) -> str:
        return f"{self.subject} {self.predicate}"

    def made_from(self, name: str) -> "Staleness":
        """The staleness this makes of artifact `name`, made from it."""
        return Staleness(name, f"was made from {self.subject}, which {self.predicate}", self.rerun_from)

    def hint(self, up_to: str) -> str:
        chain = ",".join(STAGES[STAGES.index(self.rerun_from): STAGES.index(up_to) + 1])
        return f"{self.reason}: rerun the {self.rerun_from} stage or use --stages {chain}"


def keys_for(name: str, stage: str) -> tuple[str, ...]:
    """The config keys artifact `name` written by `stage` depends on."""
    return ARTIFACT_KEYS.get(name, STAGE_KEYS.get(stage, ()))


def leaf_values(config: TrendflowConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """{'strategy.macd.fast': 12, ...}: the values at `keys`, flattened to their leaves."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key in sorted(value):
                walk(f"{prefix}.{key}", value[key])
        else:
            flat[prefix] = value

    for path, value in config.parameters(keys).items():
        walk(path, value)
    return flat


def annotate(manifest: dict[str, Any], names: list[str], stage: str, config: TrendflowConfig) -> None:
    """Record the lineage of `stage`'s outputs `names` in `manifest`: each entry gets
    `lineage: {keys_hash}`, and the manifest's `lineage` table holds, once per hash, the keys and their
    values (a year of daily files made under one config shares one record). Records no entry refers
    to any more are dropped."""
    table = manifest.setdefault("lineage", {})
    hashed: dict[str, dict[str, Any]] = {}
    for name in names:
        keys = keys_for(name, stage)
        digest = config.parameters_hash(keys)
        record: dict[str, Any] = {"keys_hash": digest}
        files = {key: hashed.setdefault(key, _file_record(value)) for key, value in _named_files(config, keys).items()}
        if files:
            record["files"] = files
        manifest["artifacts"][name]["lineage"] = record
        table[digest] = {"keys": list(keys), "config": leaf_values(config, keys)}
    used = {e["lineage"]["keys_hash"] for e in manifest["artifacts"].values() if isinstance(e.get("lineage"), dict)}
    for digest in [d for d in table if d not in used]:
        del table[digest]


def _named_files(config: TrendflowConfig, keys: tuple[str, ...]) -> dict[str, str]:
    """{key: path} for the FILE_KEYS among `keys` that name a file under `config`."""
    values = leaf_values(config, keys)
    return {key: values[key] for key in FILE_KEYS if isinstance(values.get(key), str)}


def _file_record(value: str) -> dict[str, Any]:
    from stages.common.artifacts import sha256_file

    path = Path(value).resolve()
    return {"path": str(path), "sha256": sha256_file(path) if path.is_file() else None}


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


def changed_keys(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'strategy.macd.fast=12, now 5' for every key whose value differs (a key only one side has shows
    as 'unset')."""
    missing = object()
    parts = []
    for key in sorted(set(recorded) | set(now)):
        before, after = recorded.get(key, missing), now.get(key, missing)
        if before != after:
            parts.append(f"{key}={'unset' if before is missing else _show(before)}, "
                         f"now {'unset' if after is missing else _show(after)}")
    return parts


def _manifest(folder: Path, cache: dict[Path, dict]) -> dict[str, Any]:
    from stages.common.artifacts import read_manifest

    folder = folder.resolve()
    if folder not in cache:
        cache[folder] = read_manifest(folder)
    return cache[folder]


def _entry(path: Path, cache: dict[Path, dict]) -> dict[str, Any] | None:
    """The manifest entry of `path` when it has a lineage record, else None."""
    entry = _manifest(path.parent, cache)["artifacts"].get(path.name)
    return entry if entry is not None and isinstance(entry.get("lineage"), dict) else None


def _input_path(folder: Path, key: str) -> Path:
    """An `inputs` key of a manifest entry: a file of the artifact's own folder, or a path as it was
    given (absolute, or relative to the working directory, e.g. `--in ../run`)."""
    path = Path(key)
    if path.is_absolute():
        return path
    inside = folder / path
    return inside if inside.exists() or not path.exists() else path


def staleness(path: str | Path, config: TrendflowConfig, *, _cache: dict | None = None) -> Staleness | None:
    """Why artifact `path` is stale under `config`, or None when it is fresh or has no lineage record."""
    path = Path(path)
    cache = {} if _cache is None else _cache
    entry = _entry(path, cache)
    if entry is None:
        return None
    stage = entry["stage"]
    keys = keys_for(path.name, stage)
    if entry["lineage"].get("keys_hash") != config.parameters_hash(keys):
        recorded = _manifest(path.parent, cache).get("lineage", {}).get(entry["lineage"].get("keys_hash"), {})
        changes = changed_keys(recorded.get("config", {}), leaf_values(config, keys))
        what = "; ".join(changes) if changes else f"other values of {', '.join(keys)}"
        return Staleness(path.name, f"was made with {what}", stage)
    for key, made_from in sorted(entry["lineage"].get("files", {}).items()):
        if _file_record(made_from["path"])["sha256"] != made_from["sha256"]:
            return Staleness(path.name, f"was made from {key} = {made_from['path']} as it was then (changed since)", stage)
    for key, sha in sorted(entry.get("inputs", {}).items()):
        source = _input_path(path.parent, key)
        source_entry = _manifest(source.parent, cache)["artifacts"].get(source.name)
        if source_entry is None or source_entry.get("stage") == stage:
            continue  # raw data, a file made elsewhere, or the stage's own earlier output (daily runs)
        if source_entry.get("sha256") != sha:  # e.g. the data stage's panel after a re-fetch
            return Staleness(path.name, f"was made from an earlier {source.name} (rewritten since)", stage)
        upstream = staleness(source, config, _cache=cache)
        if upstream is not None:
            return upstream.made_from(path.name)
    return None


@dataclass(frozen=True)
class Lineage:
    """A stage run's lineage hooks (see StageRun): refuse stale inputs made by other stages, and
    record what each output was made under. Manifests are read once per run (inputs do not change
    while a stage reads them)."""

    stage: str
    config: TrendflowConfig
    _manifests: dict = field(default_factory=dict, compare=False, repr=False)

    def check_input(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            return
        entry = _entry(path, self._manifests)
        if entry is None or entry["stage"] == self.stage:
            return  # not recorded, or this stage's own earlier output (a daily run carries it forward)
        found = staleness(path, self.config, _cache=self._manifests)
        if found is not None:
            raise StaleArtifactError(found.hint(self.stage))

    def annotate(self, manifest: dict[str, Any], names: list[str]) -> None:
        annotate(manifest, names, self.stage, self.config)


def plan_stages(requested: list[str], folder: str | Path, config: TrendflowConfig) -> tuple[list[str], list[str]]:
    """The stages to run so that the requested ones read fresh inputs: the requested stages plus every
    upstream stage whose outputs are stale (and the stages in between), in pipeline order; and one
    note per stage added, saying why."""
    folder = Path(folder)
    chosen = set(requested)
    notes: list[str] = []
    cache: dict[Path, dict] = {}
    for stage in STAGES:  # upstream first: its reasons name the file that changed directly
        if stage not in chosen:
            continue
        for name in STAGE_INPUTS[stage]:
            path = folder / name
            if not path.exists():
                continue
            found = staleness(path, config, _cache=cache)
            if found is None:
                continue
            first = STAGES.index(found.rerun_from)
            for added in STAGES[first: STAGES.index(stage)]:
                if added not in chosen:
                    chosen.add(added)
                    notes.append(f"{found.reason}: rerunning the {added} stage too")
    if chosen:  # a stage between two that run reads outputs the earlier one is about to replace
        span = STAGES[min(STAGES.index(s) for s in chosen): max(STAGES.index(s) for s in chosen) + 1]
        for added in span:
            if added not in chosen:
                chosen.add(added)
                notes.append(f"the {added} stage's outputs would be stale after the stages before it: running it too")
    return [s for s in STAGES if s in chosen], notes


def describe_folder(folder: str | Path, config: TrendflowConfig) -> list[str]:
    """`trendflow status --lineage`: one line per artifact of the folder's manifest -- stage, what it was
    made from, the keys hash it was made under, and fresh / STALE (why)."""
    from stages.common.artifacts import read_manifest

    folder = Path(folder)
    entries = read_manifest(folder)["artifacts"]
    if not entries:
        return [f"{folder}: no artifacts recorded in manifest.json"]
    cache: dict[Path, dict] = {}
    order = {stage: k for k, stage in enumerate(STAGES)}
    lines = [f"lineage of {folder} (under the current config):"]
    for name, entry in sorted(entries.items(), key=lambda kv: (order.get(kv[1].get("stage"), 9), kv[0])):
        inputs = sorted(Path(k).name for k in entry.get("inputs", {}))
        record = entry.get("lineage")
        if not isinstance(record, dict):
            state, keys = "unknown (written before lineage was recorded)", "-"
        else:
            found = staleness(folder / name, config, _cache=cache)
            state = "fresh" if found is None else f"STALE: {found.reason}"
            keys = str(record.get("keys_hash"))[:12]
        made_from = ", ".join(inputs) if inputs else "the price data"
        lines.append(f"  {name:<28} {entry.get('stage', '?'):<9} keys {keys:<12}  from {made_from}  -> {state}")
    return lines
