"""`trendflow validate PATH...`: check saved artifacts against their schemas (and manifest hashes).

A PATH may be a file or an output folder. A folder is compared with its manifest both ways: every
entry must be on disk with the recorded size and sha256, every artifact file on disk must be an
entry, and no leftover of an interrupted write may remain; each artifact is then checked against
its schema. Exit code 0 when everything passes, 1 when anything fails (each failure is printed).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import BaseModel

from schemas.registry import schema_for
from stages.common.artifacts import (
    MANIFEST_NAME,
    leftovers,
    read_artifact,
    read_json_artifact,
    read_manifest,
    sha256_file,
    stale_stages,
    verify_against_manifest,
)
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


def check_folder(folder: Path, verify_hash: bool = True) -> tuple[list[str], int]:
    """Every line to print for an output folder, and how many of them are failures.

    The manifest and the folder must describe the same set of files: an entry whose file is gone,
    has another size or another sha256, an artifact file the manifest does not list, or a temp
    file / staging folder left by a killed writer each fail (a folder with no manifest at all is
    checked against the schemas only)."""
    lines: list[str] = []
    failures = 0

    def fail(path: Path, why: str) -> None:
        nonlocal failures
        failures += 1
        lines.append(f"FAIL {path}: {why}")

    has_manifest = (folder / MANIFEST_NAME).exists()
    try:
        listed = read_manifest(folder)["artifacts"] if has_manifest else {}
    except TrendflowError as exc:
        fail(folder / MANIFEST_NAME, str(exc))
        listed, has_manifest = {}, False
    on_disk = {p.name for p in folder.iterdir() if p.is_file() and schema_for(p.name) is not None}
    if not listed and not on_disk:
        raise ArtifactMissingError(f"{folder}: no artifact files in this folder")
    for leftover in leftovers(folder):
        fail(leftover, "left by an interrupted write (the next trendflow command writing this folder removes it)")
    for name in sorted(set(listed) | on_disk):
        path = folder / name
        entry = listed.get(name)
        if entry is None:
            if has_manifest:
                fail(path, f"not listed in {MANIFEST_NAME} (not written by a trendflow stage, or left by an "
                           "interrupted or older run)")
                continue
        elif not path.is_file():
            fail(path, f"listed in {MANIFEST_NAME} (stage '{entry.get('stage')}') but missing")
            continue
        elif verify_hash and entry.get("bytes") is not None and path.stat().st_size != entry["bytes"]:
            fail(path, f"{path.stat().st_size} bytes, but {MANIFEST_NAME} records {entry['bytes']} "
                       f"(changed after stage '{entry.get('stage')}' wrote it)")
            continue
        try:
            if schema_for(name) is None:  # e.g. report.html: no schema, the manifest hash is the check
                if verify_hash:
                    verify_against_manifest(path, sha256_file(path))
                lines.append(f"ok  {path}  (sha256 as in {MANIFEST_NAME})")
            else:
                lines.append(validate_file(path, verify_hash=verify_hash))
        except TrendflowError as exc:
            fail(path, str(exc))
    for stage, why in stale_stages(listed).items():
        lines.append(f"note {folder}: stage '{stage}' is not current: {why}")
    return lines, failures


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "trendflow validate", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="artifact files or output folders")
    parser.add_argument("--no-hash", action="store_true", help="skip the sha256 check against manifest.json")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def body(args: argparse.Namespace) -> int:
        failures = 0
        files = []
        for name in args.paths:
            if Path(name).is_dir():
                lines, failed = check_folder(Path(name), verify_hash=not args.no_hash)
                print("\n".join(lines))
                failures += failed
            else:
                files.append(name)
        for path in map(Path, files):
            try:
                print(validate_file(path, verify_hash=not args.no_hash))
            except TrendflowError as exc:
                failures += 1
                print(f"FAIL {path}: {exc}")
        return 1 if failures else 0

    return parse_and_run(parser, body, argv)
