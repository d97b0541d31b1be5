"""`trendflow validate PATH...`: check saved artifacts against their schemas (and manifest hashes).

A PATH may be a file or an output folder (every file in it with a known artifact name is checked).
Exit code 0 when everything passes, 1 when any file fails (each failure is printed).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import BaseModel

from schemas.registry import schema_for
from stages.common.artifacts import read_artifact, read_json_artifact, verify_against_manifest
from stages.common.cli import parse_and_run
from stages.common.errors import ArtifactMissingError, SchemaError, TrendflowError


def validate_file(path: Path, verify_hash: bool = True) -> str:
    """Validate one artifact; return a one-line summary or raise a TrendflowError."""
    if not path.exists():
        raise ArtifactMissingError(f"{path} does not exist")
    schema = schema_for(path.name)
    if schema is None:
        raise SchemaError(f"{path}: not a known artifact name (see schemas/registry.py)")
    if hasattr(schema, "load"):  # a binary artifact with its own checking reader (signal_state.npz)
        from stages.signal.state import StateUnusable

        if verify_hash:
            verify_against_manifest(path)
        try:
            loaded = schema.load(path)
        except StateUnusable as exc:
            raise SchemaError(str(exc)) from None
        return f"ok  {path}  ({schema.__name__}, {len(loaded.symbols)} symbols as of {loaded.last_date.date()})"
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        read_json_artifact(path, schema, verify_hash=verify_hash)
        return f"ok  {path}  ({schema.__name__})"
    frame = read_artifact(path, schema, verify_hash=verify_hash)
    return f"ok  {path}  ({schema.__name__}, {len(frame)} rows)"


def expand(paths: list[str]) -> list[Path]:
    """Files as given; a folder becomes its files with known artifact names, sorted."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and schema_for(p.name) is not None)
            if not found:
                raise ArtifactMissingError(f"{path}: no artifact files in this folder")
            files.extend(found)
        else:
            files.append(path)
    return files


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "trendflow validate", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="artifact files or output folders")
    parser.add_argument("--no-hash", action="store_true", help="skip the sha256 check against manifest.json")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def body(args: argparse.Namespace) -> int:
        failures = 0
        for path in expand(args.paths):
            try:
                print(validate_file(path, verify_hash=not args.no_hash))
            except TrendflowError as exc:
                failures += 1
                print(f"FAIL {path}: {exc}")
        return 1 if failures else 0

    return parse_and_run(parser, body, argv)
