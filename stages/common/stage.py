"""What every stage returns, and where a stage finds its inputs by default."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.config import TrendflowConfig
from stages.common.config import PROJECT_ROOT

DEMO_FOLDER_NAME = "demo_data"


@dataclass
class StageResult:
    """A stage's outcome: files written (name -> path), row counts, wall time, and a short summary."""

    stage: str
    outputs: dict[str, Path]
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)

    def log_line(self) -> str:
        rows = ", ".join(f"{name}={n}" for name, n in sorted(self.rows.items()))
        return f"{self.stage} stage finished in {self.seconds:.2f}s ({rows})"


def resolve_out_dir(out: str | Path | None, config: TrendflowConfig) -> Path:
    """--out, else config output.folder (relative paths are relative to the working directory)."""
    return Path(out if out is not None else config.output.folder)


def resolve_data_source(data: str | Path | None, config: TrendflowConfig, out_dir: Path) -> Path:
    """--data, else config data.source, else the demo universe generated into <out>/demo_data."""
    if data is not None or config.data.source is not None:
        return check_data_apart(data, config, out_dir)
    from stages.common.demo import ensure_demo_universe

    return ensure_demo_universe(out_dir / DEMO_FOLDER_NAME)


def check_data_apart(data: str | Path | None, config: TrendflowConfig, out_dir: Path) -> Path | None:
    """The price source (--data, else config data.source) after checking it does not overlap the
    output folder; None for the demo universe."""
    if data is None and config.data.source is None:
        return None
    source = Path(data if data is not None else config.data.source)
    _check_apart(source, out_dir, "--data" if data is not None else "config data.source")
    return source


def _check_apart(source: Path, out_dir: Path, what: str) -> None:
    """The price data and the output folder must not overlap: artifacts written among the price
    files would be read back as symbols by the next run, and a data folder inside --out is at the
    mercy of retired artifacts."""
    from stages.common.errors import ConfigError

    data, out = source.resolve(), Path(out_dir).resolve()
    if data == out or data.is_relative_to(out) or out.is_relative_to(data):
        relation = "is" if data == out else ("is inside" if data.is_relative_to(out) else "contains")
        raise ConfigError(f"{what} {source} {relation} the output folder {out_dir}: keep prices and artifacts in "
                          "separate folders (e.g. --data prices/ --out out/)")


__all__ = ["StageResult", "resolve_out_dir", "resolve_data_source", "PROJECT_ROOT", "DEMO_FOLDER_NAME"]
